"""Verdicts: each pull request's result on a head SHA, kept in Redis by the SHA, and which of them
counts for a pull request against its base (its own, or a finished one it shares)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from bot.github.api.publish import Conclusion
from bot.github.constants import VERDICT_KEY, VERDICT_TTL_S
from bot.github.state import approvals
from bot.store import Approval, Store

# What a pull request needs from a lead: nothing, an approval, or first something else (a writer's
# `/eval`, a finished evaluation, a readable base policy) before anything can be approved.
ApprovalNeed = Literal["not_needed", "needed", "untrusted", "blocked"]


@dataclass(frozen=True)
class PullVerdict:
    """One pull request's result on a head SHA, as its job published it."""

    pr: int
    base_ref: str
    evals: Conclusion
    title: str
    summary: str
    approval: ApprovalNeed
    # For the approval check while this pull request waits: what changed, whether evals failed, and
    # why nothing can be approved (`blocked`).
    suites: list[str] = field(default_factory=list)
    evals_failed: bool = False
    tradeoffs: str = ""
    reason: str = ""
    # The report's annotations (capped by `cap_annotations`) and how many more it has.
    notes: list[dict[str, Any]] = field(default_factory=list)
    more_notes: int = 0
    # Policy keys the pull request changes (key, base, head): only a base approver other than its author approves.
    policy_changes: list[dict[str, str]] = field(default_factory=list)


async def store_verdict(redis: Any, repo: str, sha: str, verdict: PullVerdict) -> None:
    key = VERDICT_KEY.format(repo=repo, sha=sha)
    await redis.hset(key, str(verdict.pr), json.dumps(asdict(verdict)))
    await redis.expire(key, VERDICT_TTL_S)


async def verdicts_on(redis: Any, repo: str, sha: str) -> dict[int, PullVerdict]:
    """Every stored verdict on `sha`, by pull request."""
    raw = await redis.hgetall(VERDICT_KEY.format(repo=repo, sha=sha))
    return {int(pr): PullVerdict(**json.loads(value)) for pr, value in raw.items()}


# An evaluation that finished: what another pull request with the same head and base may share.
_FINISHED = ("needed", "not_needed")


def finished(verdict: PullVerdict | None) -> bool:
    """Whether `verdict` is a finished evaluation (one that can be shared, approved or passed)."""
    return verdict is not None and verdict.approval in _FINISHED


def for_base(verdicts: dict[int, PullVerdict], pr: int, base_ref: str) -> PullVerdict | None:
    """The verdict that counts for pull request `pr` against `base_ref`: its own finished evaluation,
    else the first finished one of another pull request with the same head and base (a verdict belongs
    to the commit and the base it was evaluated against), else its own unfinished one."""
    own = verdicts.get(pr)
    if own is not None and own.base_ref == base_ref and own.approval in _FINISHED:
        return own
    shared = [v for n, v in sorted(verdicts.items()) if v.base_ref == base_ref and v.approval in _FINISHED]
    if shared:
        return shared[0]
    return own if own is not None and own.base_ref == base_ref else None


async def verdict_for(redis: Any, repo: str, sha: str, pr: int, base_ref: str) -> PullVerdict | None:
    """The verdict that counts for pull request `pr` at `sha` against `base_ref` (see `for_base`)."""
    return for_base(await verdicts_on(redis, repo, sha), pr, base_ref)


async def shared_by_another(redis: Any, repo: str, sha: str, pr: int, base_ref: str) -> PullVerdict | None:
    """A finished evaluation of `sha` against `base_ref` by another pull request: nothing to run again."""
    verdict = await verdict_for(redis, repo, sha, pr, base_ref)
    return verdict if verdict is not None and verdict.pr != pr and verdict.approval in _FINISHED else None


async def approval_for(store: Store, repo: str, prs: list[int], sha: str, verdict: PullVerdict) -> Approval | None:
    """The approval of `sha` against the verdict's base, given on any of `prs` (a pull request first, then
    those sharing its evaluation) or on the pull request whose evaluation it is."""
    for pr in dict.fromkeys([*prs, verdict.pr]):
        approval = await approvals.get_approval(store, repo, pr, sha, verdict.base_ref)
        if approval is not None:
            return approval
    return None
