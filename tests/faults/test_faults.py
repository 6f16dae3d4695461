"""Faults survived, with real worker processes on a real Redis: a killed worker, a deploy, a Redis
restart and a GitHub outage each end with every check run completed with the right conclusion, one
sticky comment, and no model call paid twice."""

from __future__ import annotations

import itertools
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
import yaml
from arq import create_pool
from arq.connections import RedisSettings

from bot.github.constants import APPROVAL_CHECK, EVALS_CHECK, HEARTBEAT_INTERVAL_S, HEARTBEATS_KEY
from bot.settings import Settings
from tests.conftest import GitRepo, prompt_file
from tests.faults.cluster import APP_ID, Cluster, billed_twice, wait_until
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


# The gate holds against real worker processes (issue 22): no green window while the worker is paused, and
# no frozen worker on a pattern that backtracks without bound.


@asynccontextmanager
async def deployed_web(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    """`evalbot serve` in this process on the cluster's Redis, with the app's credentials (as deployed)."""
    settings = Settings(
        APP_ID=APP_ID,
        PRIVATE_KEY=cluster.env["PRIVATE_KEY"],
        WEBHOOK_SECRET="webhook-secret",
        GITHUB_API_URL=cluster.github.url,
        REDIS_URL=cluster.redis_server.url(0),
    )
    pool = await create_pool(RedisSettings.from_dsn(settings.REDIS_URL))
    try:
        async with webhook_client(settings, pool) as http:
            yield http
    finally:
        await pool.aclose()


def pull_event(number: int, base: tuple[str, str], head: tuple[str, str], action: str = "opened") -> bytes:
    name = "pull_request.edited.base-changed.DERIVED.json" if action == "edited" else f"pull_request.{action}.json"
    payload = fixture(name)
    payload["number"] = payload["pull_request"]["number"] = number
    payload["pull_request"]["base"].update(ref=base[0], sha=base[1])
    payload["pull_request"]["head"].update(ref=head[0], sha=head[1])
    payload["pull_request"]["draft"] = False
    return json.dumps(payload).encode()


def shown(cluster: Cluster, sha: str) -> tuple[str | None, str | None]:
    """What GitHub shows for the two checks on `sha`: each one's newest run, its conclusion or status."""
    found = []
    for name in (EVALS_CHECK, APPROVAL_CHECK):
        runs = cluster.github.runs_named(name, sha)
        found.append(None if not runs else runs[-1]["conclusion"] or runs[-1]["status"])
    return found[0], found[1]


def docs_commit(repo: GitRepo, branch: str, start: str, text: str) -> str:
    repo.git("checkout", "-q", "-B", branch, start)
    repo.write("README.md", text)
    return repo.commit(f"{branch}: docs")


async def test_a_green_head_is_pending_within_a_second_of_a_retarget_or_a_new_pull_request_with_the_worker_paused(
    make_cluster: Any, repo: GitRepo
) -> None:
    cluster, base, _head = make_cluster()
    repo.git("branch", "sandbox", "feature")  # the prompt change is on sandbox already
    first = docs_commit(repo, "docs-1", "feature", "one\n")
    second = docs_commit(repo, "docs-2", "feature", "two\n")
    sandbox = repo.git("rev-parse", "sandbox").strip()
    for number, branch, sha in ((3, "docs-1", first), (5, "docs-2", second)):
        cluster.github.pulls[number] = (sandbox, sha)
        cluster.github.pull_refs[number] = ("sandbox", branch)
    worker = cluster.start_worker()
    async with deployed_web(cluster) as http:
        # Two README-only pull requests into sandbox: green at once (no AI file changed).
        await deliver(http, pull_event(3, ("sandbox", sandbox), ("docs-1", first)), "g-1")
        await deliver(http, pull_event(5, ("sandbox", sandbox), ("docs-2", second)), "g-2")
        for sha in (first, second):
            wait_until(lambda sha=sha: shown(cluster, sha) == ("success", "success"), 60, "green heads")

        worker.send_signal(signal.SIGSTOP)
        try:
            # Pull request 3 retargeted to main: its head now brings the prompt change into main.
            cluster.github.pulls[3] = (base, first)
            cluster.github.pull_refs[3] = ("main", "docs-1")
            sent = time.monotonic()
            await deliver(http, pull_event(3, ("main", base), ("docs-1", first), "edited"), "g-3")
            assert shown(cluster, first) == ("in_progress", "action_required")
            retarget_s = time.monotonic() - sent

            # A new pull request at the other green head, into main.
            cluster.github.pulls[6] = (base, second)
            cluster.github.pull_refs[6] = ("main", "docs-2")
            sent = time.monotonic()
            await deliver(http, pull_event(6, ("main", base), ("docs-2", second)), "g-4")
            assert shown(cluster, second) == ("in_progress", "action_required")
            opened_s = time.monotonic() - sent
        finally:
            worker.send_signal(signal.SIGCONT)
    print(f"pending {retarget_s * 1000:.0f} ms after the retarget, {opened_s * 1000:.0f} ms after the opening")
    assert retarget_s < 1.0 and opened_s < 1.0

    # The worker, back, evaluates both against main: the prompt change waits for a lead.
    for sha in (first, second):
        wait_until(lambda sha=sha: shown(cluster, sha) == ("success", "action_required"), 120, "evaluated into main")
    assert cluster.github.runs_named(EVALS_CHECK, first)[-1]["output"]["title"] == TITLE


CATASTROPHIC_SCHEMA = "type: object\nproperties:\n  question: {type: string, pattern: '^(a|a)*$'}\n"


async def test_a_catastrophic_schema_pattern_is_an_input_error_while_another_run_on_the_worker_keeps_its_heartbeat(
    make_cluster: Any, repo: GitRepo, stub: StubLLM
) -> None:
    cluster, base, head = make_cluster()
    # Pull request 3 adds a suite whose row schema backtracks without bound on its 41-character row.
    repo.git("checkout", "-q", "-B", "frozen", base)
    config = yaml.safe_load((repo.root / ".evalbot.yml").read_text())
    slow = {
        "name": "slow",
        "prompt": "prompts/slow.yaml",
        "dataset": "evals/slow.jsonl",
        "graders": [{"type": "equals"}],
    }
    config["suites"].append({**slow, "schema": "evals/slow.schema.yaml"})
    repo.write(".evalbot.yml", config)
    repo.write("prompts/slow.yaml", prompt_file("1.0.0"))
    repo.write("evals/slow.jsonl", [{"id": "s1", "question": "a" * 40 + "b", "expected": "x"}])
    repo.write("evals/slow.schema.yaml", CATASTROPHIC_SCHEMA)
    frozen = repo.commit("a schema that backtracks")
    cluster.github.pulls[3] = (base, frozen)
    cluster.github.pull_refs[3] = ("main", "frozen")
    cluster.start_worker()
    async with deployed_web(cluster) as http:
        await deliver(http, pull_event(2, ("main", base), ("feature", head)), "f-1")
        wait_until(lambda: len(stub.answered) >= 2, 60, "pull request 2's run under way")
        beats = HeartbeatWatch(cluster)
        try:
            sent = time.monotonic()
            await deliver(http, pull_event(3, ("main", base), ("frozen", frozen)), "f-2")
            wait_until(lambda: cluster.completed(frozen) is not None, 30, "the input error")
            error_s = time.monotonic() - sent
            # Pull request 2 finishes as if nothing happened: one run, on time, its heartbeat never late.
            took_s = wait_until(lambda: cluster.completed(head) is not None, 60, "pull request 2's check")
        finally:
            beats.stop()
    print(f"input error after {error_s:.1f} s; heartbeat gaps {beats.gaps()}")
    evals = cluster.completed(frozen)
    assert evals is not None and evals["conclusion"] == "failure"
    summary = evals["output"]["summary"]
    assert "- evals/slow.schema.yaml: \\`pattern\\` '^(a\\|a)*$' took longer than 1 s to match" in summary
    assert "(on row 's1' of evals/slow.jsonl)" in summary
    assert cluster.completed(head)["output"]["title"] == TITLE  # type: ignore[index]
    assert "Worker lost, re-running" not in cluster.titles(head)
    assert error_s < 10 and took_s < 20 * DELAY_S
    assert max(beats.gaps(), default=0.0) < HEARTBEAT_INTERVAL_S + 1.0


class HeartbeatWatch:
    """Samples the running evaluations' heartbeat times (Redis clock) from a thread until stopped."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.seen: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for job_id, raw in self.cluster.redis.hgetall(HEARTBEATS_KEY).items():
                at = float(json.loads(raw)["beat_at"])
                times = self.seen.setdefault(job_id.decode(), [])
                if not times or times[-1] != at:
                    times.append(at)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def gaps(self) -> list[float]:
        return [b - a for times in self.seen.values() for a, b in itertools.pairwise(times)]
