"""Faults survived, with real worker processes on a real Redis: a killed worker, a deploy, a Redis
restart and a GitHub outage each end with every check run completed with the right conclusion, one
sticky comment, and no model call paid twice."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq import create_pool
from arq.connections import RedisSettings

from bot.github.constants import APPROVAL_CHECK, EVALS_CHECK
from bot.settings import Settings
from tests.conftest import GitRepo
from tests.faults.cluster import Cluster, billed_twice, wait_until
from tests.github.conftest import answers, build_pr_repo, fixture, signed_headers, webhook_client
from tests.stub_llm import Reply, StubLLM, held_stub

# Real worker processes, each run tens of seconds: outside `-m "not slow"`.
PRICES = {"openai/stub": {"input_per_1k": 0.001, "output_per_1k": 0.002}}
# 10 cases x base and head; the head ("v2") gets 9 right, the base 5.
CALLS = 20
TITLE = "qa: accuracy 50.0% → 90.0% (+40.0 pp)"
# Each answer takes this long, two at a time per worker: a run lasts about 10 s, long enough to break.
DELAY_S = 1.0


def pr_event(number: int, base: str, head: str, action: str = "opened") -> bytes:
    payload = fixture(f"pull_request.{action}.json")
    payload["number"] = payload["pull_request"]["number"] = number
    payload["pull_request"]["base"].update(sha=base, ref="main")
    payload["pull_request"]["head"].update(sha=head, ref="feature")
    payload["pull_request"]["draft"] = False
    return json.dumps(payload).encode()


# While `hold` is set, calls after the first FREE_CALLS are answered only after HOLD_S: when the test
# breaks a worker, no answer is a few milliseconds from reaching it. (An answer that reaches a worker
# killed before it stored it is paid again by the re-run: that no design can avoid.)
FREE_CALLS = 6
HOLD_S = 60.0

# Each test waits on its own bounds (a hold of 60 s, up to 180 s for a check): the per-test timeout
# covers the longest chain of them, so a slow machine fails on the bound that names what was late.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


@pytest.fixture
def hold() -> threading.Event:
    return threading.Event()


@pytest.fixture
def stub(hold: threading.Event) -> Iterator[StubLLM]:
    server = held_stub(answers(9), hold, FREE_CALLS, HOLD_S, DELAY_S)
    yield server
    server.stop()


@pytest.fixture
def make_cluster(repo: GitRepo, stub: StubLLM, tmp_path: Path) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(**env: str) -> tuple[Cluster, str, str]:
        base, head = build_pr_repo(repo, ["lead"], prices=PRICES)
        cluster = Cluster(tmp_path, repo.root, stub, EVALBOT_CONCURRENCY="2", **env)
        cluster.github.pulls[2] = (base, head)
        made.append(cluster)
        return cluster, base, head

    yield make
    for cluster in made:
        print(cluster.logs())
        cluster.close()


@asynccontextmanager
async def web(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    """The web app (in this process) on the cluster's Redis, with one pool for its life, as `evalbot serve`."""
    settings = Settings(WEBHOOK_SECRET="webhook-secret", REDIS_URL=cluster.redis_server.url(0))
    pool = await create_pool(RedisSettings.from_dsn(settings.REDIS_URL))
    try:
        async with webhook_client(settings, pool) as http:
            yield http
    finally:
        await pool.aclose()


async def deliver(
    http: httpx.AsyncClient, body: bytes, delivery: str, cluster: Cluster | None = None
) -> httpx.Response:
    """Send a delivery as GitHub does; with `cluster`, GitHub's record of it gets the answer."""
    headers = signed_headers(body, "pull_request", delivery)
    response = await http.post("/api/github/webhooks", content=body, headers=headers)
    if cluster is not None:
        cluster.github.deliveries.record(delivery, "pull_request", body, response.status_code)
    return response


def assert_published(cluster: Cluster, stub: StubLLM, head: str) -> None:
    """Both checks completed with the run's verdict, on one run each; one sticky comment; every call paid once."""
    # The comment follows the checks.
    wait_until(lambda: bool(cluster.sticky_comments(2)), 30, "the sticky comment")
    (evals,) = cluster.github.runs_named(EVALS_CHECK, head)
    (approval,) = cluster.github.runs_named(APPROVAL_CHECK, head)
    assert (evals["status"], evals["conclusion"], evals["output"]["title"]) == ("completed", "success", TITLE)
    assert (approval["status"], approval["conclusion"]) == ("completed", "action_required")
    assert len(cluster.sticky_comments(2)) == 1
    assert billed_twice(stub) == {}
    # Each call under test paid once (a re-run from the cache also measures latency again, on purpose).
    assert stub.answered_under_test == CALLS


def midway(stub: StubLLM) -> None:
    wait_until(lambda: len(stub.answered) >= 6, 60, "the run to be under way")


def held_midway(stub: StubLLM, hold: threading.Event) -> None:
    """The first FREE_CALLS answered, the next two (EVALBOT_CONCURRENCY) held."""
    hold.set()
    wait_until(lambda: len(stub.answered) == FREE_CALLS and stub.in_flight == 2, 60, "the run to be under way")


async def test_killed_worker_is_rerun_by_the_watchdog_within_90_s(
    make_cluster: Any, stub: StubLLM, hold: threading.Event
) -> None:
    cluster, base, head = make_cluster()
    cluster.start_worker()
    cluster.start_worker()
    async with web(cluster) as http:
        assert (await deliver(http, pr_event(2, base, head), "d-1")).status_code == 202
    held_midway(stub, hold)
    (pid,) = cluster.running_on().values()
    cluster.worker(pid).send_signal(signal.SIGKILL)
    hold.clear()

    # The bound, with the default heartbeat (10 s) and lost-after (60 s).
    took_s = wait_until(lambda: cluster.completed(head) is not None, 90, "the check completed after the kill")
    print(f"check completed {took_s:.0f} s after the SIGKILL")
    assert "Worker lost, re-running" in cluster.titles(head)
    assert_published(cluster, stub, head)
    # The re-run drops its heartbeat after publishing: wait for it rather than race it.
    wait_until(lambda: cluster.running_on() == {}, 30, "the re-run's heartbeat removed")


async def test_sigterm_hands_the_run_over_to_a_new_worker(
    make_cluster: Any, stub: StubLLM, hold: threading.Event
) -> None:
    cluster, base, head = make_cluster(WORKER_SHUTDOWN_GRACE_S="1")
    old = cluster.start_worker()
    async with web(cluster) as http:
        assert (await deliver(http, pr_event(2, base, head), "d-1")).status_code == 202
    held_midway(stub, hold)
    new = cluster.start_worker()
    old.send_signal(signal.SIGTERM)
    assert old.wait(timeout=60) == 0
    hold.clear()
    assert cluster.completed(head) is None

    wait_until(lambda: cluster.completed(head) is not None, 120, "the new worker completed the check")
    assert "Worker restarting, handed over to another" in cluster.titles(head)
    assert_published(cluster, stub, head)
    assert new.poll() is None


async def test_redis_restart_mid_run(make_cluster: Any, stub: StubLLM, repo: GitRepo) -> None:
    cluster, base, head = make_cluster()
    # Pull request 3 changes no AI file: its delivery arrives while Redis is down.
    repo.git("checkout", "-q", "-b", "docs", base)
    repo.write("README.md", "docs only\n")
    docs = repo.commit("docs")
    cluster.github.pulls[3] = (base, docs)
    cluster.github.pull_refs[3] = ("main", "docs")
    cluster.start_worker()
    async with web(cluster) as http:
        assert (await deliver(http, pr_event(2, base, head), "d-1")).status_code == 202
        midway(stub)

        cluster.redis_server.pause()
        stopped = time.monotonic()
        refused = await deliver(http, pr_event(3, base, docs), "d-2", cluster)
        assert refused.status_code == 503
        assert refused.json()["outcome"].startswith("unavailable: Redis does not answer")
        health = await http.get("/healthz")
        assert health.status_code == 503 and health.json()["redis"].startswith("unavailable")
        time.sleep(max(0.0, 20 - (time.monotonic() - stopped)))
        cluster.redis_server.resume()

        assert (await http.get("/healthz")).status_code == 200

        # GitHub never redelivers by itself: the worker's cron asks it to (within a minute), and
        # GitHub's attempt (same id) is accepted now.
        wait_until(lambda: bool(cluster.github.deliveries.requested), 90, "a redelivery")
        redelivered = cluster.github.deliveries.take_requested()
        assert [(d.guid, d.body) for d in redelivered] == [("d-2", pr_event(3, base, docs))]
        assert (await deliver(http, redelivered[0].body, "d-2", cluster)).status_code == 202
    wait_until(lambda: cluster.completed(head) is not None, 120, "the check completed after the restart")
    wait_until(lambda: cluster.completed(docs) is not None, 60, "the redelivered pull request's check")
    assert_published(cluster, stub, head)
    assert cluster.completed(docs)["conclusion"] == "success"  # type: ignore[index]


async def test_github_outage_at_publish_time(make_cluster: Any, stub: StubLLM) -> None:
    cluster, base, head = make_cluster()
    score = answers(9)

    def last_answer_takes_github_down(body: dict[str, Any]) -> Reply:
        # GitHub answers 502 to everything for 60 s from the moment the last answer is ready.
        if len(stub.requests) == CALLS:
            cluster.github.down_until = time.monotonic() + DELAY_S + 60
        return replace(score(body), delay_s=DELAY_S)

    stub.handler = last_answer_takes_github_down
    cluster.start_worker()
    async with web(cluster) as http:
        assert (await deliver(http, pr_event(2, base, head), "d-1")).status_code == 202
    wait_until(lambda: cluster.github.down_until > 0, 60, "the last model call")
    wait_until(lambda: time.monotonic() > cluster.github.down_until, 90, "GitHub back")
    assert cluster.completed(head) is None

    wait_until(lambda: cluster.completed(head) is not None, 180, "the check published after the outage")
    assert_published(cluster, stub, head)
    assert len(stub.requests) == CALLS
