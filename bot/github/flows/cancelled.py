"""A cancelled run: an evaluation aborted by a push or a close (bot/github/state/aborts.py) closes its
check run `cancelled` with the reason and leaves a blocking verdict on the SHA; `cancel_checks` closes
those an aborted job could not (it never started, or its worker was lost). When the SHA is still an
open pull request's head, it is evaluated again or published from that pull request's verdict instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from bot.github import metrics
from bot.github.api.publish import Publisher
from bot.github.api.redact import Redactor
from bot.github.api.source import open_pulls_with_head
from bot.github.constants import EVALS_CHECK, eval_job_id
from bot.github.context import PullRequestJob, github_client, publisher_for
from bot.github.flows.gate import block, publish_head
from bot.github.state import aborts
from bot.settings import Settings

log = structlog.get_logger(__name__)


async def aborted(
    ctx: dict[str, Any], job: PullRequestJob, evals_id: int | None, base_ref: str | None, run_id: int
) -> bool:
    """Whether the job was aborted (a push superseded its head, or its pull request was closed); if so,
    it is cancelled (`cancel_run`)."""
    reason = await asyncio.shield(aborts.abort_reason(job.redis, ctx.get("job_id", "")))
    if reason is None:
        return False
    await cancel_run(job, reason, evals_id, base_ref, run_id)
    return True


async def cancel_run(
    job: PullRequestJob, reason: aborts.Reason, evals_id: int | None, base_ref: str | None, run_id: int
) -> None:
    """Complete the check run `cancelled` with the reason and make the verdict on the SHA block: the run
    did not finish, so nothing on this SHA may pass on it. Shielded: the task may be being cancelled."""
    summary = reason.summary(job.head_sha)
    with contextlib.suppress(Exception):
        if base_ref is not None:
            await asyncio.shield(block(job, base_ref, "cancelled", reason.title, summary, reason.title))
        closing = complete_cancelled(job.redis, job.installation_id, job.publisher, reason, evals_id)
        await asyncio.shield(closing)
        await asyncio.shield(asyncio.to_thread(job.store.end_run, run_id, "cancelled"))
    metrics.JOBS.labels(result="cancelled").inc()
    log.info("evaluation cancelled", repo=job.repo, pr=job.pr_number, sha=job.head_sha[:7], reason=reason.title)


async def complete_cancelled(
    redis: Any, installation_id: int, publisher: Publisher, reason: aborts.Reason, check_id: int | None = None
) -> bool:
    """Complete the evals check run on `publisher`'s SHA `cancelled`, unless it is completed already.
    When another open pull request has that head, the SHA's checks are published from its verdict
    instead (`publish_head`, which also has it evaluated if it was not); when it is still this pull
    request's head, it is evaluated again.

    Returns:
        Whether the check run was completed `cancelled` here.
    """
    repo, sha = f"{publisher.owner}/{publisher.repo}", publisher.head_sha
    pulls = await open_pulls_with_head(publisher.gh, publisher.owner, publisher.repo, sha)
    if any(int(p["number"]) == publisher.pr_number for p in pulls):
        # Still this open pull request's head: what aborted it was an older push delivered late (or
        # delivered again). Its evaluation starts again, answers already made coming from the cache.
        job_id = f"{eval_job_id(repo, publisher.pr_number, sha)}:again:{time.time_ns()}"
        await aborts.enqueue_evaluation(redis, job_id, repo, installation_id, publisher.pr_number, sha)
        return False
    if any(int(p["number"]) != publisher.pr_number for p in pulls):
        await redis.enqueue_job(
            publish_head.__name__,
            _job_id=f"evalbot:publish:{repo}:{sha}:cancelled:{publisher.pr_number}:{time.time_ns()}",
            repo=repo,
            installation_id=installation_id,
            head_sha=sha,
        )
        return False
    if check_id is None:
        run = await publisher.check_run(EVALS_CHECK)
        if run is None or run.get("status") == "completed":
            return False
        check_id = int(run["id"])
    await publisher.complete(check_id, "cancelled", reason.title, reason.summary(publisher.head_sha))
    return True


async def cancel_checks(
    ctx: dict[str, Any], repo: str, installation_id: int, pr_number: int, shas: list[str], by: str | None
) -> str:
    """arq job: complete `cancelled` the evals check runs left open on the aborted jobs' SHAs.

    Returns:
        How many check runs it completed, e.g. "cancelled 1".
    """
    settings: Settings = ctx["settings"]
    gh = github_client(ctx, installation_id)
    redact = Redactor.for_settings(settings)
    done = 0
    for sha in shas:
        publisher = publisher_for(settings, gh, repo, pr_number, sha, redact)
        done += await complete_cancelled(ctx["redis"], installation_id, publisher, aborts.Reason(by=by))
    return f"cancelled {done}"
