"""The pure decisions of two flows, without GitHub or Redis: what an approver's `/approve` is
(`commands.decide`) and what a pull request's evalbot/approval check says (`gate.decide`)."""

from __future__ import annotations

from typing import Any

import pytest

from bot.github.flows import commands, gate
from bot.github.flows.command_line import Command, Refusal
from bot.github.state.verdicts import PullVerdict
from bot.pipeline.config import Config
from bot.store import Approval

HEAD = "a" * 40
POLICY_CHANGE = [{"key": "approvers", "base": "[lead]", "head": "[author]"}]


def verdict(evals: Any = "success", approval: Any = "needed", **extra: Any) -> PullVerdict:
    return PullVerdict(7, "main", evals, "title", "summary", approval, **extra)


def approve(
    actor: str = "lead",
    found: PullVerdict | None = None,
    notes: dict[str, Any] | None = None,
    reason: str = "",
    self_approval: bool = False,
) -> str | Refusal:
    command = Command("approve", reason=reason)
    policy = Config(approvers=["lead", "author"], allow_self_approval=self_approval)
    found = verdict() if found is None else found
    return commands.decide(command, actor, "Author", HEAD, "main", found, notes or {}, policy)


def test_an_approvers_approve_of_a_passing_head_is_an_approval() -> None:
    assert approve() == "approval"


def test_the_author_cannot_approve_unless_self_approval_is_allowed() -> None:
    refused = approve(actor="author")
    assert isinstance(refused, Refusal) and "allow_self_approval" in refused.reason
    assert approve(actor="author", self_approval=True) == "approval"


def test_the_author_cannot_approve_a_policy_change_even_with_self_approval() -> None:
    refused = approve(actor="AUTHOR", found=verdict(policy_changes=POLICY_CHANGE), self_approval=True)
    assert isinstance(refused, Refusal) and "change to the policy" in refused.reason


@pytest.mark.parametrize("found", [verdict(approval="untrusted"), verdict(approval="blocked", reason="no policy")])
def test_nothing_unfinished_is_approved(found: PullVerdict) -> None:
    refused = approve(found=found)
    assert isinstance(refused, Refusal) and "has not finished" in refused.reason


def test_an_approval_against_another_base_is_refused() -> None:
    other = PullVerdict(7, "release", "success", "title", "summary", "needed")
    assert isinstance(approve(found=other), Refusal)


@pytest.mark.parametrize(
    ("found", "notes"),
    [(verdict(evals="failure"), {}), (verdict(), {"inconclusive": [{"suite": "qa"}]})],
)
def test_a_failed_or_inconclusive_head_needs_a_reason_and_is_an_override(
    found: PullVerdict, notes: dict[str, Any]
) -> None:
    refused = approve(found=found, notes=notes)
    assert isinstance(refused, Refusal) and "needs a reason" in refused.reason
    assert approve(found=found, notes=notes, reason="known flake") == "override"


def lead_approval(approver: str = "lead", override: bool = False) -> Approval:
    return Approval(HEAD, approver, "", override, 0.0, "main")


def test_the_check_passes_on_an_approval_by_a_current_approver() -> None:
    decision = gate.decide(verdict(), lead_approval(override=True), True, "author", False)
    assert (decision.approved, decision.title, decision.state) == (True, "Approved by lead (override)", "approved")


def test_an_approval_by_someone_no_longer_an_approver_does_not_count() -> None:
    decision = gate.decide(verdict(), lead_approval(), False, "author", False)
    assert not decision.approved and "no longer counts" in decision.title
    assert decision.data["revoked"] == "lead"


def test_the_authors_own_approval_counts_only_where_self_approval_is_allowed() -> None:
    own = lead_approval(approver="Author")
    refused = gate.decide(verdict(), own, True, "author", False)
    assert not refused.approved and refused.data["by_author"] and "does not count" in refused.title
    assert gate.decide(verdict(), own, True, "author", True).approved
    policy_change = gate.decide(verdict(policy_changes=POLICY_CHANGE), own, True, "author", True)
    assert not policy_change.approved and "a policy change" in policy_change.title


def test_no_approval_waits_and_nothing_to_approve_passes() -> None:
    waiting = gate.decide(verdict(), None, False, "author", False)
    assert (waiting.approved, waiting.state, waiting.title) == (False, "waiting", "Waiting for a lead's /approve")
    assert gate.decide(verdict(approval="not_needed"), None, False, "author", False).approved
    blocked = gate.decide(verdict(approval="blocked", reason="no policy"), lead_approval(), True, "author", False)
    assert not blocked.approved and blocked.data == {"reason": "no policy"}
