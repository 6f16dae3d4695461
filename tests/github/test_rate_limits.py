"""GitHub's rate limits through the fake: what a run costs, progress that adapts to the quota, runs that
stop at a limit they cannot wait out, a burst that exhausts the quota, and tokens that expire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.jobs import Job
from prometheus_client import REGISTRY

from bot.github.api.client import installation_client
from bot.github.constants import APPROVAL_CHECK, EVALS_CHECK, THROTTLE_KEY, eval_job_id
from bot.github.flows import rate_limited
from bot.github.worker.registry import FUNCTIONS, WorkerSettings
from bot.settings import Settings
from bot.store import Store
from tests.conftest import GitRepo, prompt_file, redis_test_url, suite_config
from tests.github.conftest import answers, build_pr_repo, run_burst
from tests.github.fake_github import FakeGitHub
from tests.stub_llm import Reply, StubLLM

REPO = "Codertocat/Hello-World"
R = f"/repos/{REPO}"
INSTALLATION = 1


async def run_jobs(redis: ArqRedis, settings: Settings, job_store: Store, max_jobs: int = -1) -> int:
    """Run the queued jobs as `evalbot worker` does (heartbeat, time cap, request counts) to the end,
    or to `max_jobs` of them."""
    options = {"max_burst_jobs": max_jobs, "max_jobs": settings.WORKER_MAX_JOBS}
    return await run_burst(redis, settings, job_store, FUNCTIONS, **options)


async def enqueue(redis: ArqRedis, pr: int, head: str) -> None:
    await redis.enqueue_job(
        "evaluate_pull_request",
        _job_id=eval_job_id(REPO, pr, head),
        repo=REPO,
        installation_id=INSTALLATION,
        pr_number=pr,
        head_sha=head,
    )


def progress_updates(fake: FakeGitHub) -> list[tuple[float, dict[str, Any]]]:
    return [
        (at, body)
        for (method, path, body), at in zip(fake.bodies, fake.write_times, strict=True)
        if method == "PATCH" and "/check-runs/" in path and body.get("status") == "in_progress"
    ]


Evaluate = Callable[..., Awaitable[int]]


@pytest.fixture
def head(repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM) -> str:
    """The head of pull request 2, which changes the qa prompt (9 of 10 right, the base 5)."""
    base, head = build_pr_repo(repo, ["lead"])
    fake_github.pulls[2] = (base, head)
    stub.handler = answers(9)
    return head


@pytest.fixture
def evaluate(redis: ArqRedis, settings: Settings, job_store: Store) -> Evaluate:
    """Queue pull request 2's evaluation of `head` and run the worker; how many jobs completed."""

    async def run(head: str, max_jobs: int = -1) -> int:
        await enqueue(redis, 2, head)
        return await run_jobs(redis, settings, job_store, max_jobs)

    return run


@pytest.mark.slow
async def test_progress_at_most_once_per_interval_and_twice_per_run(
    repo: GitRepo,
    fake_github: FakeGitHub,
    stub: StubLLM,
    redis: ArqRedis,
    settings: Settings,
    job_store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, head = build_pr_repo(repo, ["lead"])
    fake_github.pulls[2] = (base, head)
    right = answers(9)
    # 20 calls one at a time, 0.1 s each: the run lasts at least 2 s (longer on a loaded machine), four
    # intervals of 0.5 s, while answers come every 0.1 s: only the interval spaces the updates out.
    stub.handler = lambda body: Reply(text=right(body).text, delay_s=0.1)
    monkeypatch.setattr("bot.github.flows.evaluate.PROGRESS_INTERVAL_S", 0.5)
    await enqueue(redis, 2, head)
    assert await run_jobs(redis, settings.model_copy(update={"EVALBOT_CONCURRENCY": 1}), job_store) == 1

    updates = progress_updates(fake_github)
    assert len(updates) == 2
    assert updates[1][0] - updates[0][0] >= 0.5
    assert fake_github.runs_named(EVALS_CHECK, head)[0]["conclusion"] == "success"


def build_cases(repo: GitRepo, cases: int) -> tuple[str, str]:
    """Suite qa with `cases` cases: prompt v1 on main, v2 on branch feature."""
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}])
    repo.write(".evalbot.yml", {"approvers": ["lead"], **config, "thresholds": {"latency_p95_increase_pct": 1000}})
    repo.write("evals/qa.jsonl", [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"} for i in range(cases)])
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1"))
    base = repo.commit("base")
    repo.git("checkout", "-q", "-b", "feature")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2"))
    return base, repo.commit("head")


@pytest.mark.slow
async def test_a_200_case_pull_request_costs_19_requests(
    repo: GitRepo,
    fake_github: FakeGitHub,
    stub: StubLLM,
    redis: ArqRedis,
    settings: Settings,
    job_store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, head = build_cases(repo, 200)
    fake_github.pulls[2] = (base, head)
    stub.handler = lambda body: Reply(text="a1")
    # However long the run takes on a loaded machine, the one progress update is "Evaluating".
    monkeypatch.setattr("bot.github.flows.evaluate.PROGRESS_INTERVAL_S", 3600.0)
    runs_before = REGISTRY.get_sample_value("evalbot_github_requests_per_run_sum") or 0.0
    await enqueue(redis, 2, head)
    assert await run_jobs(redis, settings, job_store) == 1

    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    checks = f"{R}/check-runs"
    assert fake_github.requests_to(INSTALLATION) == [
        ("GET", f"{R}/commits/{head}/check-runs"),  # an open evalbot/evals to take over?
        ("POST", checks),
        ("GET", f"{R}/pulls/2"),
        ("GET", f"{R}/collaborators/Codertocat/permission"),
        ("GET", f"{R}/git/ref/heads/main"),  # the base as it is now, and its policy
        ("GET", f"{R}/contents/.evalbot.yml"),
        ("GET", f"{R}/contents/.evalbot.yml"),  # the head's
        ("PATCH", f"{checks}/{evals['id']}"),  # "Evaluating"; the next would be an interval later
        ("GET", f"{R}/compare/{base}...{head}"),
        ("GET", f"{R}/contents/prompts/qa.yaml"),
        ("GET", f"{R}/contents/evals/qa.jsonl"),
        ("GET", f"{R}/contents/prompts/qa.yaml"),
        ("GET", f"{R}/contents/evals/qa.jsonl"),
        ("GET", f"{R}/pulls"),  # every open pull request with this head
        ("GET", f"{R}/git/ref/heads/main"),  # approvers of the base as it is now (same commit: read once)
        ("PATCH", f"{checks}/{evals['id']}"),
        ("POST", checks),  # evalbot/approval, created completed
        ("GET", f"{R}/issues/2/comments"),  # the sticky comment
        ("POST", f"{R}/issues/2/comments"),
    ]
    # The worker's histogram saw the same run, and the request for the installation's token (from the
    # app's quota: this GitHub has issued none to this process before).
    assert REGISTRY.get_sample_value("evalbot_github_requests_per_run_sum") - runs_before == 19 + 1
    assert fake_github.runs_named(EVALS_CHECK, head)[0]["status"] == "completed"
    assert fake_github.runs_named(APPROVAL_CHECK, head)[0]["status"] == "completed"


async def test_low_remaining_quota_posts_no_progress(fake_github: FakeGitHub, head: str, evaluate: Evaluate) -> None:
    # A tenth of the hour's quota left: every request goes to the result, none to progress.
    fake_github.spend_quota(INSTALLATION, 4_500)
    assert await evaluate(head) == 1

    assert progress_updates(fake_github) == []
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert (evals["status"], evals["conclusion"]) == ("completed", "success")


async def test_a_limit_longer_than_the_time_left_completes_the_check_with_the_reason(
    fake_github: FakeGitHub,
    stub: StubLLM,
    redis: ArqRedis,
    settings: Settings,
    job_store: Store,
    head: str,
    evaluate: Evaluate,
) -> None:
    # A secondary limit asking for an hour's wait, once the check run is open: past the run's 10-minute cap.
    fake_github.secondary_hits, fake_github.secondary_retry_after_s = 1, 3600
    fake_github.secondary_path = "/pulls/2"
    # The reset's minute, as the run sees it: it may fall on either side of a minute boundary.
    resets = {time.strftime("%H:%M", time.gmtime(time.time() + 3600))}
    assert await evaluate(head, max_jobs=1) == 1
    resets.add(time.strftime("%H:%M", time.gmtime(time.time() + 3600)))

    # Nothing more is asked of GitHub for the hour, not even the check's completion: a job completes
    # it after the wait. (Waiting for it instead would outlast the test's timeout.)
    assert fake_github.requests_while_limited == []
    assert fake_github.runs_named(EVALS_CHECK, head)[0]["status"] == "queued"
    await finish_after_the_wait(fake_github, redis, settings, job_store, at_least_s=3600)
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert (evals["status"], evals["conclusion"]) == ("completed", "failure")
    assert evals["output"]["title"] == "evalbot stopped at GitHub's rate limit"
    assert any(
        f"GitHub's rate limit for this installation resets at {at} UTC, after this run's time cap"
        in evals["output"]["summary"]
        for at in resets
    )
    assert stub.requests == []


async def finish_after_the_wait(
    fake_github: FakeGitHub, redis: ArqRedis, settings: Settings, job_store: Store, at_least_s: float
) -> None:
    """The one job left queued completes the stopped run's check, deferred `at_least_s` or more; run it
    as if that time had passed (for GitHub and for the installation's limiter)."""
    ((job_id, score),) = await redis.zrange("arq:queue", 0, -1, withscores=True)
    assert score / 1000 >= time.time() + at_least_s - 5
    info = await Job(job_id.decode(), redis).info()
    assert info is not None and info.function == "complete_rate_limited"
    fake_github.wait_over(INSTALLATION)
    await redis.delete(THROTTLE_KEY.format(installation=INSTALLATION))
    ctx = {"settings": settings, "redis": redis, "store": job_store}
    assert await rate_limited.complete_rate_limited(ctx, **info.kwargs) == "completed"


@pytest.mark.parametrize("status", [403, 429])
async def test_a_limit_without_a_hint_ends_the_run_and_completes_its_check_a_minute_later(
    fake_github: FakeGitHub,
    stub: StubLLM,
    redis: ArqRedis,
    settings: Settings,
    job_store: Store,
    head: str,
    evaluate: Evaluate,
    status: int,
) -> None:
    # GitHub's secondary limit without `retry-after` or `x-ratelimit-remaining: 0` (a bare 429, or a 403
    # naming the limit), once the check run is open: not a refusal, a wait of at least a minute.
    fake_github.secondary_hits, fake_github.secondary_retry_after_s = 1, None
    fake_github.secondary_status, fake_github.secondary_path = status, "/pulls/2"
    assert await evaluate(head, max_jobs=1) == 1

    assert await Job(eval_job_id(REPO, 2, head), redis).result() == "rate-limited"
    assert fake_github.requests_while_limited == []
    assert stub.requests == []
    await finish_after_the_wait(fake_github, redis, settings, job_store, at_least_s=60)
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert (evals["status"], evals["conclusion"]) == ("completed", "failure")
    assert evals["output"]["title"] == "evalbot stopped at GitHub's rate limit"


async def test_one_limited_answer_stops_the_installations_jobs_in_another_worker(
    fake_github: FakeGitHub, stub: StubLLM, redis: ArqRedis, settings: Settings, job_store: Store, head: str
) -> None:
    # Pull request 3 has the same head as 2: two jobs of one installation.
    fake_github.pulls[3] = fake_github.pulls[2]
    fake_github.secondary_hits, fake_github.secondary_retry_after_s, fake_github.secondary_path = 1, None, "/pulls/2"
    await enqueue(redis, 2, head)
    assert await run_jobs(redis, settings, job_store, max_jobs=1) == 1
    sent = len(fake_github.installation_requests)

    # Another worker, sharing nothing with the first but Redis, takes pull request 3's job: not one of
    # its requests reaches GitHub during the wait, and its check is completed after it.
    other = await create_pool(RedisSettings.from_dsn(redis_test_url()))
    try:
        await enqueue(other, 3, head)
        assert await run_jobs(other, settings, job_store, max_jobs=1) == 1
        assert await Job(eval_job_id(REPO, 3, head), other).result() == "rate-limited"
    finally:
        await other.aclose()
    assert len(fake_github.installation_requests) == sent
    assert fake_github.requests_while_limited == []
    assert fake_github.runs_named(EVALS_CHECK, head)[0]["status"] == "queued"  # pull request 2's, for now
    deferred = await redis.zrange("arq:queue", 0, -1, withscores=True)
    assert len(deferred) == 2 and all(score / 1000 >= time.time() + 55 for _, score in deferred)


async def test_with_no_quota_left_the_check_is_completed_after_the_reset(
    fake_github: FakeGitHub, redis: ArqRedis, settings: Settings, job_store: Store, head: str, evaluate: Evaluate
) -> None:
    fake_github.exhaust_quota(INSTALLATION, reset_in_s=3600)
    assert await evaluate(head, max_jobs=1) == 1

    # Nothing could be written: no check run exists, none is left in progress; a job waits for the reset.
    assert fake_github.check_runs == {}
    ((job_id, score),) = await redis.zrange("arq:queue", 0, -1, withscores=True)
    job_id = job_id.decode()
    assert job_id.startswith(f"evalbot:rate-limited:{REPO}:2:{head}:")
    assert abs(score / 1000 - (time.time() + 3605)) < 5
    info = await Job(job_id, redis).info()
    assert info is not None and info.function == "complete_rate_limited"

    # The hour passes (for GitHub and for the installation's limiter).
    fake_github.spend_quota(INSTALLATION, 0)
    await redis.delete(THROTTLE_KEY.format(installation=INSTALLATION))
    ctx = {"settings": settings, "redis": redis, "store": job_store}
    assert await rate_limited.complete_rate_limited(ctx, **info.kwargs) == "completed"
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert (evals["status"], evals["conclusion"]) == ("completed", "failure")
    assert "after this run's time cap" in evals["output"]["summary"]
    # A run since on the same commit owns its check: a late completion leaves it alone.
    assert await rate_limited.complete_rate_limited(ctx, **info.kwargs) == "left to a newer run"


@pytest.mark.slow
async def test_a_burst_of_20_pull_requests_never_leaves_a_check_in_progress(
    repo: GitRepo,
    fake_github: FakeGitHub,
    stub: StubLLM,
    redis: ArqRedis,
    settings: Settings,
    job_store: Store,
) -> None:
    base, _ = build_pr_repo(repo, ["lead"])
    heads = []
    for number in range(1, 21):
        repo.git("checkout", "-q", "-B", f"feature-{number}", base)
        repo.write("prompts/qa.yaml", prompt_file(f"1.1.{number}", system_prompt=f"v2 #{number}"))
        heads.append(repo.commit(f"head {number}"))
        fake_github.pulls[number] = (base, heads[-1])
    stub.handler = answers(9)
    # 150 requests every 15 s for the installation: the 20 pull requests (about 380 requests) run out
    # of the quota twice and wait for its reset. And two secondary limits on comparisons asking for 2 s,
    # which every job of the installation waits out.
    fake_github.rate_limit, fake_github.rate_window_s = 150, 15.0
    fake_github.secondary_hits, fake_github.secondary_retry_after_s = 2, 2
    fake_github.secondary_path = "/compare/"
    for number, head in enumerate(heads, 1):
        await enqueue(redis, number, head)
    started = time.monotonic()
    assert await run_jobs(redis, settings.model_copy(update={"WORKER_MAX_JOBS": 4}), job_store) >= 20

    # More requests went through than two windows allow: the quota ran out twice and its reset was
    # waited for (the limiter stops at `x-ratelimit-remaining: 0`, before GitHub has to refuse).
    assert fake_github.secondary_hits_served == 2
    assert len(fake_github.requests_to(INSTALLATION)) > 2 * fake_github.rate_limit
    # Limits of 2 s are waited out, never a run's whole cap (a loaded machine still stays far below it).
    assert time.monotonic() - started < 120
    for head in heads:
        runs = fake_github.runs_named(EVALS_CHECK, head)
        assert runs and all(run["status"] == "completed" for run in runs), runs
        assert (runs[-1]["conclusion"], runs[-1]["output"]["title"]) == (
            "success",
            "qa: accuracy 50.0% → 90.0% (+40.0 pp)",
        )
    assert all(run["status"] == "completed" for run in fake_github.check_runs.values())


async def test_an_expired_token_is_refused_and_renewed(fake_github: FakeGitHub, settings: Settings) -> None:
    # githubkit renews a token a minute before `expires_at`: a 61-second token is renewed after a second.
    fake_github.token_lifetime_s = 61
    gh = installation_client(settings, 7)
    first = await gh.arequest("GET", f"/repos/{REPO}")
    assert first.headers["x-ratelimit-limit"] == "5000"
    assert first.headers["x-ratelimit-remaining"] == "4999"
    old_token = first.raw_request.headers["authorization"]
    await asyncio.sleep(1.5)
    # GitHub no longer takes the first token: the client does not send it again.
    fake_github.expire_tokens(7)
    async with httpx.AsyncClient(base_url=fake_github.url) as http:
        refused = await http.get(f"/repos/{REPO}", headers={"Authorization": old_token})
    assert (refused.status_code, refused.json()["message"]) == (401, "Bad credentials")

    second = await gh.arequest("GET", f"/repos/{REPO}")
    assert second.status_code == 200
    assert second.raw_request.headers["authorization"] != old_token
    assert fake_github.tokens_issued == 2


def test_worker_max_jobs_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings.max_jobs == Settings().WORKER_MAX_JOBS == 10
    monkeypatch.setenv("WORKER_MAX_JOBS", "3")
    assert Settings().WORKER_MAX_JOBS == 3
