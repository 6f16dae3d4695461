"""What a pull request's approval rests on: the durable audit trail (bot/store), read and written off
the event loop; refusal counts, the gate notes of an evaluated head and the pull requests of a head in Redis."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bot.github.constants import (
    GATE_NOTES_KEY,
    GATE_NOTES_TTL_S,
    HELP_KEY,
    HELP_WINDOW_S,
    REFUSALS_KEY,
    REFUSALS_PER_WINDOW,
    REFUSALS_WINDOW_S,
    SHA_PULLS_KEY,
    SHA_PULLS_TTL_S,
)
from bot.store import AUDIT_READ_LAST, Approval, AuditEntry, Store

__all__ = [
    "Approval",
    "audit",
    "audit_entries",
    "get_approval",
    "get_gate_notes",
    "note_pull",
    "noted_pulls",
    "refusal_allowed",
    "set_gate_notes",
]


async def get_approval(store: Store, repo: str, pr: int, sha: str, base_ref: str) -> Approval | None:
    """The approval of `sha` against `base_ref`, if there is one: one of an older head SHA, or of the
    pull request before a retarget, does not count."""
    return await asyncio.to_thread(store.approval, repo, pr, sha, base_ref)


async def set_gate_notes(redis: Any, repo: str, pr: int, sha: str, notes: dict[str, Any]) -> None:
    """Keep what the evaluation of `sha` found that the approval check must show and `/approve` must heed."""
    await redis.set(GATE_NOTES_KEY.format(repo=repo, pr=pr, sha=sha), json.dumps(notes), ex=GATE_NOTES_TTL_S)


async def get_gate_notes(redis: Any, repo: str, pr: int, sha: str) -> dict[str, Any]:
    """The notes of `sha`'s evaluation; empty when it had none (or was not evaluated)."""
    raw = await redis.get(GATE_NOTES_KEY.format(repo=repo, pr=pr, sha=sha))
    return {} if raw is None else dict(json.loads(raw))


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


async def help_allowed(redis: Any, repo: str, pr: int, user: str) -> bool:
    """Whether `user`'s `/help` on pull request `pr` is to be answered: the first in HELP_WINDOW_S."""
    key = HELP_KEY.format(repo=repo, pr=pr, user=user.casefold())
    return bool(await redis.set(key, 1, ex=HELP_WINDOW_S, nx=True))


async def note_pull(redis: Any, repo: str, sha: str, pr: int, base_ref: str) -> None:
    """Note that pull request `pr` (into `base_ref`) has head `sha`: GitHub's list of open pull requests
    can lag a delivery, and a SHA's checks must count every pull request with that head."""
    key = SHA_PULLS_KEY.format(repo=repo, sha=sha)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, str(pr), base_ref)
        pipe.expire(key, SHA_PULLS_TTL_S)
        await pipe.execute()


async def noted_pulls(redis: Any, repo: str, sha: str) -> set[int]:
    """The pull requests noted with head `sha` (some may have moved on or closed since)."""
    return {int(pr) for pr in await redis.hkeys(SHA_PULLS_KEY.format(repo=repo, sha=sha))}
