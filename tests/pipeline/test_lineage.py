"""Data lineage: each row's commit and pull request from git history, and the `source_field` gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.github.api.publish import report_annotations, report_title
from bot.pipeline.lineage import dataset_lineage, pull_request_of
from bot.pipeline.render import render_markdown
from bot.pipeline.run import RunOptions, evaluate
from bot.pipeline.source import GitSource
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import Reply, StubLLM

ROWS = [
    {"id": "c1", "question": "q1", "expected": "ok", "source": "ticket-1"},
    {"id": "c2", "question": "q2", "expected": "ok", "source": "ticket-2"},
]


def config(required: bool) -> dict[str, object]:
    graders = [{"type": "equals", "field": "expected"}]
    found = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", graders, thresholds={"min_cases": 1})
    found["suites"][0]["lineage"] = {"source_field": "source", "required": required}  # type: ignore[index]
    return found


def history(repo: GitRepo) -> dict[str, str]:
    """main: the first rows; a squash-merged pull request adds c3; a merged branch changes c1."""
    repo.write(".evalbot.yml", config(required=True))
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write("evals/qa.jsonl", ROWS)
    first = repo.commit("Add the qa suite")
    repo.write("evals/qa.jsonl", [*ROWS, {"id": "c3", "question": "q3", "expected": "ok"}])
    squash = repo.commit("Add cases (#42)")
    repo.git("checkout", "-q", "-b", "fix-c1")
    rows = [{**ROWS[0], "question": "q1 reworded"}, ROWS[1], {"id": "c3", "question": "q3", "expected": "ok"}]
    repo.write("evals/qa.jsonl", rows)
    branch = repo.commit("Reword c1")
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-m", "Merge pull request #7 from acme/fix-c1", "fix-c1")
    return {"first": first, "squash": squash, "branch": branch}


@pytest.mark.parametrize(
    ("subject", "number"),
    [("Add cases (#42)", 42), ("Merge pull request #7 from acme/fix", 7), ("Fix #12 in the docs", None), ("wip", None)],
)
def test_pull_request_from_a_commit_subject(subject: str, number: int | None) -> None:
    assert pull_request_of(subject) == number


async def test_each_row_names_the_commit_and_pull_request_that_last_changed_it(repo: GitRepo) -> None:
    commits = history(repo)
    origins, check = await dataset_lineage(repo.root, "HEAD", "evals/qa.jsonl")

    by_id = {o.id: o for o in origins}
    assert (by_id["c3"].commit, by_id["c3"].pull_request, by_id["c3"].line) == (commits["squash"], 42, 3)
    # Changed on a branch merged by a merge commit: blame names the branch's commit, the merge names the PR.
    assert (by_id["c1"].commit, by_id["c1"].pull_request, by_id["c1"].source) == (commits["branch"], 7, "ticket-1")
    # Committed straight to main: no pull request.
    assert (by_id["c2"].commit, by_id["c2"].pull_request) == (commits["first"], None)
    assert by_id["c2"].author_date is not None and by_id["c2"].author_date.endswith("+00:00")
    assert check.missing == [("c3", 3)] and check.failed


def test_the_cli_prints_every_row_and_fails_on_a_missing_required_source(repo: GitRepo) -> None:
    commits = history(repo)
    result = CliRunner().invoke(cli, ["lineage", "evals/qa.jsonl", "--repo", str(repo.root), "--format", "json"])

    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert [(r["id"], r["line"], r["pull_request"], r["source"]) for r in rows] == [
        ("c1", 1, 7, "ticket-1"),
        ("c2", 2, None, "ticket-2"),
        ("c3", 3, 42, None),
    ]
    assert "fail: 1 rows have no `source`: c3" in result.stderr

    csv_out = CliRunner().invoke(
        cli, ["lineage", "evals/qa.jsonl", "--repo", str(repo.root), "--rev", commits["squash"]]
    )
    lines = csv_out.stdout.splitlines()
    assert lines[0] == "id,line,commit,author_date,pull_request,source"
    assert lines[3].startswith(f"c3,3,{commits['squash']},") and lines[3].endswith(",42,")


def test_the_cli_refuses_a_dataset_that_is_not_there(repo: GitRepo) -> None:
    history(repo)
    result = CliRunner().invoke(cli, ["lineage", "evals/nope.jsonl", "--repo", str(repo.root)])
    assert result.exit_code == 2 and "evals/nope.jsonl" in result.stderr


async def test_rows_without_a_required_source_fail_the_gate_with_their_ids(repo: GitRepo, stub: StubLLM) -> None:
    repo.write(".evalbot.yml", config(required=True))
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write("evals/qa.jsonl", ROWS)
    repo.commit("base", tag="base")
    repo.write("evals/qa.jsonl", [*ROWS, {"id": "c3", "question": "q3", "expected": "ok", "source": " "}])
    repo.commit("head", tag="head")
    stub.handler = lambda body: Reply("ok")
    report = await evaluate(GitSource(repo.root), "base", "head", RunOptions(api_base=stub.base_url))

    (check,) = report.lineage
    assert check.failed and check.missing == [("c3", 3)]
    assert [s.verdict for s in report.suites] == ["pass"] and report.verdict == "fail"
    assert report_title(report).endswith("; 1 row(s) without a source")
    (note,) = [n for n in report_annotations(report) if "no source" in n["title"]]
    assert (note["path"], note["start_line"], note["annotation_level"]) == ("evals/qa.jsonl", 3, "failure")
    assert "1 of 3 rows have no `source` (required by the base's `lineage:`): `c3` (line 3)" in render_markdown(report)


async def test_a_pull_request_cannot_lift_the_bases_requirement(repo: GitRepo, stub: StubLLM) -> None:
    repo.write(".evalbot.yml", config(required=True))
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write("evals/qa.jsonl", ROWS)
    repo.commit("base", tag="base")
    repo.write(".evalbot.yml", config(required=False))
    repo.write("evals/qa.jsonl", [*ROWS, {"id": "c3", "question": "q3", "expected": "ok"}])
    repo.commit("head", tag="head")
    stub.handler = lambda body: Reply("ok")
    report = await evaluate(GitSource(repo.root), "base", "head", RunOptions(api_base=stub.base_url))

    assert [c.failed for c in report.lineage] == [True] and report.verdict == "fail"
    (change,) = report.definition_changes
    assert "lineage: {'source_field': 'source', 'required': True} → {'source_field': 'source', 'required': False}" in (
        change.changes
    )


async def test_optional_sources_are_listed_not_failed(repo: GitRepo, stub: StubLLM, tmp_path: Path) -> None:
    repo.write(".evalbot.yml", config(required=False))
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.write("evals/qa.jsonl", [*ROWS, {"id": "c3", "question": "q3", "expected": "ok"}])
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2"))
    repo.commit("head", tag="head")
    stub.handler = lambda body: Reply("ok")
    report = await evaluate(GitSource(repo.root), "base", "head", RunOptions(api_base=stub.base_url))

    (check,) = report.lineage
    assert check.missing == [("c3", 3)] and not check.failed and report.verdict == "pass"
