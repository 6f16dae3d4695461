"""A push or a close cancels the pull request's evaluations of older heads, end to end: webhook, a
running arq worker, the fake GitHub and the stub model, whose answers are held so that the old run is
mid-way, deterministically, when the push arrives."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from arq import ArqRedis
from arq.worker import Worker

from bot.github.constants import APPROVAL_CHECK, EVALS_CHECK
from bot.github.flows.cancelled import cancel_checks
from bot.github.flows.commands import handle_command
from bot.github.flows.evaluate import evaluate_pull_request
from bot.github.flows.gate import publish_head
from bot.settings import Settings
from bot.store import Store
from tests.conftest import GitRepo, prompt_file
from tests.github.conftest import answers, build_pr_repo, fixture, signed_headers, webhook_client
from tests.github.fake_github import FakeGitHub
from tests.stub_llm import StubLLM, held_stub

_deliveries = itertools.count(1)
CALLS = 20  # 10 cases, base and head
CONCURRENCY = 2
# While `hold` is set, calls after the first FREE_CALLS are answered only after HOLD_S: the old run is
# then exactly FREE_CALLS answers in, with CONCURRENCY calls waiting (and no room to make another),
# when the push arrives. HOLD_S is past `until`'s timeout: without the abort the test fails, it does
# not wait the old run out.
FREE_CALLS = 6
HOLD_S = 30.0
REPO = "Codertocat/Hello-World"
# Each test holds calls in flight for HOLD_S, and its stub waits 10 s for them to stop: outside `-m "not slow"`.
pytestmark = pytest.mark.slow
TITLE = "qa: accuracy 50.0% → 90.0% (+40.0 pp)"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"EVALBOT_CONCURRENCY": CONCURRENCY})


@pytest.fixture
def hold() -> threading.Event:
    return threading.Event()


@pytest.fixture
def stub(hold: threading.Event) -> Iterator[StubLLM]:
    server = held_stub(answers(9), hold, FREE_CALLS, HOLD_S)
    yield server
    server.stop()


@pytest.fixture
async def worker(redis: ArqRedis, settings: Settings, job_store: Store) -> AsyncIterator[Worker]:
    """A worker that keeps polling (a burst worker stops looking for aborts once its queue is empty)."""
    worker = Worker(
        functions=[evaluate_pull_request, handle_command, publish_head, cancel_checks],
        redis_pool=redis,
        poll_delay=0.05,
        ctx={"settings": settings, "store": job_store},
        handle_signals=False,
        allow_abort_jobs=True,
    )
    task = asyncio.create_task(worker.main())
    yield worker
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)


@pytest.fixture
async def webhook(redis: ArqRedis, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with webhook_client(settings, redis) as http:
        yield http


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def idle(worker: Worker, redis: ArqRedis) -> None:
    """Until the queue is empty and no job runs."""
    deadline = time.monotonic() + 20
    while await redis.zcard("arq:queue") or any(not t.done() for t in worker.tasks.values()):
        assert time.monotonic() < deadline, "timed out waiting for the worker to be idle"
        await asyncio.sleep(0.02)


async def pull_request(http: httpx.AsyncClient, action: str, base: str, head: str) -> str:
    payload = fixture(f"pull_request.{action}.json")
    payload["pull_request"].update(draft=False)
    payload["pull_request"]["base"].update(sha=base, ref="main")
    payload["pull_request"]["head"].update(sha=head, ref="feature")
    body = json.dumps(payload).encode()
    headers = signed_headers(body, "pull_request", f"supersede-{next(_deliveries)}")
    response = await http.post("/api/github/webhooks", content=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["outcome"])


def completed(fake: FakeGitHub, sha: str) -> Callable[[], bool]:
    return lambda: any(r["status"] == "completed" for r in fake.runs_named(EVALS_CHECK, sha))


def push(repo: GitRepo) -> str:
    """A new head for pull request 2: its prompt changed again ("v2 again")."""
    repo.write("prompts/qa.yaml", prompt_file("1.2.0", system_prompt="v2 again"))
    return repo.commit("push")


async def under_way(
    webhook: httpx.AsyncClient, fake: FakeGitHub, stub: StubLLM, hold: threading.Event, action: str, base: str, sha: str
) -> None:
    """Pull request 2 at `sha`, its `action` delivered and its run under way (`held_midway`)."""
    fake.pulls[2] = (base, sha)
    hold.set()
    await pull_request(webhook, action, base, sha)
    await held_midway(stub, hold)


async def held_midway(stub: StubLLM, hold: threading.Event) -> None:
    """The first FREE_CALLS answered, the next CONCURRENCY held."""
    await until(lambda: len(stub.answered) == FREE_CALLS and stub.in_flight == CONCURRENCY, "the run to be under way")


async def test_a_push_cancels_the_old_heads_run_and_evaluates_the_new_head(
    repo: GitRepo,
    fake_github: FakeGitHub,
    stub: StubLLM,
    hold: threading.Event,
    webhook: httpx.AsyncClient,
    worker: Worker,
    redis: ArqRedis,
) -> None:
    base, old = build_pr_repo(repo, ["lead"])
    await under_way(webhook, fake_github, stub, hold, "opened", base, old)

    new = push(repo)
    fake_github.pulls[2] = (base, new)
    # The held calls stay held; the new head's are answered at once.
    hold.clear()
    await pull_request(webhook, "synchronize", base, new)
    await until(completed(fake_github, old), "the old head's check run to complete")
    # Stopped early: the held calls were dropped unanswered, no other call of the old run was made.
    assert len(stub.answered) == FREE_CALLS < CALLS

    (run,) = fake_github.runs_named(EVALS_CHECK, old)
    assert (run["conclusion"], run["output"]["title"]) == ("cancelled", f"superseded by {new[:7]}")
    assert f"A newer commit, `{new[:7]}`, was pushed" in run["output"]["summary"]
    await until(completed(fake_github, new), "the new head's check run")
    await idle(worker, redis)
    (evals,) = fake_github.runs_named(EVALS_CHECK, new)
    assert (evals["conclusion"], evals["output"]["title"]) == ("success", TITLE)
    # The old head never shows a state that passes; its one run stays cancelled.
    assert fake_github.runs_named(APPROVAL_CHECK, old) == []
    assert [r["conclusion"] for r in fake_github.runs_named(EVALS_CHECK, old)] == ["cancelled"]


async def test_an_older_push_delivered_late_neither_stops_the_head_nor_evaluates_the_old_commit(
    repo: GitRepo,
    fake_github: FakeGitHub,
    stub: StubLLM,
    hold: threading.Event,
    webhook: httpx.AsyncClient,
    worker: Worker,
    redis: ArqRedis,
) -> None:
    base, older = build_pr_repo(repo, ["lead"])
    head = push(repo)
    await under_way(webhook, fake_github, stub, hold, "synchronize", base, head)

    # GitHub delivers the push of `older` after the push of `head` (or delivers it again).
    hold.clear()
    await pull_request(webhook, "synchronize", base, older)
    await until(completed(fake_github, older), "the older commit's check run")
    await until(lambda: completed_last(fake_github, head), "the head's check run")
    await idle(worker, redis)

    (stale,) = fake_github.runs_named(EVALS_CHECK, older)
    assert (stale["conclusion"], stale["output"]["title"]) == ("cancelled", f"superseded by {head[:7]}")
    # The head's run was aborted by the late delivery, then started again: it passes, and every call
    # was paid once (the held answers dropped by the abort were asked again, none twice).
    assert fake_github.runs_named(EVALS_CHECK, head)[-1]["conclusion"] == "success"
    assert stub.answered_under_test == CALLS  # (latency re-measured on a sample is not a call under test)
    # Nothing of the older commit was asked: its prompt is not among those sent.
    assert {body["messages"][0]["content"] for body in stub.requests} == {"v1", "v2 again"}


async def test_an_api_lagging_behind_the_push_does_not_cancel_the_new_head(
    repo: GitRepo,
    fake_github: FakeGitHub,
    stub: StubLLM,
    webhook: httpx.AsyncClient,
    worker: Worker,
    redis: ArqRedis,
) -> None:
    base, older = build_pr_repo(repo, ["lead"])
    head = push(repo)
    # The push is delivered while GitHub's API still shows the pull request at the older commit.
    fake_github.pulls[2] = (base, older)
    await pull_request(webhook, "synchronize", base, head)
    pull_path = f"/repos/{REPO}/pulls/2"
    await until(lambda: ("GET", pull_path) in fake_github.requests, "the job to read the pull request")
    fake_github.pulls[2] = (base, head)

    await until(completed(fake_github, head), "the head's check run")
    await idle(worker, redis)
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert (evals["conclusion"], evals["output"]["title"]) == ("success", TITLE)
    assert fake_github.requests.count(("GET", pull_path)) >= 2
    # The job waited for the API rather than taking its head for a stale delivery: never stopped and
    # started again.
    assert await redis.keys("arq:result:*:again:*") == []


@dataclass(frozen=True)
class Closed:
    base: str
    head: str
    asked: int  # calls the run had asked for when its check run completed


@pytest.fixture
async def closed_midway(
    repo: GitRepo,
    fake_github: FakeGitHub,
    stub: StubLLM,
    hold: threading.Event,
    webhook: httpx.AsyncClient,
    worker: Worker,
    redis: ArqRedis,
) -> Closed:
    """Pull request 2 opened, then closed with its run under way (FREE_CALLS answered, CONCURRENCY held)."""
    base, head = build_pr_repo(repo, ["lead"])
    await under_way(webhook, fake_github, stub, hold, "opened", base, head)

    fake_github.closed.add(2)
    hold.clear()
    await pull_request(webhook, "closed", base, head)
    await until(completed(fake_github, head), "the check run to complete")
    asked = len(stub.requests)
    await idle(worker, redis)
    return Closed(base, head, asked)


async def test_closing_the_pull_request_cancels_its_run_and_no_call_follows(
    closed_midway: Closed, fake_github: FakeGitHub, stub: StubLLM
) -> None:
    head = closed_midway.head
    (run,) = fake_github.runs_named(EVALS_CHECK, head)
    assert (run["conclusion"], run["output"]["title"]) == ("cancelled", "pull request closed")
    assert "The pull request was closed" in run["output"]["summary"]
    assert len(stub.requests) == closed_midway.asked == FREE_CALLS + CONCURRENCY
    assert len(stub.answered) == FREE_CALLS


async def test_a_queued_run_of_an_old_head_never_starts_and_its_open_check_run_is_cancelled(
    repo: GitRepo,
    fake_github: FakeGitHub,
    stub: StubLLM,
    webhook: httpx.AsyncClient,
    redis: ArqRedis,
    run_worker: Any,
) -> None:
    base, old = build_pr_repo(repo, ["lead"])
    fake_github.pulls[2] = (base, old)
    await pull_request(webhook, "opened", base, old)
    # A check run a lost worker left open on the old head, while its job waits in the queue again.
    stale = {"name": EVALS_CHECK, "head_sha": old, "status": "in_progress", "external_id": "2"}
    fake_github.check_runs[1] = {"id": 1, "conclusion": None, "output": None, "app": {"id": 4242}, **stale}

    repo.write("prompts/qa.yaml", prompt_file("1.2.0", system_prompt="v3"))
    new = repo.commit("push")
    fake_github.pulls[2] = (base, new)
    await pull_request(webhook, "synchronize", base, new)
    await run_worker()

    assert (fake_github.check_runs[1]["conclusion"], fake_github.check_runs[1]["output"]["title"]) == (
        "cancelled",
        f"superseded by {new[:7]}",
    )
    assert fake_github.runs_named(EVALS_CHECK, new)[-1]["conclusion"] == "success"
    # Only the new head's prompt (and the base's) was asked: the old head's run never started.
    systems = {body["messages"][0]["content"] for body in stub.requests}
    assert systems == {"v1", "v3"}


async def test_a_reopened_pull_request_evaluates_the_head_whose_run_was_cancelled(
    closed_midway: Closed, fake_github: FakeGitHub, stub: StubLLM, webhook: httpx.AsyncClient
) -> None:
    base, head = closed_midway.base, closed_midway.head
    fake_github.closed.discard(2)
    # The same head as the aborted job: not taken for a duplicate of it.
    assert await pull_request(webhook, "reopened", base, head) == "enqueued"
    await until(lambda: len(fake_github.runs_named(EVALS_CHECK, head)) == 2, "a new check run")
    await until(lambda: completed_last(fake_github, head), "the new run")
    assert fake_github.runs_named(EVALS_CHECK, head)[-1]["conclusion"] == "success"
    # The answers made before the close came from the cache.
    assert stub.answered_under_test == CALLS  # (latency re-measured on a sample is not a call under test)


def completed_last(fake: FakeGitHub, sha: str) -> bool:
    return bool(fake.runs_named(EVALS_CHECK, sha)[-1]["status"] == "completed")
