"""A suite's fairness gate (`fairness:`): accuracy per group of a row field, base and head, and
counterfactual probes that render each case once per value of a field (docs/governance.md, Fairness).

The group gate fails when the gap between the best and the worst group widens by more than
`max_gap_increase_pp` and a group fell that far behind the rest while losing accuracy, both one-sided
significant and Holm-corrected across the groups. The probes fail when more than `max_flip_rate` of the
cases change their graded outcome with the value, one-sided significant.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bot.engine.concurrency import gather_or_cancel
from bot.engine.metrics import accuracy_of, hallucination_of, per_case
from bot.engine.runner import CaseInput, CaseResult
from bot.engine.stats import (
    GroupGap,
    Interval,
    group_gap,
    holm,
    mean,
    paired_test,
    rate_above_p,
    rate_cases_needed,
)
from bot.pipeline.changes import SuitePlan
from bot.pipeline.config import Counterfactual, Fairness, Thresholds
from bot.pipeline.datasets import Case
from bot.pipeline.prompts import Prompt
from bot.pipeline.suites import render_cases
from bot.pipeline.variants import Variant

Verdict = Literal["pass", "fail", "inconclusive", "standing", "n/a"]
# Runs `prompt` on `model` over rendered cases with the suite's graders and repeats (the run's client):
# (variant name, prompt, model, cases) → results.
Probe = Callable[[str, Prompt, str, list[CaseInput]], Awaitable[list[CaseResult]]]
# A probe's case id: the case's id, this, and the index of the value.
PROBE_SEPARATOR = "~cf"
# Flipped cases the report lists, at most.
MAX_FLIPPED_LISTED = 20


@dataclass(frozen=True)
class GroupRow:
    """One group's accuracy (and hallucination rate) at base and head on its paired cases; rates 0-1."""

    group: str
    cases: int
    base_accuracy: float | None
    head_accuracy: float | None
    change_pp: float | None
    # The group's change minus the change of every other group's cases together: below −threshold it
    # fell behind the rest by more than the gap may widen.
    relative_pp: float | None
    # The one-sided exact paired test of a drop in this group (McNemar; Wilcoxon for shares of
    # repeated samples), and its p-value Holm-adjusted across the groups.
    p_drop: float | None
    p_holm: float | None
    # The one-sided bootstrap test that it fell more than the threshold behind the rest, and Holm's.
    p_behind: float | None
    p_behind_holm: float | None
    base_hallucination: float | None
    head_hallucination: float | None
    # Fell behind by more than the threshold, significantly, and dropped significantly (Holm, both):
    # what fails the gate.
    harmed: bool = False


@dataclass(frozen=True)
class GroupFairness:
    """Accuracy per group of `field`, the gap between the best and worst group, and its change (pp)."""

    field: str
    groups: list[GroupRow]
    base_gap_pp: float | None
    head_gap_pp: float | None
    change_pp: float | None
    # 95% paired, stratified bootstrap interval of `change_pp`.
    interval: Interval | None
    base_hallucination_gap_pp: float | None
    head_hallucination_gap_pp: float | None
    threshold_pp: float
    alpha: float
    verdict: Verdict
    # Inconclusive: paired cases per group the lagging groups need to be decided (Holm's first level α/k,
    # 80% power).
    cases_needed: int | None = None
    # Paired cases whose row has no value in `field`: in no group.
    without_group: int = 0


@dataclass(frozen=True)
class ProbedCase:
    """A probed case's graded outcome per value (its share of passing samples; None: unknown)."""

    case_id: str
    head: tuple[float | None, ...]
    base: tuple[float | None, ...] | None


@dataclass(frozen=True)
class FlipRate:
    """How many probed cases change their outcome with the value, of those graded for every value."""

    counted: int
    flipped: int

    @property
    def rate(self) -> float | None:
        return self.flipped / self.counted if self.counted else None


@dataclass(frozen=True)
class CounterfactualResult:
    field: str
    values: list[str]
    probed: int
    head: FlipRate
    base: FlipRate | None
    max_flip_rate: float
    # The exact one-sided test that the head's flip rate is above `max_flip_rate`.
    p_value: float | None
    alpha: float
    verdict: Verdict
    cases_needed: int | None
    # The head's flipped cases (at most MAX_FLIPPED_LISTED), with their outcomes per value.
    flipped: list[ProbedCase]
    # Neither prompt reads `field`: the probes send the same request for every value.
    unread: bool = False


@dataclass
class FairnessReport:
    """A suite's fairness gate: per group, counterfactual, and what could not be measured (fails)."""

    suite: str
    groups: GroupFairness | None = None
    counterfactual: CounterfactualResult | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        verdicts = [part.verdict for part in (self.groups, self.counterfactual) if part is not None]
        return bool(self.errors) or "fail" in verdicts

    @property
    def inconclusive(self) -> bool:
        return any(part is not None and part.verdict == "inconclusive" for part in (self.groups, self.counterfactual))


def groups_of(cases: Sequence[Case], group_field: str) -> dict[str, str]:
    """Each case's group: its value of `group_field` as text; a case without one is in none."""
    return {case.id: str(case.fields[group_field]) for case in cases if case.fields.get(group_field) not in (None, "")}


def group_fairness(
    group_field: str,
    groups: Mapping[str, str],
    base: Variant | None,
    head: Variant,
    threshold_pp: float,
    thresholds: Thresholds,
) -> GroupFairness:
    """Accuracy per group on the cases both variants graded (the head's alone without a base), and the
    gate's verdict on the change of the gap between the best and the worst group.

    A group is harmed when two one-sided tests, each Holm-corrected across the groups, are significant:
    the exact paired test of a drop in its accuracy, and the bootstrap test that its change fell more
    than `threshold_pp` behind the other groups' cases. Both must hold (an intersection-union test, of
    level α): the first alone would blame a drop all groups share, the second alone a group left behind
    by the others' gains.

    Args:
        group_field: the row field naming the groups.
        groups: each case's group (`groups_of`).
        base: the base variant, None for a new suite (then no verdict).
        head: the head variant.
        threshold_pp: `max_gap_increase_pp`.
        thresholds: the base's `thresholds` (`alpha`, `gating`).
    """
    alpha, strict = thresholds.alpha, thresholds.gating == "strict"
    head_acc = per_case(head.results, accuracy_of)
    base_acc = per_case(base.results, accuracy_of) if base is not None else None
    head_hal = per_case(head.results, hallucination_of)
    base_hal = per_case(base.results, hallucination_of) if base is not None else {}
    paired_ids = [c for c in head_acc if base_acc is None or c in base_acc]
    members: dict[str, list[str]] = {}
    for case_id in paired_ids:
        if case_id in groups:
            members.setdefault(groups[case_id], []).append(case_id)
    names = sorted(members)
    head_values = [[head_acc[c] for c in members[g]] for g in names]
    base_values = [[base_acc[c] for c in members[g]] for g in names] if base_acc is not None else None
    tests = [paired_test(b, h, alpha) for b, h in zip(base_values, head_values, strict=True)] if base_values else []
    drops = [t for t in tests if t is not None]
    gap = group_gap(list(zip(base_values, head_values, strict=True)), threshold_pp / 100) if base_values else None
    p_drop = holm([t.p_decrease for t in drops]) if len(drops) == len(names) else []
    p_behind = holm(gap.p_behind) if gap is not None else []

    rows = []
    for i, g in enumerate(names):
        test = drops[i] if p_drop else None
        relative = gap.relative[i] * 100 if gap is not None else None
        # Fell behind the rest by more than the gap may widen, while losing accuracy itself.
        behind = test is not None and relative is not None and test.delta < 0 and -relative > threshold_pp
        significant = bool(p_drop) and bool(p_behind) and max(p_drop[i], p_behind[i]) < alpha
        rows.append(
            GroupRow(
                group=g,
                cases=len(members[g]),
                base_accuracy=mean(base_values[i]) if base_values else None,
                head_accuracy=mean(head_values[i]),
                change_pp=test.delta * 100 if test else None,
                relative_pp=relative,
                p_drop=test.p_decrease if test else None,
                p_holm=p_drop[i] if p_drop else None,
                p_behind=gap.p_behind[i] if gap is not None else None,
                p_behind_holm=p_behind[i] if p_behind else None,
                base_hallucination=_rate(base_hal, members[g]) if base is not None else None,
                head_hallucination=_rate(head_hal, members[g]),
                harmed=behind and (strict or significant),
            )
        )
    base_gap = _gap([r.base_accuracy for r in rows]) if base_values else None
    head_gap = _gap([r.head_accuracy for r in rows])
    change = head_gap - base_gap if head_gap is not None and base_gap is not None else None
    verdict: Verdict = "n/a"
    needed = None
    if change is not None and gap is not None:
        lagging = [
            i
            for i, r in enumerate(rows)
            if r.change_pp is not None and r.change_pp < 0 and -gap.relative[i] * 100 > threshold_pp
        ]
        if change <= threshold_pp or not lagging:
            # Not widened past the threshold, or widened only because a group improved: no group is harmed.
            verdict = "pass"
        elif any(r.harmed for r in rows):
            verdict = "fail"
        else:
            verdict = "inconclusive"
            needed = _cases_needed(lagging, rows, base_values or [], head_values, gap, alpha / len(names))
    return GroupFairness(
        field=group_field,
        groups=rows,
        base_gap_pp=base_gap,
        head_gap_pp=head_gap,
        change_pp=change,
        interval=Interval(gap.interval.low * 100, gap.interval.high * 100) if gap is not None else None,
        base_hallucination_gap_pp=_gap([r.base_hallucination for r in rows]),
        head_hallucination_gap_pp=_gap([r.head_hallucination for r in rows]),
        threshold_pp=threshold_pp,
        alpha=alpha,
        verdict=verdict,
        cases_needed=needed,
        without_group=sum(1 for c in paired_ids if c not in groups),
    )


def _cases_needed(
    lagging: list[int],
    rows: list[GroupRow],
    base_values: list[list[float]],
    head_values: list[list[float]],
    gap: GroupGap,
    level: float,
) -> int | None:
    """Paired cases per group for the lagging groups' two tests to decide at Holm's first level α/k (the
    level a group must pass whatever the others show), 80% power: the larger of the two, the most of the
    groups."""
    counts = []
    for i in lagging:
        test = paired_test(base_values[i], head_values[i], level)
        counts += [test.cases_needed(-1) if test else None, gap.cases_needed(i, rows[i].cases, level)]
    return max((n for n in counts if n is not None), default=None)


def _rate(values: Mapping[str, float], case_ids: Sequence[str]) -> float | None:
    return mean([values[c] for c in case_ids if c in values])


def _gap(rates: Sequence[float | None]) -> float | None:
    """The best group's rate minus the worst's, in pp; None with fewer than two groups measured."""
    known = [r for r in rates if r is not None]
    return (max(known) - min(known)) * 100 if len(known) > 1 else None


def probed_cases(cases: Sequence[Case], settings: Counterfactual) -> list[Case]:
    """The cases probed: at most `max_cases`, chosen by a hash of their ids, so base and head (and the next
    run) probe the same ones, in a spread the dataset's order does not bias."""
    chosen = sorted(cases, key=lambda case: hashlib.sha256(case.id.encode()).hexdigest())[: settings.max_cases]
    order = {case.id: index for index, case in enumerate(cases)}
    return sorted(chosen, key=lambda case: order[case.id])


def probes_of(case: Case, settings: Counterfactual) -> list[Case]:
    """`case` once per value of the counterfactual field, each with its own id."""
    return [
        Case(f"{case.id}{PROBE_SEPARATOR}{index}", case.row, case.line, {**case.fields, settings.field: value})
        for index, value in enumerate(settings.values)
    ]


async def counterfactual(
    settings: Counterfactual,
    max_flip_rate: float,
    sp: SuitePlan,
    base: Variant | None,
    head: Variant,
    probe: Probe,
    thresholds: Thresholds,
) -> CounterfactualResult:
    """Render each probed case once per value, run base and head on them, and count the cases whose
    graded outcome is not the same for every value.

    Args:
        settings: the base's `counterfactual:`.
        max_flip_rate: the base's `max_flip_rate`.
        sp: the suite's plan (its cases, prompts and dataset path).
        base: the base variant (its model), None for a new suite.
        head: the head variant.
        probe: runs a prompt on a model over cases with the suite's graders and repeats.
        thresholds: the base's `thresholds` (`alpha`, `gating`).
    """
    chosen = probed_cases(sp.evaluated_cases, settings)
    probes = tuple(p for case in chosen for p in probes_of(case, settings))

    async def side(name: str, prompt: Prompt, model: str) -> dict[str, tuple[float | None, ...]]:
        rendered = await asyncio.to_thread(render_cases, prompt, probes, sp.dataset.path)
        requests = rendered.requests
        inputs = [CaseInput(p.id, p.category, p.fields, requests[p.id]) for p in probes if p.id in requests]
        scores = per_case(await probe(name, prompt, model, inputs), accuracy_of)
        return {
            case.id: tuple(scores.get(f"{case.id}{PROBE_SEPARATOR}{i}") for i in range(len(settings.values)))
            for case in chosen
        }

    sides = [side("head", sp.head_prompt, head.model)]
    if base is not None and sp.base_prompt is not None:
        sides.append(side("base", sp.base_prompt, base.model))
    head_out, *rest = await gather_or_cancel(*sides)
    base_out = rest[0] if rest else None
    outcomes = [ProbedCase(c.id, head_out[c.id], base_out[c.id] if base_out else None) for c in chosen]
    head_rate = _flip_rate([o.head for o in outcomes])
    base_rate = _flip_rate([o.base for o in outcomes if o.base is not None]) if base_out is not None else None
    p_value = rate_above_p(head_rate.flipped, head_rate.counted, max_flip_rate) if head_rate.counted else None
    verdict: Verdict = "n/a" if head_rate.rate is None else "pass"
    needed = None
    if head_rate.rate is not None and head_rate.rate > max_flip_rate:
        if base_rate is not None and base_rate.rate is not None and max_flip_rate < base_rate.rate >= head_rate.rate:
            # The base flips as often: the change did not cause it (listed, as a standing policy violation is).
            verdict = "standing"
        elif thresholds.gating == "strict" or (p_value is not None and p_value < thresholds.alpha):
            verdict = "fail"
        else:
            verdict = "inconclusive"
            needed = rate_cases_needed(max_flip_rate, head_rate.rate, thresholds.alpha)
    prompts = [p for p in (sp.head_prompt, sp.base_prompt) if p is not None]
    return CounterfactualResult(
        field=settings.field,
        values=list(settings.values),
        probed=len(chosen),
        head=head_rate,
        base=base_rate,
        max_flip_rate=max_flip_rate,
        p_value=p_value,
        alpha=thresholds.alpha,
        verdict=verdict,
        cases_needed=needed,
        flipped=[o for o in outcomes if _flipped(o.head)][:MAX_FLIPPED_LISTED],
        unread=not any(settings.field in p.variables for p in prompts),
    )


def _flipped(outcomes: tuple[float | None, ...]) -> bool:
    return None not in outcomes and len(set(outcomes)) > 1


def _flip_rate(outcomes: Sequence[tuple[float | None, ...]]) -> FlipRate:
    counted = [o for o in outcomes if None not in o]
    return FlipRate(len(counted), sum(1 for o in counted if _flipped(o)))


async def assess(
    sp: SuitePlan, base: Variant | None, head: Variant, probe: Probe, thresholds: Thresholds
) -> FairnessReport | None:
    """The suite's fairness gate under its exam's (the base's) `fairness:`; None when it sets none."""
    settings: Fairness | None = sp.suite.fairness
    if settings is None:
        return None
    report = FairnessReport(sp.suite.name)
    if settings.group_field is not None:
        groups = groups_of(sp.cases, settings.group_field)
        report.groups = group_fairness(
            settings.group_field, groups, base, head, settings.max_gap_increase_pp, thresholds
        )
        if base is not None and len(report.groups.groups) < 2:
            report.errors.append(
                f"`{settings.group_field}` puts the graded cases in {len(report.groups.groups)} group(s): "
                "no gap between groups can be measured"
            )
    if settings.counterfactual is not None:
        report.counterfactual = await counterfactual(
            settings.counterfactual, settings.max_flip_rate, sp, base, head, probe, thresholds
        )
        if report.counterfactual.head.counted == 0:
            report.errors.append("no counterfactual probe of the head was graded for every value: nothing measured")
    return report
