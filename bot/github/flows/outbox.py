"""A finished report GitHub did not take (down, or unreachable, after githubkit's retries): kept in Redis
for a day and published by a job of its own, with backoff, from the verdicts already stored — the
evaluation is never run again for it."""

from __future__ import annotations

import json
import time
from typing import Any

import structlog
from arq import Retry
from arq.worker import func
from githubkit.exception import GitHubException, RequestError, RequestFailed

from bot.github.api.source import get_pull_request
from bot.github.constants import OUTBOX_KEY, OUTBOX_TTL_S, SHORT_JOB_TIMEOUT_S
from bot.github.context import PullRequestJob
from bot.github.flows.gate import publish_sha

log = structlog.get_logger(__name__)

# Publishing is tried again after 10 s, doubling up to every 15 minutes, for as long as the report is kept.
FIRST_RETRY_S = 10
MAX_RETRY_S = 15 * 60
MAX_TRIES = 6 + OUTBOX_TTL_S // MAX_RETRY_S


def backoff_s(attempt: int) -> int:
    """Seconds before publishing attempt `attempt + 1` (the first attempt is the evaluation's own)."""
    return int(min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** (attempt - 1)))


def unavailable(exc: GitHubException) -> bool:
    """GitHub down or unreachable (5xx, a timeout, a refused connection), not refusing (4xx)."""
    return isinstance(exc, RequestError) or (isinstance(exc, RequestFailed) and exc.response.status_code >= 500)


def _key(job: PullRequestJob) -> str:
    return OUTBOX_KEY.format(repo=job.repo, pr=job.pr_number, sha=job.head_sha)


async def _publish(job: PullRequestJob, pull: dict[str, Any], evals_id: int, comment: str | None) -> None:
    await publish_sha(job, pull, evals_id)
    if comment is not None:
        await job.publisher.upsert_comment(comment)
    # Published: a report kept from an earlier attempt is out of date.
    await job.redis.delete(_key(job))


async def deliver(job: PullRequestJob, pull: dict[str, Any], evals_id: int, comment: str | None) -> bool:
    """Publish the SHA's checks from the stored verdicts and the sticky comment; when GitHub is
    unavailable, keep them and queue `publish_outbox`. True when published now."""
    try:
        await _publish(job, pull, evals_id, comment)
    except GitHubException as exc:
        if not unavailable(exc):
            raise
        entry = {"evals_id": evals_id, "comment": comment}
        await job.redis.set(_key(job), json.dumps(entry), ex=OUTBOX_TTL_S)
        await job.redis.enqueue_job(
            publish_outbox.__name__,
            _job_id=f"{_key(job)}:{time.time_ns()}",
            _defer_by=backoff_s(1),
            repo=job.repo,
            installation_id=job.installation_id,
            pr_number=job.pr_number,
            head_sha=job.head_sha,
        )
        log.warning("GitHub unavailable: report kept", repo=job.repo, pr=job.pr_number, error=str(exc))
        return False
    return True


async def publish_outbox(ctx: dict[str, Any], repo: str, installation_id: int, pr_number: int, head_sha: str) -> str:
    """Publish a kept report; GitHub still unavailable: try again later (arq `Retry`, with backoff).

    Returns:
        "published", or "nothing to publish" when it was published (or expired) meanwhile.
    """
    job = PullRequestJob.open(ctx, repo, installation_id, pr_number, head_sha)
    raw = await job.redis.get(_key(job))
    if raw is None:
        return "nothing to publish"
    entry = json.loads(raw)
    try:
        pull = await get_pull_request(job.gh, job.owner, job.name, pr_number)
        await _publish(job, pull, int(entry["evals_id"]), entry["comment"])
    except GitHubException as exc:
        if not unavailable(exc):
            raise
        attempt = int(ctx.get("job_try", 1)) + 1
        log.warning("GitHub still unavailable", repo=repo, pr=pr_number, attempt=attempt, error=str(exc))
        raise Retry(defer=backoff_s(attempt)) from exc
    return "published"


publish_outbox_job = func(publish_outbox, max_tries=MAX_TRIES, timeout=SHORT_JOB_TIMEOUT_S)
