"""What a pull request's approval rests on: the durable audit trail (bot/store), read and written off
the event loop. Redis keeps only what is transient (deliveries, heads, refusal counts, the queue, the
cache)."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.github.constants import REFUSALS_KEY, REFUSALS_PER_WINDOW, REFUSALS_WINDOW_S
from bot.store import AUDIT_READ_LAST, Approval, AuditEntry, Store

__all__ = ["Approval", "audit", "audit_entries", "get_approval", "refusal_allowed"]


async def get_approval(store: Store, repo: str, pr: int, sha: str) -> Approval | None:
    """The approval of `sha`, if there is one: an approval of an older head SHA does not count."""
    return await asyncio.to_thread(store.approval, repo, pr, sha)


async def audit(store: Store, repo: str, kind: str, pr: int, sha: str, actor: str, **details: Any) -> AuditEntry:
    """Append one record: kind (approval, override, cancel, refused, verdict, ...), who, when, what.

    An approval or override is this record itself: once it is written, the approval exists. The store
    clips every text a user wrote, so a 65,536-character comment cannot grow the trail without bound.
    """
    return await asyncio.to_thread(store.append_audit, repo, kind, actor, pr=pr, sha=sha, **details)


async def audit_entries(
    store: Store, repo: str, pr: int | None = None, last: int = AUDIT_READ_LAST
) -> list[AuditEntry]:
    """The newest `last` audit records of `repo` (of one pull request when `pr` is given), oldest first."""
    return await asyncio.to_thread(store.audit_entries, repo, pr, last)


async def refusal_allowed(redis: Any, repo: str, user: str) -> bool:
    """Count a refused command of `user` on `repo`; False past REFUSALS_PER_WINDOW in the window."""
    key = REFUSALS_KEY.format(repo=repo, user=user.casefold())
    # The window starts with the first refusal; INCR keeps the TTL that SET gave the key.
    await redis.set(key, 0, ex=REFUSALS_WINDOW_S, nx=True)
    return int(await redis.incr(key)) <= REFUSALS_PER_WINDOW
