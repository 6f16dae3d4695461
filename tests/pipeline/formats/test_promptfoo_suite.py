"""A suite `promptfoo: path` end to end: read in place at base and head, evaluated, reported."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from tests.conftest import STUB_PRICES, GitRepo
from tests.pipeline.formats.test_promptfoo_parity import FIXTURE, answer
from tests.stub_llm import StubLLM

CONFIG = "evals/promptfooconfig.yaml"


def project(repo: GitRepo, **policy: Any) -> None:
    """The fixture project under evals/, a suite pointing at its config, committed as `base`."""
    shutil.copytree(FIXTURE, repo.root / "evals")
    config = {"thresholds": {"min_cases": 1, "latency_p95_increase_pct": 1000}, "prices": STUB_PRICES}
    config.update(policy)
    repo.write(".evalbot.yml", {**config, "suites": [{"name": "support-bot", "promptfoo": CONFIG}]})
    repo.commit("base", tag="base")


def edit(repo: GitRepo, path: str, old: str, new: str) -> None:
    file = repo.root / path
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new))


def evaluate(repo: GitRepo, stub: StubLLM, *extra: str) -> tuple[int, dict[str, Any]]:
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "head", "--format", "json"]
    result = CliRunner().invoke(cli, [*args, "--api-base", stub.base_url, "--no-cache", *extra])
    return result.exit_code, json.loads(result.output)


@pytest.mark.parametrize(
    ("path", "old", "new"),
    [
        ("evals/prompts/answer.txt", "Answer briefly.", "Answer briefly and politely."),
        ("evals/tests/cases.csv", "contains:tracking", "icontains:ships"),
        ("evals/context/policy.txt", "30 days", "14 days"),
    ],
)
def test_editing_a_file_the_config_names_makes_the_suite_affected(
    repo: GitRepo, stub: StubLLM, path: str, old: str, new: str
) -> None:
    stub.handler = answer
    project(repo)
    edit(repo, path, old, new)
    repo.commit("head", tag="head")

    code, report = evaluate(repo, stub)

    assert [s["reasons"] for s in report["suites"]] == [[f"{path} changed"]], report
    assert code == 0
    (suite,) = report["suites"]
    # Each prompt × test is a case: 2 prompts × 7 tests, paired base and head.
    assert len(suite["head"]["results"]) == 14 and suite["paired_cases"] == 14
    assert sorted({r["category"] for r in suite["head"]["results"]}) == ["answer", "chat"]
    assert (
        f"{CONFIG}:38: javascript assertion not run (runs code or calls a URL the pull request controls); 1 test"
        in report["warnings"]
    )


def test_an_unrelated_change_evaluates_nothing(repo: GitRepo, stub: StubLLM) -> None:
    project(repo)
    repo.write("README.md", "docs\n")
    repo.commit("head", tag="head")
    code, report = evaluate(repo, stub)
    assert report["suites"] == [] and code == 0
    assert stub.requests == []


def test_a_new_prompt_is_evaluated_on_head_alone_and_others_pair_by_label(repo: GitRepo, stub: StubLLM) -> None:
    stub.handler = answer
    project(repo)
    (repo.root / "evals/prompts/short.txt").write_text("Reply in five words: {{question}}\n")
    edit(repo, CONFIG, "    label: chat\n", "    label: chat\n  - id: file://prompts/short.txt\n    label: short\n")
    repo.commit("head", tag="head")

    code, report = evaluate(repo, stub)

    (suite,) = report["suites"]
    assert len(suite["head"]["results"]) == 21 and len(suite["base"]["results"]) == 14
    assert suite["paired_cases"] == 14
    assert code == 0, report


def test_other_providers_are_compared_side_by_side_under_the_bases_policy(repo: GitRepo, stub: StubLLM) -> None:
    stub.handler = answer
    prices = {**STUB_PRICES, "openai/stub-mini": STUB_PRICES["openai/stub"]}
    project(repo, allowed_models=["openai/stub", "openai/stub-mini"], prices=prices)
    edit(repo, CONFIG, "      max_tokens: 64\n", "      max_tokens: 64\n  - openai:chat:stub-mini\n")
    repo.commit("head", tag="head")
    code, report = evaluate(repo, stub)
    (suite,) = report["suites"]
    assert [c["model"] for c in suite["models"]["columns"]] == ["openai/stub", "openai/stub-mini"]

    edit(repo, CONFIG, "openai:chat:stub-mini", "openai:chat:gpt-4o")
    repo.git("tag", "-d", "head")
    repo.commit("head 2", tag="head")
    code, report = evaluate(repo, stub)
    assert code == 2
    assert report["errors"] == [
        f"{CONFIG}: model 'openai/gpt-4o' is not allowed: it matches no pattern of `allowed_models` in the base "
        "branch's .evalbot.yml"
    ]


def test_a_file_outside_the_repository_is_an_input_error_naming_the_line(repo: GitRepo, stub: StubLLM) -> None:
    project(repo)
    edit(repo, CONFIG, "file://prompts/chat.json", "file:///home/ana/prompts/chat.json")
    repo.commit("head", tag="head")
    code, report = evaluate(repo, stub)
    assert code == 2
    assert report["errors"] == [
        f"{CONFIG}:7: file:// '/home/ana/prompts/chat.json' is an absolute path: write it relative to {CONFIG}"
    ]
    assert stub.requests == []


def test_a_similar_assertion_calls_an_embedding_model_the_bases_policy_must_allow(repo: GitRepo, stub: StubLLM) -> None:
    shutil.copytree(FIXTURE, repo.root / "evals")
    similar = "      - type: similar\n        value: Hello there\n      - type: starts-with\n"
    edit(repo, CONFIG, "      - type: starts-with\n", similar)
    suites = [{"name": "support-bot", "promptfoo": CONFIG}]
    repo.write(".evalbot.yml", {"prices": STUB_PRICES, "allowed_models": ["openai/stub"], "suites": suites})
    repo.commit("base", tag="base")
    repo.commit("head", tag="head")
    code, report = evaluate(repo, stub, "--all")
    assert code == 2
    assert report["errors"] == [
        ".evalbot.yml: model 'openai/text-embedding-3-small' is not allowed: it matches no pattern of "
        "`allowed_models` in the base branch's .evalbot.yml"
    ]
    assert stub.requests == []
