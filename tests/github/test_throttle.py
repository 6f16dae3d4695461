"""The installation's limiter (bot/github/api/throttle.py) against the fake GitHub: one limited answer stops
every client of the installation, whichever worker (Redis connection) it is in; a limit without a hint
blocks at least a minute, then twice as long; writes go one at a time, a spacing apart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from githubkit.exception import RateLimitExceeded

from bot.github.api.client import installation_client
from bot.github.constants import THROTTLE_KEY
from bot.github.worker import liveness
from bot.settings import Settings
from tests.conftest import redis_test_url
from tests.github.fake_github import FakeGitHub

REPO = "Codertocat/Hello-World"
T = TypeVar("T")


@pytest.fixture
async def other_worker() -> AsyncIterator[ArqRedis]:
    """A second worker's Redis connection: nothing but Redis is shared with the first."""
    pool = await create_pool(RedisSettings.from_dsn(redis_test_url()))
    yield pool
    await pool.aclose()


async def in_a_job(call: Callable[[], Awaitable[T]]) -> T:
    """`call` as an evaluation with a little over a minute left makes it: a limit is not waited out."""

    async def job(ctx: dict[str, Any]) -> T:
        return await call()

    beat = SimpleNamespace(left_s=lambda: 61.0)
    return await liveness.metered(job)({"liveness": beat})


def comment(gh: Any, text: str) -> Awaitable[Any]:
    return gh.arequest("POST", f"/repos/{REPO}/issues/2/comments", json={"body": text})


@pytest.mark.parametrize("status", [403, 429])
async def test_a_limit_without_a_hint_blocks_the_installation_in_every_worker_for_a_minute(
    fake_github: FakeGitHub, settings: Settings, redis: ArqRedis, other_worker: ArqRedis, status: int
) -> None:
    first = installation_client(settings, 1, redis=redis)
    second = installation_client(settings, 1, redis=other_worker)
    # A secondary limit as GitHub may give it: no `retry-after`, quota left (a bare 429, or a 403).
    fake_github.secondary_hits, fake_github.secondary_retry_after_s = 1, None
    fake_github.secondary_status = status
    with pytest.raises(RateLimitExceeded) as limited:
        await in_a_job(lambda: first.arequest("GET", f"/repos/{REPO}"))
    assert limited.value.retry_after.total_seconds() == 60

    # The other worker's job writes nothing to GitHub until the minute is over; it is told how long.
    sent = len(fake_github.installation_requests)
    with pytest.raises(RateLimitExceeded) as blocked:
        await in_a_job(lambda: comment(second, "hello"))
    assert 58 <= blocked.value.retry_after.total_seconds() <= 60
    assert len(fake_github.installation_requests) == sent
    assert fake_github.requests_while_limited == []
    # Another installation is not held up.
    assert (await installation_client(settings, 2, redis=other_worker).arequest("GET", f"/repos/{REPO}")).is_success


async def test_limits_without_a_hint_back_off_exponentially(
    fake_github: FakeGitHub, settings: Settings, redis: ArqRedis
) -> None:
    gh = installation_client(settings, 1, redis=redis)
    fake_github.secondary_retry_after_s = None
    waits = []
    for _ in range(3):
        fake_github.secondary_hits = 1
        with pytest.raises(RateLimitExceeded) as limited:
            await in_a_job(lambda: gh.arequest("GET", f"/repos/{REPO}"))
        waits.append(limited.value.retry_after.total_seconds())
        # The block ends (its time passes), and the next request is limited again.
        await redis.hdel(THROTTLE_KEY.format(installation=1), "blocked_until")
        fake_github.wait_over(1)
    assert waits == [60, 120, 240]


async def test_a_hinted_limit_blocks_for_its_retry_after(
    fake_github: FakeGitHub, settings: Settings, redis: ArqRedis, other_worker: ArqRedis
) -> None:
    fake_github.secondary_hits, fake_github.secondary_retry_after_s = 1, 600
    with pytest.raises(RateLimitExceeded):
        await in_a_job(lambda: installation_client(settings, 1, redis=redis).arequest("GET", f"/repos/{REPO}"))
    with pytest.raises(RateLimitExceeded) as blocked:
        await in_a_job(lambda: comment(installation_client(settings, 1, redis=other_worker), "hi"))
    assert 598 <= blocked.value.retry_after.total_seconds() <= 600
    assert fake_github.requests_while_limited == []


async def test_writes_of_an_installation_are_a_spacing_apart_across_workers(
    fake_github: FakeGitHub, settings: Settings, redis: ArqRedis, other_worker: ArqRedis
) -> None:
    spaced = settings.model_copy(update={"GITHUB_WRITE_SPACING_S": 0.3})
    first = installation_client(spaced, 1, redis=redis)
    second = installation_client(spaced, 1, redis=other_worker)
    # Two workers' jobs write at once, and read in between (reads are not held back).
    await asyncio.gather(
        *(comment(gh, f"{n}") for n in range(3) for gh in (first, second)),
        *(gh.arequest("GET", f"/repos/{REPO}") for gh in (first, second)),
    )

    assert len(fake_github.write_times) == 6
    gaps = [b - a for a, b in zip(fake_github.write_times, fake_github.write_times[1:], strict=False)]
    assert min(gaps) >= 0.3, gaps
