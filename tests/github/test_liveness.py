"""The liveness pieces on their own: the planned time cap, the outbox backoff, and what the watchdog
re-runs (a lost job) and leaves alone (a live one, an aborted one), on the real Redis."""

from __future__ import annotations

import json
from typing import Any

from arq import ArqRedis
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix

from bot.github.constants import HEARTBEATS_KEY, SUPERSEDED_KEY
from bot.github.context import planned_cap_s
from bot.github.flows.outbox import backoff_s
from bot.github.worker.liveness import watchdog
from bot.settings import Settings


def test_time_cap_is_planned_from_the_calls_within_floor_and_ceiling() -> None:
    settings = Settings(EVALBOT_CONCURRENCY=8, EVALBOT_EXPECTED_CALL_S=10.0)
    assert planned_cap_s(20, settings) == 600.0  # 25 s planned: the 10-minute floor
    assert planned_cap_s(2_000, settings) == 2_500.0
    assert planned_cap_s(100_000, settings) == 10_800.0  # the 3-hour ceiling


def test_outbox_backs_off_doubling_up_to_15_minutes() -> None:
    assert [backoff_s(n) for n in range(1, 10)] == [10, 20, 40, 80, 160, 320, 640, 900, 900]


async def _beat(redis: ArqRedis, job_id: str, age_s: float, **extra: Any) -> None:
    seconds, _ = await redis.time()
    record = {"token": "host:1:1:0", "repo": "o/r", "installation_id": 1, "pr_number": 2, "head_sha": "a" * 40}
    record |= extra
    await redis.hset(HEARTBEATS_KEY, job_id, json.dumps({**record, "job_try": 1, "beat_at": seconds - age_s}))
    await redis.set(job_key_prefix + job_id, b"job")
    await redis.set(in_progress_key_prefix + job_id, b"1")


async def test_watchdog_reruns_only_the_lost_job(redis: ArqRedis, settings: Settings) -> None:
    await _beat(redis, "lost", age_s=61)
    await _beat(redis, "live", age_s=30)
    # Aborted (arq's abort set) after its heartbeat stopped: not lost, so not run again.
    await _beat(redis, "aborted", age_s=300)
    await redis.zadd(abort_jobs_ss, {"aborted": 1})
    # Superseded by a push: arq dropped its abort request as it cancelled the task, and the worker was
    # lost before the job ended. evalbot's record of the abort keeps it from running again.
    await _beat(redis, "superseded", age_s=300)
    await redis.set(SUPERSEDED_KEY.format(job_id="superseded"), json.dumps({"by": "b" * 40}))
    # Lost after publishing its results: finished for arq, not run again.
    await _beat(redis, "published", age_s=300, published=True)
    ctx: dict[str, Any] = {"redis": redis, "settings": settings}

    assert await watchdog(ctx) == "re-ran 1, gave up 0"
    assert await redis.hkeys(HEARTBEATS_KEY) == [b"live"]
    # arq runs the lost job again as soon as its in-progress key is gone; the others keep theirs.
    assert not await redis.exists(in_progress_key_prefix + "lost")
    keys = ("live", "aborted", "superseded")
    assert await redis.exists(*(in_progress_key_prefix + key for key in keys)) == 3
    assert not await redis.exists(job_key_prefix + "published", in_progress_key_prefix + "published")
