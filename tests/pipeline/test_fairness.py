"""The fairness gate: accuracy per group (gap, Holm-corrected drop tests) and counterfactual probes, end to
end through the stub model over HTTP, and per group on hand-made results."""

from __future__ import annotations

import json
from math import comb
from typing import Any

import pytest

from bot.engine.graders import Grade
from bot.engine.runner import CaseResult
from bot.engine.stats import paired_test
from bot.errors import InputError
from bot.github.api.publish import report_title
from bot.pipeline.config import Thresholds, parse_config
from bot.pipeline.fairness import group_fairness
from bot.pipeline.render import render_json, render_markdown
from bot.pipeline.run import Report, RunOptions, evaluate
from bot.pipeline.source import GitSource
from bot.pipeline.variants import Variant
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import Reply, StubLLM, user_text

TIERS = ("bronze", "silver", "gold", "platinum")
NAMES = ["Emma", "Mohammed", "Wei"]
TEMPLATE = "Tier {tier}. Guest {guest_name} asks: {question}"


def rows(n: int) -> list[dict[str, Any]]:
    """`n` cases, a quarter per tier in blocks (c0-c99 bronze for 400), each named Emma."""
    per_tier = n // len(TIERS)
    return [
        {"id": f"c{i}", "question": f"q{i}", "expected": "ok", "tier": TIERS[i // per_tier], "guest_name": "Emma"}
        for i in range(n)
    ]


def answers(head_fails: Any, base_fails: Any = lambda i, tier, name: i % 100 < 10) -> Any:
    """The stub answers "ok" (right) unless the prompt's `fails(case number, tier, guest name)` says
    otherwise: the head's prompt says "v2" in its system text, the base's "v1"."""

    def reply(body: dict[str, Any]) -> Reply:
        text = user_text(body)
        tier = text.split("Tier ", 1)[1].split(".", 1)[0]
        name = text.split("Guest ", 1)[1].split(" asks", 1)[0]
        case = int(text.rsplit("q", 1)[-1])
        fails = head_fails if "v2" in body["messages"][0]["content"] else base_fails
        return Reply("no" if fails(case, tier, name) else "ok")

    return reply


def build(repo: GitRepo, n: int, fairness: dict[str, Any], head_fairness: dict[str, Any] | None = None) -> None:
    """Suite `agent` with `fairness` on the base (prompt v1) and `head_fairness` (default the same) on the
    head (prompt v2). Latency of a stub in this process is noise, and the accuracy drop allowed is wide:
    these tests are about the fairness gate."""

    def config(settings: dict[str, Any]) -> dict[str, Any]:
        thresholds = {"latency_p95_increase_pct": 1000, "accuracy_drop_pp": 10}
        found = suite_config(
            "agent", "prompts/agent.yaml", "evals/agent.jsonl", [{"type": "equals"}], thresholds=thresholds
        )
        found["suites"][0]["fairness"] = settings
        return found

    repo.write(".evalbot.yml", config(fairness))
    repo.write("evals/agent.jsonl", rows(n))
    repo.write("prompts/agent.yaml", prompt_file("1.0.0", system_prompt="v1", user_prompt_template=TEMPLATE))
    repo.commit("base", tag="base")
    repo.write(".evalbot.yml", config(fairness if head_fairness is None else head_fairness))
    repo.write("prompts/agent.yaml", prompt_file("1.1.0", system_prompt="v2", user_prompt_template=TEMPLATE))
    repo.commit("head", tag="head")


async def run(repo: GitRepo, stub: StubLLM) -> Report:
    return await evaluate(GitSource(repo.root), "base", "head", RunOptions(api_base=stub.base_url))


def gold_drops_15(i: int, tier: str, name: str) -> bool:
    """The base's failures (10 of each tier's 100), and 15 more in gold only."""
    return i % 100 < (25 if tier == "gold" else 10)


@pytest.mark.slow
async def test_a_drop_in_one_group_fails_the_gate(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, 400, {"group_field": "tier", "max_gap_increase_pp": 5})
    stub.handler = answers(gold_drops_15)
    report = await run(repo, stub)

    (suite,) = report.suites
    # Overall accuracy drops 3.75 pp, within the 10 allowed: the suite's own gate passes.
    assert suite.verdict == "pass" and suite.rows[0].delta == pytest.approx(-3.75)
    fairness = suite.fairness
    assert fairness is not None and fairness.failed and report.verdict == "fail"
    groups = fairness.groups
    assert groups is not None and groups.verdict == "fail"
    by_name = {row.group: row for row in groups.groups}
    gold = by_name["gold"]
    assert (gold.cases, gold.base_accuracy, gold.head_accuracy) == (100, 0.9, 0.75)
    assert gold.change_pp == pytest.approx(-15) and gold.relative_pp == pytest.approx(-15)
    # 15 cases broke, none fixed: exact McNemar P(X ≥ 15 | 15, 1/2) = 2^-15, times 4 groups (Holm's first step).
    assert gold.p_drop == pytest.approx(0.5**15) and gold.p_holm == pytest.approx(4 * 0.5**15)
    # Its lag, 15 pp against the 5 allowed, 2.8 standard errors (3.6 pp) away: the bootstrap's p, Holm's.
    assert gold.p_behind is not None and gold.p_behind_holm is not None and gold.p_behind_holm < 0.05
    assert gold.harmed and not any(row.harmed for row in groups.groups if row.group != "gold")
    assert (groups.base_gap_pp, groups.head_gap_pp, groups.change_pp) == pytest.approx((0, 15, 15))
    assert groups.interval is not None and groups.interval.low < 15 < groups.interval.high

    markdown = render_markdown(report)
    assert "### Fairness of suite `agent`: ❌ fail" in markdown
    assert "| gold | 100 | 90.0% | 75.0% | -15.0 pp | -15.0 pp | 3.05e-05 (0.000122) | " in markdown
    assert f"{gold.p_behind:.3g} ({gold.p_behind_holm:.3g}) ❌ |" in markdown
    assert "Gap between the best and the worst group: 0.0 pp → 15.0 pp (+15.0 pp, 95% CI" in markdown
    assert report_title(report).endswith("; fairness failed: agent")
    # Stored with the run: the JSON report (and the run page's Markdown) hold the groups.
    stored = json.loads(render_json(report))["suites"][0]["fairness"]
    assert stored["groups"]["verdict"] == "fail" and stored["groups"]["change_pp"] == pytest.approx(15)


@pytest.mark.slow
async def test_a_uniform_one_point_drop_passes(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, 400, {"group_field": "tier", "max_gap_increase_pp": 5})
    stub.handler = answers(lambda i, tier, name: i % 100 < 11)
    report = await run(repo, stub)

    fairness = report.suites[0].fairness
    assert fairness is not None and not fairness.failed and report.verdict == "pass"
    groups = fairness.groups
    assert groups is not None and groups.verdict == "pass" and groups.change_pp == pytest.approx(0)
    assert [row.change_pp for row in groups.groups] == pytest.approx([-1, -1, -1, -1])
    assert "### Fairness of suite `agent`: ✅ pass" in render_markdown(report)


@pytest.mark.slow
async def test_the_head_cannot_loosen_the_bases_fairness(repo: GitRepo, stub: StubLLM) -> None:
    build(
        repo,
        400,
        {"group_field": "tier", "max_gap_increase_pp": 5},
        head_fairness={"group_field": "tier", "max_gap_increase_pp": 50},
    )
    stub.handler = answers(gold_drops_15)
    report = await run(repo, stub)

    groups = report.suites[0].fairness.groups  # type: ignore[union-attr]
    assert groups is not None and groups.threshold_pp == 5 and groups.verdict == "fail"
    assert report.verdict == "fail"
    (change,) = report.definition_changes
    assert any(line.startswith("fairness: ") and "'max_gap_increase_pp': 50.0" in line for line in change.changes)


async def test_a_name_sensitive_head_flips_30_percent_of_the_probes(repo: GitRepo, stub: StubLLM) -> None:
    counterfactual = {"field": "guest_name", "values": NAMES}
    build(repo, 40, {"counterfactual": counterfactual, "max_flip_rate": 0.05})
    # The head's prompt answers wrong for Mohammed on 3 cases in 10; the base treats every name alike.
    stub.handler = answers(lambda i, tier, name: name == "Mohammed" and i % 10 < 3, lambda i, tier, name: False)
    report = await run(repo, stub)

    fairness = report.suites[0].fairness
    assert fairness is not None and fairness.failed and report.verdict == "fail"
    probes = fairness.counterfactual
    assert probes is not None and probes.verdict == "fail" and probes.probed == 40
    assert (probes.head.flipped, probes.head.counted, probes.head.rate) == (12, 40, 0.3)
    assert probes.base is not None and (probes.base.flipped, probes.base.counted) == (0, 40)
    # Exact: P(X ≥ 12) for X ~ Binomial(40, 0.05).
    tail = 1 - sum(comb(40, k) * 0.05**k * 0.95 ** (40 - k) for k in range(12))
    assert probes.p_value == pytest.approx(tail) and probes.p_value < 1e-6
    assert [case.case_id for case in probes.flipped][:3] == ["c0", "c1", "c2"]
    assert probes.flipped[0].head == (1.0, 0.0, 1.0)
    # Every probed case once per name, base and head, beside the 40 cases of each side.
    assert len(stub.answered) == 2 * 40 + 2 * 40 * 3
    assert report.estimate is not None and report.estimate.calls == len(stub.answered)

    markdown = render_markdown(report)
    assert "Counterfactual probes: 40 cases rendered once per value of `guest_name`" in markdown
    assert "- head: the graded outcome differs between values on 12 of 40 cases (30.0%)" in markdown
    assert "| `c0` | pass | fail | pass |" in markdown


async def test_a_base_that_flips_as_often_is_standing(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, 40, {"counterfactual": {"field": "guest_name", "values": NAMES}, "max_flip_rate": 0.05})
    stub.handler = answers(lambda i, tier, name: name == "Wei" and i % 10 < 3, lambda i, tier, name: name == "Wei")
    report = await run(repo, stub)

    probes = report.suites[0].fairness.counterfactual  # type: ignore[union-attr]
    assert probes is not None and probes.verdict == "standing" and not report.suites[0].fairness.failed  # type: ignore[union-attr]


def variant(name: str, passed: dict[str, bool]) -> Variant:
    results = [
        CaseResult(case_id, None, 0, grades=(Grade("equals", "accuracy", ok),)) for case_id, ok in passed.items()
    ]
    return Variant(name, "1", "openai/stub", results)


def power(n: int, critical: int, p_worse: float = 0.2) -> float:
    """P(Binomial(n, p_worse) ≥ critical): the exact McNemar power when every flipped case broke."""
    return 1 - sum(comb(n, k) * p_worse**k * (1 - p_worse) ** (n - k) for k in range(critical))


def test_small_groups_say_how_many_cases_a_decision_needs() -> None:
    # Two groups of 10: group a's head breaks 2 cases (-20 pp), group b is unchanged.
    groups = {f"c{i}": "a" if i < 10 else "b" for i in range(20)}
    base = variant("base", dict.fromkeys(groups, True))
    head = variant("head", {case_id: case_id not in ("c0", "c1") for case_id in groups})
    result = group_fairness("tier", groups, base, head, 5.0, Thresholds())

    assert result.verdict == "inconclusive" and result.change_pp == pytest.approx(20)
    # McNemar: 2 broken, none fixed, P = 1/4; Holm over 2 groups: 1/2.
    assert [(row.p_drop, row.p_holm) for row in result.groups] == [(0.25, 0.5), (1.0, 1.0)]
    a = result.groups[0]
    assert a.relative_pp == pytest.approx(-20) and a.p_behind is not None and a.p_behind > 0.05
    # Each test's need at Holm's first level α/2 = 0.025, 80% power. The drop: McNemar rejects once 6
    # flipped cases all broke (2^-6 < 0.025 < 2^-5); every flip breaks a case here, so its power is
    # P(Binomial(n, 0.2) ≥ 6), 80% from n = 39.
    assert power(38, 6) < 0.8 <= power(39, 6)
    test = paired_test([1.0] * 10, [0.0] * 2 + [1.0] * 8, alpha=0.025)
    assert test is not None and test.cases_needed(-1) == 39
    # The lag (20 pp, 15 past the 5 allowed) with its standard error √(0.2 · 0.8 / 10) = 12.6 pp:
    # 10 × ((1.96 + 0.8416) × 0.1265 / 0.15)² = 55.8 → 56. The larger decides.
    textbook = 10 * ((1.96 + 0.8416) * (0.16 / 10) ** 0.5 / 0.15) ** 2
    assert textbook == pytest.approx(55.8, abs=0.05)
    assert result.cases_needed == 56


async def test_too_small_groups_are_inconclusive_with_the_cases_needed(repo: GitRepo, stub: StubLLM) -> None:
    # Four tiers of 10; the head breaks 2 of gold's cases: the gap widens by 20 pp, p = 1/4 (Holm: 1).
    build(repo, 40, {"group_field": "tier", "max_gap_increase_pp": 5})
    stub.handler = answers(lambda i, tier, name: i in (20, 21), lambda i, tier, name: False)
    report = await run(repo, stub)

    groups = report.suites[0].fairness.groups  # type: ignore[union-attr]
    assert groups is not None and groups.verdict == "inconclusive" and report.verdict == "pass"
    # At α/4 = 0.0125 the drop test needs 7 broken flips (2^-7 < 0.0125 < 2^-6): P(Binomial(n, 0.2) ≥ 7)
    # reaches 0.8 at n = 44. The lag's need is larger: 10 × ((2.2414 + 0.8416) × 0.1265 / 0.15)² = 67.6
    # with the textbook standard error, 70 with the bootstrap's (12.8 pp).
    assert power(43, 7) < 0.8 <= power(44, 7)
    assert groups.cases_needed == 70
    # An inconclusive breach: a lead approves it with a reason.
    assert [(b.suite, b.metric, b.delta, b.threshold) for b in report.inconclusive] == [
        ("agent", "Fairness gap (tier)", pytest.approx(20), 5)
    ]
    # Its p-value: gold's drop, Holm-adjusted (4 × 1/4 = 1), the larger of gold's two.
    assert report.inconclusive[0].p_value == 1.0
    markdown = render_markdown(report)
    assert "### Fairness of suite `agent`: ⚠️ inconclusive" in markdown
    assert "a decision needs about 70 paired cases per group (80% power, one-sided α = 0.05 / 4 groups)" in markdown


def test_fairness_needs_a_group_field_or_probes() -> None:
    config = suite_config("agent", "p.yaml", "d.jsonl", [{"type": "equals"}])
    config["suites"][0]["fairness"] = {"max_flip_rate": 0.1}
    with pytest.raises(InputError, match="fairness takes `group_field`, `counterfactual` or both"):
        parse_config(json.dumps(config))
    config["suites"][0]["fairness"] = {"counterfactual": {"field": "guest_name", "values": ["A", "A"]}}
    with pytest.raises(InputError, match="counterfactual values must be distinct"):
        parse_config(json.dumps(config))
