"""Liveness of evaluations: heartbeats, the watchdog that re-runs a lost one, a time cap planned from
the run's calls, hand-over on SIGTERM, and an arq worker that rides out a Redis restart.

arq alone keeps a killed job's in-progress key for the whole job timeout, then runs it again. Here a
running evaluation renews a heartbeat in Redis; the watchdog (a cron job on one worker) finds one older
than LOST_AFTER_S, marks its check run and deletes arq's in-progress key, so arq itself runs the *same*
job again at once (a new job beside it would leave the old one to run again when its key expired).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from arq.constants import (
    abort_jobs_ss,
    default_queue_name,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.worker import Worker
from githubkit.exception import GitHubException
from redis.exceptions import WatchError

from bot.github.api import ratelimit
from bot.github.api.publish import Publisher
from bot.github.constants import (
    EVALS_CHECK,
    HEARTBEATS_KEY,
    JOB_MAX_TRIES,
    LOST_AFTER_S,
    SUPERSEDED_KEY,
)
from bot.github.context import REDIS_DOWN, Heartbeat, github_client, publisher_for
from bot.pipeline.render import render_template
from bot.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")
# How long a step that needs Redis (publishing, arq's own bookkeeping) waits for it to answer again.
REDIS_WAIT_S = 10 * 60


async def until_redis_answers(step: Callable[[], Awaitable[T]], what: str, up_to_s: float = REDIS_WAIT_S) -> T:
    """Run `step`, again and again while Redis does not answer (a restart), for up to `up_to_s`."""
    deadline, delay = time.monotonic() + up_to_s, 0.5
    while True:
        try:
            return await step()
        except REDIS_DOWN as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("redis unavailable, waiting", step=what, error=type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def wait_for_redis(redis: Any) -> None:
    """Return once Redis answers: publishing writes verdicts there (a run goes on while it is down)."""
    await until_redis_answers(redis.ping, "publish")


def watched(function: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """The arq job `function` (keyword arguments repo, installation_id, pr_number, head_sha) with a
    heartbeat and a time cap; the job finds the Heartbeat in `ctx["liveness"]`."""

    @functools.wraps(function)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> T:
        beat = Heartbeat(ctx, kwargs)
        ctx["liveness"] = beat
        try:
            async with beat, asyncio.timeout(beat.cap_s) as cap:
                beat.cap = cap
                return await function(ctx, *args, **kwargs)
        except asyncio.CancelledError:
            if handing_over(ctx):
                # A deploy is not the job's fault: give back the try arq counted for this run.
                with contextlib.suppress(*REDIS_DOWN):
                    await asyncio.shield(ctx["redis"].decr(retry_key_prefix + beat.job_id))
            raise

    return run


def metered(function: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """The arq job `function` with its GitHub requests counted (`evalbot_github_requests_per_run`) and
    githubkit's rate-limit waits bounded by its heartbeat's time cap (`ctx["liveness"]`, set by `watched`
    around it)."""

    @functools.wraps(function)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> T:
        beat: Heartbeat | None = ctx.get("liveness")
        with ratelimit.counting(beat.left_s if beat is not None else None) as requests:
            try:
                return await function(ctx, *args, **kwargs)
            finally:
                log.info("github requests", job_id=ctx.get("job_id"), requests=requests.total, by_kind=requests.by_kind)

    return run


def handing_over(ctx: dict[str, Any]) -> bool:
    """Whether the job's cancellation is the worker shutting down (not its time cap, not an abort)."""
    shutdown: asyncio.Event | None = ctx.get("shutdown")
    beat: Heartbeat | None = ctx.get("liveness")
    return shutdown is not None and shutdown.is_set() and not (beat is not None and beat.expired())


async def hand_over(publisher: Publisher, check_id: int) -> None:
    """Say on the check run that the run goes on in another worker (shielded: the task is cancelled)."""
    summary = render_template("handed_over.md.j2")
    with contextlib.suppress(Exception):
        await asyncio.shield(publisher.progress(check_id, "Worker restarting, handed over to another", summary))


async def _still_queued(redis: Any, job_id: str) -> bool:
    """The job is still arq's to run: not finished, failed or aborted (arq drops its abort request as
    it cancels the task, so evalbot's own record of the abort is asked too)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(job_key_prefix + job_id)
        pipe.exists(result_key_prefix + job_id)
        pipe.zscore(abort_jobs_ss, job_id)
        pipe.exists(SUPERSEDED_KEY.format(job_id=job_id))
        job, result, aborting, superseded = await pipe.execute()
    return bool(job) and not result and aborting is None and not superseded


async def _release(redis: Any, job_id: str, raw: bytes, rerun: bool, finish: bool = False) -> bool:
    """Drop a stale record; with `rerun` also arq's in-progress key (arq runs the job again), with
    `finish` the job itself. Only if no beat came in meanwhile: False when one did."""
    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(HEARTBEATS_KEY)
            if await pipe.hget(HEARTBEATS_KEY, job_id) != raw:
                return False
            pipe.multi()
            pipe.hdel(HEARTBEATS_KEY, job_id)
            if rerun or finish:
                pipe.delete(in_progress_key_prefix + job_id)
            if finish:
                pipe.delete(job_key_prefix + job_id, retry_key_prefix + job_id)
                pipe.zrem(default_queue_name, job_id)
            await pipe.execute()
        except WatchError:
            return False
    return True


async def _mark(ctx: dict[str, Any], record: dict[str, Any], lost_s: int, last_try: bool) -> None:
    settings: Settings = ctx["settings"]
    gh = github_client(ctx, int(record["installation_id"]))
    publisher = publisher_for(settings, gh, str(record["repo"]), int(record["pr_number"]), record["head_sha"])
    run = await publisher.check_run(EVALS_CHECK)
    if run is None or run.get("status") == "completed":
        return
    tries = int(record["job_try"])
    summary = render_template("worker_lost.md.j2", lost_s=lost_s, tries=tries, last_try=last_try)
    if last_try:
        title = f"evalbot could not finish: its worker was lost {tries} times"
        await publisher.complete(int(run["id"]), "failure", title, summary, rerun_button=True)
    else:
        await publisher.progress(int(run["id"]), "Worker lost, re-running", summary)


async def watchdog(ctx: dict[str, Any]) -> str:
    """arq cron: re-run each evaluation whose worker stopped beating (killed, out of memory, host lost).

    Returns:
        What it did, e.g. "re-ran 1, gave up 0".
    """
    redis = ctx["redis"]
    seconds, micros = await redis.time()
    now = seconds + micros / 1e6
    uptime_s = int((await redis.info("server"))["uptime_in_seconds"])
    if uptime_s < LOST_AFTER_S:
        # Redis restarted lately: no heartbeat could be written while it was down.
        return "redis restarted lately"
    rerun = gave_up = 0
    for key, raw in (await redis.hgetall(HEARTBEATS_KEY)).items():
        job_id = key.decode() if isinstance(key, bytes) else str(key)
        record = json.loads(raw)
        lost_s = int(now - float(record["beat_at"]))
        if lost_s <= LOST_AFTER_S:
            continue
        if not await _still_queued(redis, job_id):
            # It ended (or was aborted) where its record could not be removed: nothing was lost.
            await _release(redis, job_id, raw, rerun=False)
            continue
        if record.get("published"):
            # Lost between publishing and arq's bookkeeping: done, not to be run again.
            await _release(redis, job_id, raw, rerun=False, finish=True)
            continue
        last_try = int(record["job_try"]) >= JOB_MAX_TRIES
        bound = log.bind(job_id=job_id, lost_s=lost_s, job_try=record["job_try"])
        try:
            await _mark(ctx, record, lost_s, last_try)
        except GitHubException as exc:
            # The re-run matters more than the note: it goes ahead, and publishes when GitHub answers.
            bound.warning("lost worker not shown on the check run", error=str(exc))
        if await _release(redis, job_id, raw, rerun=not last_try, finish=last_try):
            gave_up += last_try
            rerun += not last_try
            bound.warning("worker lost: " + ("gave up" if last_try else "job re-run"))
    return f"re-ran {rerun}, gave up {gave_up}"


class EvalbotWorker(Worker):
    """arq's worker, plus: a Redis that stops answering does not stop it (running jobs go on, arq's
    bookkeeping waits for Redis), and SIGTERM hands running jobs back after a grace period."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ctx["shutdown"] = asyncio.Event()
        self._redis_down = False

    def _stopping(self) -> None:
        self.ctx["shutdown"].set()

    def handle_sig(self, signum: Any) -> None:
        self._stopping()
        super().handle_sig(signum)

    def handle_sig_wait_for_completion(self, signum: Any) -> None:
        self._stopping()
        super().handle_sig_wait_for_completion(signum)

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_DOWN as exc:
            if not self._redis_down:
                log.warning("redis unavailable: running jobs go on, none is taken", error=type(exc).__name__)
            self._redis_down = True
            await asyncio.sleep(1)
            return
        if self._redis_down:
            log.warning("redis answers again")
            self._redis_down = False

    async def finish_job(self, *args: Any, **kwargs: Any) -> None:
        await until_redis_answers(lambda: super(EvalbotWorker, self).finish_job(*args, **kwargs), "finish a job")

    async def finish_failed_job(self, *args: Any, **kwargs: Any) -> None:
        await until_redis_answers(lambda: super(EvalbotWorker, self).finish_failed_job(*args, **kwargs), "finish a job")
