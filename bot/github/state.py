"""What a pull request's approval rests on: the durable audit trail (bot/store), read and written off
the event loop. Redis keeps only what is transient (deliveries, heads, the queue, the cache)."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.store import Approval, AuditEntry, Store

__all__ = ["Approval", "audit", "audit_entries", "get_approval"]


async def get_approval(store: Store, repo: str, pr: int, sha: str) -> Approval | None:
    """The approval of `sha`, if there is one: an approval of an older head SHA does not count."""
    return await asyncio.to_thread(store.approval, repo, pr, sha)


async def audit(store: Store, repo: str, kind: str, pr: int, sha: str, actor: str, **details: Any) -> AuditEntry:
    """Append one record: kind (approval, override, cancel, refused, verdict, ...), who, when, what.

    An approval or override is this record itself: once it is written, the approval exists.
    """
    return await asyncio.to_thread(store.append_audit, repo, kind, actor, pr=pr, sha=sha, **details)


async def audit_entries(store: Store, repo: str, pr: int | None = None, last: int | None = None) -> list[AuditEntry]:
    """Audit records of `repo` (of one pull request when `pr` is given), oldest first."""
    return await asyncio.to_thread(store.audit_entries, repo, pr, last)
