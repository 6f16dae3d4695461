"""The worker's jobs and cron jobs: what `evalbot worker` runs (in `liveness.EvalbotWorker`) and what the
tests' workers run, from one list. It sits above every job module: none imports it."""

from __future__ import annotations

from typing import Any, ClassVar

from arq import cron
from arq.connections import RedisSettings
from arq.worker import func

from bot.github.constants import (
    JOB_MAX_TRIES,
    JOB_TIMEOUT_S,
    SCHEDULE_TICK_MINUTES,
    SHORT_JOB_TIMEOUT_S,
    WATCHDOG_EVERY_S,
)
from bot.github.flows import feedback
from bot.github.flows.cancelled import cancel_checks
from bot.github.flows.commands import handle_command, rerun_head
from bot.github.flows.evaluate import evaluate_pull_request
from bot.github.flows.gate import publish_head
from bot.github.flows.merge_queue import merge_group_checks
from bot.github.flows.outbox import publish_outbox_job
from bot.github.flows.rate_limited import complete_rate_limited_job
from bot.github.flows.redeliver import redeliver_failed
from bot.github.flows.schedule import check_schedules, scheduled_evaluation
from bot.github.state.records import start_store, stop_store
from bot.github.worker import liveness
from bot.settings import get_settings

FUNCTIONS: list[Any] = [
    liveness.watched(liveness.metered(evaluate_pull_request)),
    complete_rate_limited_job,
    func(handle_command, timeout=SHORT_JOB_TIMEOUT_S),
    func(publish_head, timeout=SHORT_JOB_TIMEOUT_S),
    func(merge_group_checks, timeout=SHORT_JOB_TIMEOUT_S),
    func(rerun_head, timeout=SHORT_JOB_TIMEOUT_S),
    func(cancel_checks, timeout=SHORT_JOB_TIMEOUT_S),
    scheduled_evaluation,
    publish_outbox_job,
    feedback.merge_feedback,
]
# Due `schedule:` firings are looked for every few minutes, lost workers every few seconds, failed
# deliveries every minute; arq runs each cron job on one worker only.
CRON_JOBS: list[Any] = [
    cron(check_schedules, minute=set(range(0, 60, SCHEDULE_TICK_MINUTES)), run_at_startup=False),
    cron(feedback.check_feedback_merges, minute=set(range(0, 60, SCHEDULE_TICK_MINUTES)), run_at_startup=False),
    cron(liveness.watchdog, second=set(range(0, 60, WATCHDOG_EVERY_S)), run_at_startup=True, timeout=60),
    cron(redeliver_failed, second={30}, run_at_startup=True, timeout=60),
]


async def _startup(ctx: dict[str, Any]) -> None:
    ctx.setdefault("settings", get_settings())
    # Pending migrations run before the first job: every job may write to the store.
    await start_store(ctx)


async def _shutdown(ctx: dict[str, Any]) -> None:
    await stop_store(ctx)


class WorkerSettings:
    """`evalbot worker` runs these in `liveness.EvalbotWorker` (arq's own CLI would run them without the
    hand-over on SIGTERM and without riding out a Redis restart)."""

    functions: ClassVar[list[Any]] = FUNCTIONS
    cron_jobs: ClassVar[list[Any]] = CRON_JOBS
    on_startup = _startup
    on_shutdown = _shutdown
    job_timeout = JOB_TIMEOUT_S
    max_tries = JOB_MAX_TRIES
    # A push or a close aborts the pull request's older evaluations (bot/github/state/aborts.py).
    allow_abort_jobs = True
    max_jobs = get_settings().WORKER_MAX_JOBS
    job_completion_wait = get_settings().WORKER_SHUTDOWN_GRACE_S
    redis_settings = RedisSettings.from_dsn(get_settings().REDIS_URL)
