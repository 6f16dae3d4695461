"""What evalbot remembers in Redis: approvals bound to a head SHA, and the audit stream per repository."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from bot.github.constants import APPROVAL_KEY, AUDIT_MAX_ENTRIES, AUDIT_STREAM


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
    await redis.set(APPROVAL_KEY.format(repo=repo, pr=pr), json.dumps(asdict(approval)))


async def clear_approval(redis: Any, repo: str, pr: int) -> None:
    await redis.delete(APPROVAL_KEY.format(repo=repo, pr=pr))


async def audit(redis: Any, repo: str, kind: str, pr: int, sha: str, actor: str, **details: Any) -> None:
    """Append one record: kind (approval, override, cancel, refused, verdict, ...), who, when, what."""
    fields = {
        "kind": kind,
        "pr": str(pr),
        "sha": sha,
        "actor": actor,
        "at": f"{time.time():.3f}",
        "details": json.dumps(details, sort_keys=True),
    }
    await redis.xadd(AUDIT_STREAM.format(repo=repo), fields, maxlen=AUDIT_MAX_ENTRIES, approximate=True)


async def audit_entries(redis: Any, repo: str, pr: int | None = None, last: int | None = None) -> list[dict[str, Any]]:
    """Audit records of `repo` (of one pull request when `pr` is given), oldest first."""
    raw = await redis.xrange(AUDIT_STREAM.format(repo=repo))
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
    return entries[-last:] if last else entries


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
