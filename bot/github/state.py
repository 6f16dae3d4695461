"""What evalbot remembers in Redis: approvals bound to a head SHA, and the audit stream per repository."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from bot.github.constants import (
    APPROVAL_KEY,
    APPROVAL_TTL_S,
    AUDIT_DETAILS_CHARS,
    AUDIT_FIELD_CHARS,
    AUDIT_MAX_ENTRIES,
    AUDIT_READ_LAST,
    AUDIT_SCAN_ENTRIES,
    AUDIT_STREAM,
    GATE_NOTES_KEY,
    GATE_NOTES_TTL_S,
    REFUSALS_KEY,
    REFUSALS_PER_WINDOW,
    REFUSALS_WINDOW_S,
)


@dataclass(frozen=True)
class Approval:
    sha: str
    approver: str
    reason: str
    override: bool
    at: float
    # The base branch the lead saw the diff against: a retarget shows another diff, so it needs a new approval.
    base_ref: str = ""


async def get_approval(redis: Any, repo: str, pr: int, sha: str, base_ref: str) -> Approval | None:
    """The approval of `sha` against `base_ref`, if there is one: one of an older head SHA, or of the
    pull request before a retarget, does not count."""
    raw = await redis.get(APPROVAL_KEY.format(repo=repo, pr=pr))
    if raw is None:
        return None
    approval = Approval(**json.loads(raw))
    return approval if (approval.sha, approval.base_ref) == (sha, base_ref) else None


async def set_approval(redis: Any, repo: str, pr: int, approval: Approval) -> None:
    record = {**asdict(approval), "reason": _clip(approval.reason), "approver": _clip(approval.approver)}
    await redis.set(APPROVAL_KEY.format(repo=repo, pr=pr), json.dumps(record), ex=APPROVAL_TTL_S)


async def clear_approval(redis: Any, repo: str, pr: int) -> None:
    await redis.delete(APPROVAL_KEY.format(repo=repo, pr=pr))


async def set_gate_notes(redis: Any, repo: str, pr: int, sha: str, notes: dict[str, Any]) -> None:
    """Keep what the evaluation of `sha` found that the approval check must show and `/approve` must heed."""
    await redis.set(GATE_NOTES_KEY.format(repo=repo, pr=pr, sha=sha), json.dumps(notes), ex=GATE_NOTES_TTL_S)


async def get_gate_notes(redis: Any, repo: str, pr: int, sha: str) -> dict[str, Any]:
    """The notes of `sha`'s evaluation; empty when it had none (or was not evaluated)."""
    raw = await redis.get(GATE_NOTES_KEY.format(repo=repo, pr=pr, sha=sha))
    return {} if raw is None else dict(json.loads(raw))


async def audit(redis: Any, repo: str, kind: str, pr: int, sha: str, actor: str, **details: Any) -> None:
    """Append one record: kind (approval, override, cancel, refused, verdict, ...), who, when, what.

    Every text is clipped (AUDIT_FIELD_CHARS, AUDIT_DETAILS_CHARS) and the stream capped
    (AUDIT_MAX_ENTRIES): what users write cannot grow Redis without bound.
    """
    clipped = json.dumps(_clip_texts(details), sort_keys=True)
    if len(clipped) > AUDIT_DETAILS_CHARS:
        clipped = json.dumps({"clipped": clipped[: AUDIT_DETAILS_CHARS - 100]})
    fields = {
        "kind": _clip(kind),
        "pr": str(pr),
        "sha": _clip(sha),
        "actor": _clip(actor),
        "at": f"{time.time():.3f}",
        "details": clipped,
    }
    await redis.xadd(AUDIT_STREAM.format(repo=repo), fields, maxlen=AUDIT_MAX_ENTRIES, approximate=True)


async def audit_entries(
    redis: Any, repo: str, pr: int | None = None, last: int = AUDIT_READ_LAST
) -> list[dict[str, Any]]:
    """The newest `last` audit records of `repo` (of one pull request when `pr` is given), oldest first.

    Reads from the end of the stream (XREVRANGE with COUNT), never the whole of it: one pull
    request's records are looked for among the newest AUDIT_SCAN_ENTRIES.
    """
    count = last if pr is None else max(last, AUDIT_SCAN_ENTRIES)
    raw = await redis.xrevrange(AUDIT_STREAM.format(repo=repo), count=count)
    entries = []
    for entry_id, fields in raw:
        record = {_text(k): _text(v) for k, v in fields.items()}
        if pr is not None and record["pr"] != str(pr):
            continue
        entries.append(
            {
                "id": _text(entry_id),
                "kind": record["kind"],
                "pr": int(record["pr"]),
                "sha": record["sha"],
                "actor": record["actor"],
                "at": float(record["at"]),
                **json.loads(record["details"]),
            }
        )
        if len(entries) == last:
            break
    return entries[::-1]


async def refusal_allowed(redis: Any, repo: str, user: str) -> bool:
    """Count a refused command of `user` on `repo`; False past REFUSALS_PER_WINDOW in the window."""
    key = REFUSALS_KEY.format(repo=repo, user=user.casefold())
    # The window starts with the first refusal; INCR keeps the TTL that SET gave the key.
    await redis.set(key, 0, ex=REFUSALS_WINDOW_S, nx=True)
    return int(await redis.incr(key)) <= REFUSALS_PER_WINDOW


def _clip(text: str, limit: int = AUDIT_FIELD_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_texts(value: Any) -> Any:
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, dict):
        return {_clip(str(k)): _clip_texts(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clip_texts(v) for v in value]
    return value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
