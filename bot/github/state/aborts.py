"""Superseded work is cancelled: a push or a close aborts the pull request's evaluations of older heads.

The web process notes each evaluation it (or a `/eval`) enqueues, by pull request and head SHA. On
`synchronize` it aborts those of other SHAs, on `closed` all of them, with arq's abort (the worker
cancels a running job's task; a queued one never starts), and records why, so that the job closes its
check run `cancelled` with that reason. Answers already received stay in the response cache. The web
process never calls GitHub: `cancel_checks` (bot/github/flows/cancelled.py), a job, closes the check
runs an aborted job cannot (it never started, or a lost worker left its run open).

`enqueue_evaluation` queues the evaluation by its registered name, `EVALUATE_JOB` (checked by
tests/github/test_registry.py): state/ sits below the flows and cannot import the job itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from arq.constants import abort_jobs_ss, default_queue_name, result_key_prefix
from arq.utils import timestamp_ms

from bot.github.constants import EVALUATE_JOB, PR_JOBS_KEY, PR_JOBS_TTL_S, SUPERSEDED_KEY, SUPERSEDED_TTL_S
from bot.pipeline.render import render_template


@dataclass(frozen=True)
class Reason:
    """Why a pull request's evaluations stop: a new head `by`, or (None) the pull request was closed."""

    by: str | None = None

    @property
    def title(self) -> str:
        return f"superseded by {self.by[:7]}" if self.by else "pull request closed"

    def summary(self, head_sha: str) -> str:
        return render_template("cancelled.md.j2", head_sha=head_sha, by=self.by)


@dataclass(frozen=True)
class Supersede:
    """What a delivery cancels: pull request `pr`'s evaluations of every SHA but `keep_sha`."""

    repo: str
    installation_id: int
    pr: int
    keep_sha: str | None
    reason: Reason


def superseding(event: str, payload: dict[str, Any]) -> Supersede | None:
    """What a `pull_request` delivery cancels: on `synchronize` all but the new head, on `closed` all."""
    action = payload.get("action")
    if event != "pull_request" or "installation" not in payload or action not in ("synchronize", "closed"):
        return None
    pr = payload["pull_request"]
    keep = str(pr["head"]["sha"]) if action == "synchronize" else None
    number, installation_id = int(pr["number"]), int(payload["installation"]["id"])
    return Supersede(payload["repository"]["full_name"], installation_id, number, keep, Reason(by=keep))


async def track(redis: Any, repo: str, pr: int, job_id: str, head_sha: str) -> None:
    """Note an evaluation of `head_sha` enqueued for pull request `pr`."""
    key = PR_JOBS_KEY.format(repo=repo, pr=pr)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, job_id, head_sha)
        pipe.expire(key, PR_JOBS_TTL_S)
        await pipe.execute()


async def enqueue_evaluation(
    redis: Any, job_id: str, repo: str, installation_id: int, pr_number: int, head_sha: str, **options: Any
) -> None:
    """Queue `evaluate_pull_request` of pull request `pr_number` at `head_sha` (`options`: `trusted`,
    `only`, ...), noted so that a push or a close can abort it."""
    await track(redis, repo, pr_number, job_id, head_sha)
    await redis.enqueue_job(
        EVALUATE_JOB,
        _job_id=job_id,
        repo=repo,
        installation_id=installation_id,
        pr_number=pr_number,
        head_sha=head_sha,
        **options,
    )


async def fresh_id(redis: Any, job_id: str, suffix: str) -> str:
    """`job_id`, or a new one when a job of that id was aborted: arq keeps the aborted job's result
    (and may keep its abort request), which would drop or abort the same head evaluated again."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(SUPERSEDED_KEY.format(job_id=job_id))
        pipe.zscore(abort_jobs_ss, job_id)
        marked, aborting = await pipe.execute()
    return f"{job_id}:again:{suffix}" if marked or aborting is not None else job_id


async def supersede(redis: Any, cancel: Supersede) -> dict[str, str]:
    """Abort the noted evaluations of pull request `cancel.pr` on SHAs other than `cancel.keep_sha`.

    Returns:
        The aborted jobs still queued or running: job id -> head SHA.
    """
    key = PR_JOBS_KEY.format(repo=cancel.repo, pr=cancel.pr)
    noted = {_text(k): _text(v) for k, v in (await redis.hgetall(key)).items()}
    stale = {job_id: sha for job_id, sha in noted.items() if sha != cancel.keep_sha}
    if not stale:
        return {}
    live = await _live(redis, stale)
    now_ms = timestamp_ms()
    reason = json.dumps({"by": cancel.reason.by})
    async with redis.pipeline(transaction=True) as pipe:
        for job_id, (_sha, score) in live.items():
            pipe.set(SUPERSEDED_KEY.format(job_id=job_id), reason, ex=SUPERSEDED_TTL_S)
            # arq's `Job.abort()` without waiting for the job's result (it polls every 0.5 s; the web
            # process answers GitHub at once): a deferred job is moved forward to be dropped now.
            if score > now_ms:
                pipe.zadd(default_queue_name, {job_id: 1})
            pipe.zadd(abort_jobs_ss, {job_id: now_ms})
        pipe.hdel(key, *stale)
        await pipe.execute()
    return {job_id: sha for job_id, (sha, _score) in live.items()}


async def _live(redis: Any, jobs: dict[str, str]) -> dict[str, tuple[str, float]]:
    """Of `jobs` (job id -> head SHA), those queued or running: job id -> (head SHA, queue score)."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in jobs:
            pipe.exists(result_key_prefix + job_id)
            pipe.zscore(default_queue_name, job_id)
        found = await pipe.execute()
    # arq keeps a job in its queue while it runs, and removes it when it stores the result.
    return {
        job_id: (sha, score)
        for (job_id, sha), done, score in zip(jobs.items(), found[::2], found[1::2], strict=True)
        if not done and score is not None
    }


async def evaluation_under_way(redis: Any, repo: str, pr: int, head_sha: str) -> str | None:
    """The id of a queued or running evaluation of pull request `pr` at `head_sha`, if there is one."""
    noted = {_text(k): _text(v) for k, v in (await redis.hgetall(PR_JOBS_KEY.format(repo=repo, pr=pr))).items()}
    live = await _live(redis, {job_id: sha for job_id, sha in noted.items() if sha == head_sha})
    return next(iter(sorted(live)), None)


async def abort_reason(redis: Any, job_id: str) -> Reason | None:
    """Why job `job_id` was aborted; None when it was not."""
    raw = await redis.get(SUPERSEDED_KEY.format(job_id=job_id)) if job_id else None
    return None if raw is None else Reason(**json.loads(raw))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
