"""Reads stay in the repository: suite paths are plain relative paths to files, read under the base's limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from arq import ArqRedis
from click.testing import CliRunner

from bot.cli import cli
from bot.github.constants import EVALS_CHECK
from bot.github.flows.evaluate import evaluate_pull_request
from bot.settings import Settings
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.github.conftest import answers
from tests.github.fake_github import FakeGitHub
from tests.stub_llm import StubLLM

REPO = "Codertocat/Hello-World"
SENTINEL = "OTHER_REPO_SECRET=sk-live-do-not-post"
CONFIG = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}])
ROWS = [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"} for i in range(10)]


def config_line(repo: GitRepo, key: str) -> int:
    """The line of `key:` in the working tree's `.evalbot.yml`."""
    lines = (repo.root / ".evalbot.yml").read_text().splitlines()
    return next(number for number, line in enumerate(lines, start=1) if line.strip().startswith(f"{key}:"))


def pr_repo(repo: GitRepo, **suite: Any) -> tuple[str, str]:
    """Suite qa on main; the head changes its dataset and sets `suite` keys in `.evalbot.yml`."""
    repo.write(".evalbot.yml", CONFIG)
    repo.write("evals/qa.jsonl", ROWS)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    # The fake GitHub serves every repository from this one: here stands OTHER/REPO's secret file.
    repo.write(".env", SENTINEL + "\n")
    base = repo.commit("base")
    repo.git("checkout", "-q", "-b", "feature")
    config = json.loads(json.dumps(CONFIG))
    config["suites"][0].update(suite)
    repo.write(".evalbot.yml", config)
    repo.write("evals/qa.jsonl", [*ROWS, {"id": "c10", "question": "q10", "expected": "a10"}])
    return base, repo.commit("head")


async def evaluate_pr(fake_github: FakeGitHub, settings: Settings, redis: ArqRedis, base: str, head: str) -> Any:
    fake_github.pulls[2] = (base, head)
    # The job compares with the base branch (main) as it is now: `base` is its tip.
    args = {"repo": REPO, "installation_id": 1, "pr_number": 2, "head_sha": head}
    await evaluate_pull_request({"settings": settings, "redis": redis}, **args)
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    return evals


async def test_a_schema_path_into_another_repository_is_refused_before_any_request(
    repo: GitRepo, fake_github: FakeGitHub, settings: Settings, redis: ArqRedis, stub: StubLLM
) -> None:
    stub.handler = answers(9)
    base, head = pr_repo(repo, schema="../../../../repos/OTHER/REPO/contents/.env")

    evals = await evaluate_pr(fake_github, settings, redis, base, head)

    assert evals["conclusion"] == "failure"
    line = config_line(repo, "schema")
    assert (
        f".evalbot.yml:{line}: suites.0.schema: Value error, must be a path inside the repository, like "
        "evals/cases.jsonl: the path has a '.' or '..' segment" in evals["output"]["summary"]
    )
    elsewhere = [p for _m, p in fake_github.requests if p.startswith("/repos/") and not p.startswith(f"/repos/{REPO}/")]
    assert elsewhere == []
    assert SENTINEL not in json.dumps(fake_github.bodies)
    assert stub.requests == []


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("directory", "evals/qa.jsonl: is a directory, not a file: name the file itself"),
        ("symlink", "evals/qa.jsonl: is a symbolic link, not a file: name the file itself"),
        ("submodule", "evals/qa.jsonl: is a submodule, not a file: name the file itself"),
    ],
)
async def test_a_dataset_that_is_not_a_file_is_an_input_error_on_github(
    kind: str, message: str, repo: GitRepo, fake_github: FakeGitHub, settings: Settings, redis: ArqRedis, stub: StubLLM
) -> None:
    stub.handler = answers(9)
    base, _head = pr_repo(repo)
    (repo.root / "evals/qa.jsonl").unlink()
    repo.write("evals/real.jsonl", ROWS)
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2"))  # the suite is evaluated
    if kind == "directory":
        repo.write("evals/qa.jsonl/rows.jsonl", ROWS)
    elif kind == "symlink":
        # GitHub answers a link to a file with the file: it must not pass for the dataset itself.
        (repo.root / "evals/qa.jsonl").symlink_to("real.jsonl")
    repo.git("add", "-A")
    if kind == "submodule":
        repo.git("update-index", "--add", "--cacheinfo", f"160000,{base},evals/qa.jsonl")
    repo.git("commit", "-q", "-m", kind)
    head = repo.git("rev-parse", "HEAD").strip()

    evals = await evaluate_pr(fake_github, settings, redis, base, head)

    assert evals["conclusion"] == "failure"
    assert message in evals["output"]["summary"]
    assert stub.requests == []


def cli_eval(repo: GitRepo, *extra: str) -> Any:
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "head", "--api-base", "http://127.0.0.1:1/v1"]
    return CliRunner().invoke(cli, [*args, *extra])


def test_validate_does_not_follow_a_dataset_out_of_the_checkout(repo: GitRepo, tmp_path: Path) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_text(json.dumps({"id": "x", "question": SENTINEL}) + "\n")
    config = json.loads(json.dumps(CONFIG))
    config["suites"][0]["dataset"] = "../outside.jsonl"
    repo.write(".evalbot.yml", config)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))

    result = CliRunner().invoke(cli, ["validate", "--repo", str(repo.root)])
    assert result.exit_code == 2
    line = config_line(repo, "dataset")
    assert f".evalbot.yml:{line}: suites.0.dataset: Value error, must be a path inside the repository" in result.output
    assert SENTINEL not in result.output

    # A link inside the checkout that leads out of it is no way round.
    (repo.root / "evals").mkdir()
    (repo.root / "evals/qa.jsonl").symlink_to(outside)
    repo.write(".evalbot.yml", CONFIG)
    result = CliRunner().invoke(cli, ["validate", "--repo", str(repo.root)])
    assert result.exit_code == 2
    assert "error: evals/qa.jsonl: is a symbolic link, not a file: name the file itself" in result.output
    assert SENTINEL not in result.output


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/etc/passwd", "the path starts with / (write it relative to the repository root)"),
        ("evals//qa.jsonl", "the path has an empty segment ('//' or a trailing '/')"),
        ("evals/", "the path has an empty segment ('//' or a trailing '/')"),
        ("evals\\qa.jsonl", "the path has a backslash (use / between directories)"),
        ("https://example.com/qa.jsonl", "the path has ':' (no URL syntax: ':', '?', '#', '%')"),
        ("evals/qa.jsonl?ref=main", "the path has '?' (no URL syntax: ':', '?', '#', '%')"),
        ("evals/qa.jsonl#x", "the path has '#' (no URL syntax: ':', '?', '#', '%')"),
        ("%2e%2e/qa.jsonl", "the path has '%' (no URL syntax: ':', '?', '#', '%')"),
        ("evals/qa\x01.jsonl", "the path has a control character"),
        ("./evals/qa.jsonl", "the path has a '.' or '..' segment (it must name a file inside the repository)"),
    ],
)
def test_every_suite_path_must_be_a_plain_relative_path(repo: GitRepo, path: str, problem: str) -> None:
    config = json.loads(json.dumps(CONFIG))
    config["suites"][0]["training_data"] = path
    repo.write(".evalbot.yml", config)
    repo.commit("base", tag="base")
    repo.commit("head", tag="head")

    result = cli_eval(repo, "--all")
    assert result.exit_code == 2
    line = config_line(repo, "training_data")
    expected = f".evalbot.yml:{line}: suites.0.training_data: Value error, must be a path inside the repository"
    assert f"{expected}, like evals/cases.jsonl: {problem}" in result.output


def test_a_git_lfs_pointer_is_reported_not_parsed(repo: GitRepo) -> None:
    repo.write(".evalbot.yml", CONFIG)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write("evals/qa.jsonl", ROWS)
    repo.commit("base", tag="base")
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "4d" * 32 + "\nsize 1048576\n"
    repo.write("evals/qa.jsonl", pointer)
    repo.commit("head", tag="head")
    # The pointer names an object this clone does not have (and it has no remote to fetch it from), or
    # git-lfs is missing: either way an input error, never the pointer parsed as rows.
    lfs = "evals/qa.jsonl: stored in Git LFS, and "

    result = cli_eval(repo)
    assert result.exit_code == 2
    assert lfs in result.output
    validate = CliRunner().invoke(cli, ["validate", "--repo", str(repo.root)])
    assert validate.exit_code == 2
    assert f"error: {lfs}" in validate.output


@pytest.mark.parametrize("max_file_mb", [1, 2])
async def test_github_sizes_a_file_before_downloading_it(
    max_file_mb: int, repo: GitRepo, fake_github: FakeGitHub, settings: Settings, redis: ArqRedis, stub: StubLLM
) -> None:
    stub.handler = answers(9)
    padding = "x" * 12_000
    # Distinct questions: rows sending the same request would count as one case.
    padded = ({"id": f"p{i}", "question": f"q{10 + i}", "expected": f"a{10 + i}", "note": padding} for i in range(90))
    big_rows = [*ROWS, *padded]
    # Latency of a stub in this process is noise: this test gates on what was read.
    limits = {"limits": {"max_file_mb": max_file_mb}, "thresholds": {"latency_p95_increase_pct": 1000}}
    repo.write(".evalbot.yml", {**limits, **CONFIG})
    repo.write("evals/qa.jsonl", ROWS)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    base = repo.commit("base")
    repo.git("checkout", "-q", "-b", "feature")  # the job compares with main's tip
    repo.write("evals/qa.jsonl", big_rows)
    head = repo.commit("head")
    size = (repo.root / "evals/qa.jsonl").stat().st_size
    assert 1_000_000 < size < 2_000_000  # over the contents API's 1 MB of inline content

    evals = await evaluate_pr(fake_github, settings, redis, base, head)

    reads = fake_github.requests.count(("GET", f"/repos/{REPO}/contents/evals/qa.jsonl"))
    if max_file_mb == 1:
        assert evals["conclusion"] == "failure"
        expected = f"evals/qa.jsonl: file is {size / 1e6:.3g} MB ({size:,} bytes), over the limit of 1 MB"
        assert expected in evals["output"]["summary"]
        assert reads == 1  # the metadata only: the content was never downloaded
        assert stub.requests == []
    else:
        # Under the cap, the content comes from the raw media type; head and base datasets both read.
        assert evals["conclusion"] == "success"
        assert reads == 3
        assert "evals/qa.jsonl changed. 100 cases." in evals["output"]["summary"]
        assert "100 rows, 10 on base: 90 added, 0 removed, 0 changed." in evals["output"]["summary"]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("directory", "evals/qa.jsonl: is a directory, not a file: name the file itself"),
        ("symlink", "evals/qa.jsonl: is a symbolic link, not a file: name the file itself"),
    ],
)
def test_a_dataset_that_is_not_a_file_is_an_input_error_in_a_git_repository(
    kind: str, message: str, repo: GitRepo
) -> None:
    repo.write(".evalbot.yml", CONFIG)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write("evals/qa.jsonl", ROWS)
    repo.commit("base", tag="base")
    (repo.root / "evals/qa.jsonl").unlink()
    if kind == "directory":
        repo.write("evals/qa.jsonl/rows.jsonl", ROWS)
    else:
        (repo.root / "evals/qa.jsonl").symlink_to("/etc/hostname")
    repo.commit("head", tag="head")

    result = cli_eval(repo, "--all")
    assert result.exit_code == 2
    assert message in result.output
