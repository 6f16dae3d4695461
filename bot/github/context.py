"""What a job on a pull request's head SHA runs with: its GitHub client, its publisher, its heartbeat
and time cap, and `PullRequestJob`, which holds them for every flow (bot/github/flows/).

It sits above api/ and state/ and below every flow, so each imports it and none imports another's job context.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from redis.exceptions import RedisError

from bot.github.api.client import installation_client
from bot.github.api.publish import Publisher
from bot.github.api.redact import Redactor
from bot.github.constants import HEARTBEAT_INTERVAL_S, HEARTBEATS_KEY, JOB_TIMEOUT_CEILING_S, JOB_TIMEOUT_FLOOR_S
from bot.github.state import approvals
from bot.github.state.records import job_store, page_url, run_page_url
from bot.pipeline.render import render_template
from bot.settings import Settings
from bot.store import AuditEntry, Store

log = structlog.get_logger(__name__)

# Redis restarting or unreachable: a heartbeat or a bookkeeping step waits for it rather than failing.
REDIS_DOWN = (RedisError, OSError)

ClientFactory = Callable[[Settings, int], Any]


def github_client(ctx: dict[str, Any], installation_id: int) -> Any:
    """The installation's client: arq's `ctx["github_factory"]` (tests) or `installation_client`, through
    the installation's limiter in the worker's Redis."""
    factory: ClientFactory | None = ctx.get("github_factory")
    if factory is not None:
        return factory(ctx["settings"], installation_id)
    return installation_client(ctx["settings"], installation_id, redis=ctx.get("redis"))


def publisher_for(
    settings: Settings, gh: Any, repo: str, pr_number: int, head_sha: str, redact: Redactor | None = None
) -> Publisher:
    """The publisher of `head_sha`'s checks (and pull request `pr_number`'s comment; 0: none), as this app."""
    owner, name = repo.split("/", 1)
    return Publisher(gh, owner, name, pr_number, head_sha, settings.APP_ID, redact or Redactor.for_settings(settings))


def planned_cap_s(calls: int, settings: Settings) -> float:
    """An evaluation's time cap: its calls at the expected latency, `EVALBOT_CONCURRENCY` at a time,
    never under the floor (start-up, slow providers) nor over the ceiling."""
    planned = calls * settings.EVALBOT_EXPECTED_CALL_S / max(1, settings.EVALBOT_CONCURRENCY)
    return float(min(JOB_TIMEOUT_CEILING_S, max(JOB_TIMEOUT_FLOOR_S, planned)))


class Heartbeat:
    """One running evaluation's record in Redis, renewed every HEARTBEAT_INTERVAL_S, and its time cap.

    The record is removed whenever the job ends in its worker (finished, failed, aborted, handed
    over), so a record left to go stale means the worker itself is gone.
    """

    def __init__(self, ctx: dict[str, Any], kwargs: dict[str, Any]):
        self.redis = ctx["redis"]
        self.settings: Settings = ctx["settings"]
        self.job_id: str = ctx.get("job_id", "")
        job_try = int(ctx.get("job_try", 1))
        self.record = {
            # Tells this run's record from the next run's of the same job id.
            "token": f"{socket.gethostname()}:{os.getpid()}:{job_try}:{time.time_ns()}",
            "repo": kwargs["repo"],
            "installation_id": kwargs["installation_id"],
            "pr_number": kwargs["pr_number"],
            "head_sha": kwargs["head_sha"],
            "job_try": job_try,
        }
        self.cap_s = float(JOB_TIMEOUT_CEILING_S)
        self.cap: asyncio.Timeout | None = None
        self._started = 0.0
        self._planned = False
        self._task: asyncio.Task[None] | None = None

    def plan(self, calls: int) -> None:
        """Cap the run at its planned time, counted from its start (known once its calls are)."""
        if self._planned or self.cap is None:
            return
        self._planned = True
        self.cap_s = planned_cap_s(calls, self.settings)
        self.cap.reschedule(self._started + self.cap_s)

    def left_s(self) -> float:
        """Seconds until the run's time cap. Before its calls are known, the cap may still be planned down
        to the floor: until then the time left is counted to the floor."""
        deadline = self.cap.when() if self.cap is not None else None
        if deadline is None:
            return self.cap_s if self._planned else float(JOB_TIMEOUT_FLOOR_S)
        if not self._planned:
            deadline = min(deadline, self._started + JOB_TIMEOUT_FLOOR_S)
        return deadline - asyncio.get_running_loop().time()

    async def published(self) -> None:
        """The run's results are on GitHub: if its worker is lost now, nothing needs running again."""
        self.record["published"] = True
        await self._beat()

    def expired(self) -> bool:
        return self.cap is not None and self.cap.expired()

    async def _beat(self) -> None:
        try:
            seconds, micros = await self.redis.time()
            beat = json.dumps({**self.record, "beat_at": seconds + micros / 1e6})
            await self.redis.hset(HEARTBEATS_KEY, self.job_id, beat)
        except REDIS_DOWN as exc:
            # Redis restarting: the run goes on; the watchdog does not judge across a restart.
            log.warning("heartbeat not written", job_id=self.job_id, error=type(exc).__name__)

    async def _beating(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)
            await self._beat()

    async def __aenter__(self) -> Heartbeat:
        self._started = asyncio.get_running_loop().time()
        await self._beat()
        self._task = asyncio.create_task(self._beating())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(*REDIS_DOWN):
            raw = await self.redis.hget(HEARTBEATS_KEY, self.job_id)
            if raw is not None and json.loads(raw)["token"] == self.record["token"]:
                await self.redis.hdel(HEARTBEATS_KEY, self.job_id)


@dataclass
class PullRequestJob:
    """What every job on one pull request's head SHA needs: clients, names and where to post."""

    settings: Settings
    redis: Any
    store: Store
    gh: Any
    repo: str
    owner: str
    name: str
    installation_id: int
    pr_number: int
    head_sha: str
    publisher: Publisher
    details_url: str | None
    # The running job's heartbeat and time cap (None outside a watched job).
    beat: Heartbeat | None = None

    @classmethod
    def open(
        cls, ctx: dict[str, Any], repo: str, installation_id: int, pr_number: int, head_sha: str, gh: Any = None
    ) -> PullRequestJob:
        settings: Settings = ctx["settings"]
        owner, name = repo.split("/", 1)
        gh = gh or github_client(ctx, installation_id)
        details_url = page_url(settings)
        publisher = publisher_for(settings, gh, repo, pr_number, head_sha)
        store = job_store(ctx)
        return cls(
            settings,
            ctx["redis"],
            store,
            gh,
            repo,
            owner,
            name,
            installation_id,
            pr_number,
            head_sha,
            publisher,
            details_url,
            ctx.get("liveness"),
        )

    async def link_latest_run(self) -> None:
        """Checks published after the run (an approval, a closed pull request's head) link to the
        page of the head's latest run rather than to evalbot's front page."""
        run_id = await asyncio.to_thread(self.store.latest_run_id, self.repo, self.pr_number, self.head_sha)
        if run_id is not None:
            page_id = await asyncio.to_thread(self.store.public_id, run_id)
            self.details_url = run_page_url(self.settings, page_id) or self.details_url

    async def audit(self, kind: str, actor: str, **details: Any) -> AuditEntry:
        """Record an event in the durable trail; callers publish what it records only after this returns."""
        return await approvals.audit(self.store, self.repo, kind, self.pr_number, self.head_sha, actor, **details)

    async def approval_summary(self, state_name: str, approvers: list[str], pr: int | None = None, **data: Any) -> str:
        number = pr or self.pr_number
        audit = await approvals.audit_entries(self.store, self.repo, number, last=20)
        # Inconclusive breaches and a rewritten exam go at the top of whatever the approval check says.
        notes = await approvals.get_gate_notes(self.redis, self.repo, number, self.head_sha)
        return render_template(
            "approval.md.j2",
            state=state_name,
            head_sha=self.head_sha,
            approvers=approvers,
            audit=audit,
            notes=notes,
            **data,
        )
