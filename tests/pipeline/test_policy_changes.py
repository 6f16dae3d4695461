"""Policy is every key of `.evalbot.yml` but `suites`, and a change to any is named with both values."""

from __future__ import annotations

from bot.pipeline.changes import policy_changes
from bot.pipeline.config import POLICY_KEYS, Config, parse_config


def test_every_key_but_suites_is_policy() -> None:
    assert set(POLICY_KEYS) == set(Config.model_fields) - {"suites"}
    assert {"approvers", "allow_self_approval", "thresholds", "budget", "limits", "allowed_models"} <= set(POLICY_KEYS)
    assert {"prices", "judge", "schedule"} <= set(POLICY_KEYS)


def test_policy_changes_name_each_key_with_both_values() -> None:
    base = parse_config("approvers: [lead]\nbudget: {max_cost_usd: 5}\n")
    head = parse_config("approvers: [mallory]\nbudget: {max_cost_usd: 5}\nallow_self_approval: true\n")
    changes = {c.key: (c.base, c.head) for c in policy_changes(base, head)}
    assert changes == {"approvers": ('["lead"]', '["mallory"]'), "allow_self_approval": ("false", "true")}
    # A deleted file is the defaults: dropping `approvers` is a change too.
    assert [c.key for c in policy_changes(base, None)] == ["approvers", "budget"]
