"""Re-runs from the Checks tab: on a fork's pull request (GitHub lists no pull request in the payload),
by a writer or refused, and on evalbot/approval (published again, no evaluation)."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from arq import ArqRedis

from bot.engine.cache import KEY_PREFIX
from bot.github.constants import APPROVAL_CHECK, EVALS_CHECK
from bot.github.webhook import route
from bot.settings import Settings
from tests.conftest import GitRepo
from tests.github.conftest import (
    answers,
    build_pr_repo,
    check_run_event,
    check_suite_event,
    fixture,
    pull_ref,
    signed_headers,
    webhook_client,
)
from tests.github.fake_github import FakeGitHub
from tests.stub_llm import StubLLM

_deliveries = itertools.count(1)
# 10 cases, base and head.
CALLS = 20


@pytest.fixture
async def webhook(redis: ArqRedis, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with webhook_client(settings, redis) as http:
        yield http


async def deliver(http: httpx.AsyncClient, event: str, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = signed_headers(body, event, f"rerun-{next(_deliveries)}")
    response = await http.post("/api/github/webhooks", content=body, headers=headers)
    assert response.status_code == 202, response.text
    return response


async def open_pull(http: httpx.AsyncClient, base: str, head: str) -> None:
    payload = fixture("pull_request.opened.json")
    payload["pull_request"].update(draft=False)
    payload["pull_request"]["base"].update(sha=base, ref="main")
    payload["pull_request"]["head"].update(sha=head, ref="feature")
    await deliver(http, "pull_request", payload)


@pytest.fixture
async def fork_pull(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, webhook: httpx.AsyncClient, run_worker: Any
) -> tuple[str, str]:
    """Pull request 2 from a fork, by an author without write access: evaluated only on a writer's word."""
    base, head = build_pr_repo(repo, ["lead"])
    stub.handler = answers(9)
    fake_github.pulls[2] = (base, head)
    fake_github.fork_pulls.add(2)
    fake_github.pull_authors[2] = "forker"
    fake_github.permissions.update(writer="write", mallory="read")
    await open_pull(webhook, base, head)
    await run_worker()
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert (evals["conclusion"], evals["output"]["title"]) == ("action_required", "Waiting for a maintainer's /eval")
    # The check run names its pull request: GitHub's re-run payloads for a fork's head do not.
    assert evals["external_id"] == "2"
    assert stub.requests == []
    return base, head


def rerun_payload(kind: str, fake: FakeGitHub, head: str, sender: str) -> tuple[str, dict[str, Any]]:
    run = fake.runs_named(EVALS_CHECK, head)[-1]
    if kind == "check_suite":
        return "check_suite", check_suite_event(head, sender)
    return "check_run", check_run_event(kind, run, sender)


KINDS = ["rerequested", "requested_action", "check_suite"]
# How the refusal quotes what was clicked.
CLICKED = {
    "rerequested": "Re-run (Checks tab)",
    "requested_action": "Re-run evals (button)",
    "check_suite": "Re-run (Checks tab)",
}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_writers_rerun_of_a_fork_pull_request_evaluates_it(
    kind: str,
    fork_pull: tuple[str, str],
    fake_github: FakeGitHub,
    stub: StubLLM,
    webhook: httpx.AsyncClient,
    run_worker: Any,
) -> None:
    _, head = fork_pull
    event, payload = rerun_payload(kind, fake_github, head, "writer")
    assert payload[event]["pull_requests"] == []
    assert (await deliver(webhook, event, payload)).json()["outcome"] == "enqueued"
    await run_worker()
    evals = fake_github.runs_named(EVALS_CHECK, head)[-1]
    assert (evals["conclusion"], evals["output"]["title"]) == ("success", "qa: accuracy 50.0% → 90.0% (+40.0 pp)")
    assert len(stub.answered) == CALLS


@pytest.mark.parametrize("kind", KINDS)
async def test_a_non_writers_rerun_of_a_fork_pull_request_is_refused(
    kind: str,
    fork_pull: tuple[str, str],
    fake_github: FakeGitHub,
    stub: StubLLM,
    webhook: httpx.AsyncClient,
    run_worker: Any,
) -> None:
    _, head = fork_pull
    event, payload = rerun_payload(kind, fake_github, head, "mallory")
    await deliver(webhook, event, payload)
    await run_worker()
    replies = [c["body"] for c in fake_github.comments.values() if "evalbot:sticky" not in c["body"]]
    assert replies == [f"@mallory `{CLICKED[kind]}`: `/eval` needs write access to the repository\n"]
    assert fake_github.runs_named(EVALS_CHECK, head)[-1]["conclusion"] == "action_required"
    assert stub.requests == []


@pytest.mark.slow
async def test_rerun_of_the_approval_check_publishes_it_again_without_evaluating(
    repo: GitRepo,
    fake_github: FakeGitHub,
    stub: StubLLM,
    redis: ArqRedis,
    webhook: httpx.AsyncClient,
    run_worker: Any,
) -> None:
    base, head = build_pr_repo(repo, ["lead"])
    stub.handler = answers(9)
    fake_github.pulls[2] = (base, head)
    await open_pull(webhook, base, head)
    await run_worker()
    assert len(stub.requests) == CALLS
    # Cached answers expire: an evaluation now would pay for every call again.
    for key in await redis.keys(KEY_PREFIX + "*"):
        await redis.delete(key)

    (approval,) = fake_github.runs_named(APPROVAL_CHECK, head)
    payload = check_run_event("rerequested", approval, "Codertocat", [pull_ref(2, base, head)])
    assert (await deliver(webhook, "check_run", payload)).json()["outcome"] == "enqueued"
    await run_worker()

    runs = fake_github.runs_named(APPROVAL_CHECK, head)
    assert len(runs) == 2
    assert (runs[-1]["status"], runs[-1]["conclusion"]) == ("completed", "action_required")
    assert runs[-1]["output"]["title"] == "Waiting for a lead's /approve"
    assert runs[-1]["external_id"] == "2"
    assert fake_github.runs_named(EVALS_CHECK, head)[-1]["conclusion"] == "success"
    assert len(stub.requests) == CALLS


def test_routes_of_reruns() -> None:
    run = {"id": 7, "name": EVALS_CHECK, "head_sha": "f" * 40, "status": "completed", "conclusion": "success"}
    # No pull request listed and no external_id (a check run of an older evalbot): nothing to re-run.
    assert route("check_run", check_run_event("rerequested", run, "writer"), "d-1") == (
        "ignored: check_run.rerequested without a pull request",
        None,
    )
    outcome, job = route("check_run", check_run_event("rerequested", {**run, "external_id": "2"}, "writer"), "d-2")
    assert outcome == "enqueued" and job is not None
    assert (job.function, job.kwargs["pr_number"], job.kwargs["actor"], job.kwargs["head_sha"]) == (
        "handle_command",
        2,
        "writer",
        "f" * 40,
    )
    approval = {**run, "name": APPROVAL_CHECK, "external_id": "2"}
    outcome, job = route("check_run", check_run_event("rerequested", approval, "writer"), "d-3")
    assert job is not None and (job.function, job.kwargs["head_sha"]) == ("publish_head", "f" * 40)
    outcome, job = route("check_suite", check_suite_event("f" * 40, "writer"), "d-4")
    assert job is not None
    assert (job.function, job.kwargs["actor"], job.kwargs["head_sha"]) == ("rerun_head", "writer", "f" * 40)
