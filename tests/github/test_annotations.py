"""Problems on the line where they are: check-run annotations, 50 per request, capped, sorted by file and line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from arq import ArqRedis

from bot.github.api import publish
from bot.github.constants import EVALS_CHECK
from bot.settings import Settings
from tests.conftest import GitRepo, prompt_file
from tests.github.conftest import answers, build_pr_repo, webhook_client
from tests.github.fake_github import FakeGitHub
from tests.github.test_e2e import PRICES, deliver, pr_event
from tests.pipeline.test_problems import good_rows, write_base, write_broken_head
from tests.stub_llm import StubLLM


@pytest.fixture
async def webhook(redis: ArqRedis, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with webhook_client(settings, redis) as http:
        yield http


async def open_pr(
    repo: GitRepo, fake_github: FakeGitHub, webhook: httpx.AsyncClient, run_worker: Any, base: str, head: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Open pull request 2 from `base` to `head`, run the worker; the evals check run and its annotations."""
    fake_github.pulls[2] = (base, head)
    response = await deliver(webhook, "pull_request", pr_event("opened", base, head), "d-annotations")
    assert response.status_code == 202
    assert await run_worker() == 1
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    return evals, fake_github.annotations.get(evals["id"], [])


def where(notes: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    return [(n["path"], n["start_line"], n["annotation_level"]) for n in notes]


@pytest.mark.slow
async def test_every_problem_of_a_broken_head_is_annotated_on_its_line(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, webhook: httpx.AsyncClient, run_worker: Any
) -> None:
    write_base(repo)
    base = repo.commit("base")
    repo.git("checkout", "-q", "-b", "feature")
    write_broken_head(repo)
    head = repo.commit("head")

    evals, notes = await open_pr(repo, fake_github, webhook, run_worker, base, head)

    assert (evals["status"], evals["conclusion"]) == ("completed", "failure")
    assert where(notes) == [
        ("evals/other.jsonl", 2, "failure"),
        ("evals/qa.jsonl", 7, "failure"),
        ("evals/qa.jsonl", 12, "failure"),
        ("prompts/qa.yaml", 3, "failure"),
    ]
    assert [n["message"] for n in notes] == [
        "question: minLength: 'hm' is too short",
        "not valid JSON (Expecting value at column 26)",
        "not valid JSON (Expecting value at column 1)",
        "YAML syntax error: mapping values are not allowed here",
    ]
    assert all(n["end_line"] == n["start_line"] and n["title"] for n in notes)
    # In the report, each file and line links to that line at the head SHA, on the web (not the API).
    blob = f"https://github.com/Codertocat/Hello-World/blob/{head}"
    listed = [line for line in evals["output"]["summary"].splitlines() if line.startswith("- [")]
    assert listed == [
        f"- [`evals/qa.jsonl:7`]({blob}/evals/qa.jsonl#L7) (row 7): not valid JSON (Expecting value at column 26)",
        f"- [`evals/qa.jsonl:12`]({blob}/evals/qa.jsonl#L12) (row 12): not valid JSON (Expecting value at column 1)",
        f"- [`prompts/qa.yaml:3`]({blob}/prompts/qa.yaml#L3): YAML syntax error: mapping values are not allowed here",
    ]
    assert stub.requests == []


def bad_rows_head(repo: GitRepo, bad: int) -> tuple[str, str]:
    write_base(repo)
    base = repo.commit("base")
    repo.git("checkout", "-q", "-b", "feature")
    repo.write("evals/qa.jsonl", "\n".join(good_rows(2) + ["not json"] * bad) + "\n")
    return base, repo.commit("head")


async def test_annotations_go_fifty_per_request(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, webhook: httpx.AsyncClient, run_worker: Any
) -> None:
    base, head = bad_rows_head(repo, 120)
    evals, notes = await open_pr(repo, fake_github, webhook, run_worker, base, head)
    assert fake_github.annotation_requests == [50, 50, 20]
    assert [n["start_line"] for n in notes] == list(range(3, 123))
    assert evals["conclusion"] == "failure"
    assert "not annotated" not in evals["output"]["summary"]


async def test_annotations_past_the_cap_are_counted_in_the_summary(
    repo: GitRepo,
    fake_github: FakeGitHub,
    stub: StubLLM,
    webhook: httpx.AsyncClient,
    run_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(publish, "MAX_ANNOTATIONS", 100)
    base, head = bad_rows_head(repo, 120)
    evals, notes = await open_pr(repo, fake_github, webhook, run_worker, base, head)
    assert fake_github.annotation_requests == [50, 50]
    assert [n["start_line"] for n in notes] == list(range(3, 103))
    assert evals["output"]["summary"].endswith(
        '20 more problems are not annotated in "Files changed": GitHub is sent the first 100, sorted by file and line.'
    )


@pytest.mark.slow
async def test_regressed_cases_and_a_missing_version_bump_are_annotated(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, webhook: httpx.AsyncClient, run_worker: Any
) -> None:
    base, _ = build_pr_repo(repo, ["lead"], prices=PRICES)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v2"))  # changed, version kept
    head = repo.commit("no bump")
    stub.handler = answers(3, 5)  # cases c3 and c4 (lines 4 and 5) regress
    evals, notes = await open_pr(repo, fake_github, webhook, run_worker, base, head)
    assert evals["conclusion"] == "failure"
    assert where(notes) == [
        ("evals/qa.jsonl", 4, "warning"),
        ("evals/qa.jsonl", 5, "warning"),
        ("prompts/qa.yaml", 1, "failure"),
    ]
    assert notes[2]["message"] == "changed without a version bump: version 1.0.0 must be higher than the base's 1.0.0"
    assert notes[0]["title"] == "Regression in suite qa"
    assert notes[0]["message"].startswith("case c3 passed on the base and fails on the head")


def test_the_fake_github_refuses_more_than_fifty_annotations(fake_github: FakeGitHub) -> None:
    note = {"path": "a", "start_line": 1, "end_line": 1, "annotation_level": "failure", "message": "m"}

    def body(count: int) -> dict[str, Any]:
        return {"output": {"title": "t", "summary": "s", "annotations": [note] * count}}

    assert fake_github._invalid_run(body(51), creating=False) == "output.annotations: no more than 50 items per request"
    assert fake_github._invalid_run(body(50), creating=False) is None
