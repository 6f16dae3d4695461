"""A run stopped at GitHub's rate limit, with no time left to wait it out: its check run completes as
failed with the reason, never left in progress; with no quota left even for that, a job completes it
after the reset (`complete_rate_limited`)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from arq import Retry
from arq.worker import func
from githubkit.exception import RateLimitExceeded

from bot.github import metrics
from bot.github.api import ratelimit
from bot.github.constants import EVALS_CHECK, SHORT_JOB_TIMEOUT_S
from bot.github.context import PullRequestJob
from bot.github.flows.gate import block
from bot.pipeline.render import render_template

log = structlog.get_logger(__name__)


async def stop(
    job: PullRequestJob, exc: RateLimitExceeded, run_id: int, evals_id: int | None, base_ref: str | None = None
) -> str:
    """Stopped at a rate limit it had no time to wait out: the check run completes as failed with the
    reason, never left in progress; with no quota left even for that, a job completes it after the reset."""
    reason = ratelimit.reason(exc, job.beat.left_s() if job.beat is not None else None)
    title = "evalbot stopped at GitHub's rate limit"
    summary = render_template("rate_limited.md.j2", reason=reason)
    if base_ref is not None:
        await block(job, base_ref, "failure", title, summary, reason)
    check_id = evals_id
    try:
        if check_id is None:
            check_id = await job.publisher.ensure_check(EVALS_CHECK, job.details_url)
        await job.publisher.complete(check_id, "failure", title, summary, rerun_button=True)
    except RateLimitExceeded as again:
        check = {"title": title, "summary": summary, "check_id": check_id}
        await complete_later(job.redis, again, job.repo, job.installation_id, job.pr_number, job.head_sha, **check)
    log.warning("stopped at GitHub's rate limit", repo=job.repo, pr=job.pr_number, reason=reason)
    metrics.JOBS.labels(result="rate-limited").inc()
    await asyncio.to_thread(job.store.end_run, run_id, "rate-limited")
    return "rate-limited"


async def complete_later(
    redis: Any, exc: RateLimitExceeded, repo: str, installation_id: int, pr_number: int, head_sha: str, **check: Any
) -> None:
    """Queue `complete_rate_limited` (`check`: its title, summary and check_id) for when GitHub takes
    requests again (a few seconds after)."""
    await redis.enqueue_job(
        complete_rate_limited.__name__,
        # One per stopped run: a later run on the same commit may stop at a later reset.
        _job_id=f"evalbot:rate-limited:{repo}:{pr_number}:{head_sha}:{time.time_ns()}",
        _defer_until=ratelimit.reset_at(exc) + timedelta(seconds=5),
        repo=repo,
        installation_id=installation_id,
        pr_number=pr_number,
        head_sha=head_sha,
        **check,
    )


async def complete_rate_limited(
    ctx: dict[str, Any],
    repo: str,
    installation_id: int,
    pr_number: int,
    head_sha: str,
    title: str,
    summary: str,
    check_id: int | None = None,
) -> str:
    """Complete the stopped run's `evalbot/evals` (`check_id`; None: it could not even be created) as
    failed, with the rate limit as its reason: the run could not (its quota was 0). A run started since
    on the same commit owns the check and is left alone. Still limited: again after the next reset.

    Returns:
        "completed", or "left to a newer run".
    """
    job = PullRequestJob.open(ctx, repo, installation_id, pr_number, head_sha)
    try:
        latest = await job.publisher.check_run(EVALS_CHECK)
        if latest is None:
            check_id = await job.publisher.ensure_check(EVALS_CHECK)
        elif int(latest["id"]) != check_id or latest.get("status") == "completed":
            return "left to a newer run"
        await job.publisher.complete(check_id, "failure", title, summary, rerun_button=True)
    except RateLimitExceeded as exc:
        raise Retry(defer=ratelimit.reset_at(exc) - datetime.now(UTC) + timedelta(seconds=5)) from exc
    return "completed"


complete_rate_limited_job = func(complete_rate_limited, timeout=SHORT_JOB_TIMEOUT_S, max_tries=24)
