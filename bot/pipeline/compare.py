"""Stage 5: paired base-vs-head comparison of each suite, and the gate verdict under base policy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bot.engine.metrics import (
    VariantMetrics,
    accuracy_of,
    cost_of,
    hallucination_of,
    latency_of,
    per_case,
    variant_metrics,
)
from bot.engine.runner import CaseResult
from bot.engine.stats import ALPHA, Interval, PairedDelta, PairedTest, paired_delta, paired_test, relative_change_pct
from bot.pipeline.config import Thresholds

if TYPE_CHECKING:
    from bot.pipeline.tradeoff import ModelComparison

Verdict = Literal["pass", "fail", "inconclusive", "improved", "n/a"]


@dataclass(frozen=True)
class MetricRow:
    """One line of the summary table. Rates are 0-1; `delta` is in `delta_unit` (pp or %)."""

    key: str
    label: str
    unit: Literal["rate", "s", "usd", "count"]
    base: float | None
    head: float | None
    delta: float | None
    delta_unit: Literal["pp", "%", ""]
    delta_interval: Interval | None = None
    p_value: float | None = None
    significant: bool | None = None
    threshold: float | None = None
    verdict: Verdict = "n/a"
    base_interval: Interval | None = None
    head_interval: Interval | None = None
    # The test behind `p_value`: one-sided toward the harm when the change points that way (the test
    # that decides a breach), else two-sided (the test that may call it an improvement).
    test: Literal["mcnemar", "wilcoxon"] | None = None
    one_sided: bool | None = None
    # An inconclusive breach: the paired cases a change this size needs to be decided (80% power).
    cases_needed: int | None = None
    # The smallest change these cases detect (80% power, one-sided), in `delta_unit`; rate rows only.
    min_detectable: float | None = None


@dataclass(frozen=True)
class Flip:
    """A case whose verdict changed between base and head."""

    case_id: str
    category: str | None
    base_output: str
    head_output: str
    reason: str


@dataclass(frozen=True)
class CaseError:
    variant: str
    case_id: str
    message: str


@dataclass
class Variant:
    """One evaluated variant of a suite: its name, prompt version, model and results."""

    name: str
    version: str
    model: str
    results: list[CaseResult]
    metrics: VariantMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = variant_metrics(self.results)


@dataclass(frozen=True)
class AssertionCount:
    """One grader's verdicts over a variant's answers, counted as promptfoo counts an assertion's: one
    per answer it judged (an answer per test, prompt and provider), `errors` among the failures."""

    name: str
    passed: int
    judged: int
    errors: int


def assertion_counts(results: Sequence[CaseResult]) -> list[AssertionCount]:
    """Per grader name, in order of first appearance: how many answers it passed, judged, and erred on."""
    counts: dict[str, list[int]] = {}
    for result in results:
        for grade in result.grades:
            entry = counts.setdefault(grade.grader, [0, 0, 0])
            entry[0] += grade.passed is True
            entry[1] += 1
            entry[2] += grade.passed is None
    return [AssertionCount(name, *entry) for name, entry in counts.items()]


@dataclass
class SuiteReport:
    name: str
    reasons: list[str]
    head: Variant
    base: Variant | None
    rows: list[MetricRow]
    regressions: list[Flip]
    fixes: list[Flip]
    paired_cases: int
    min_detectable_drop_pp: float | None
    errors: list[CaseError]
    verdict: Literal["pass", "fail"]
    # Several models side by side (the suite's `models:`, `--models`, or a model change).
    models: ModelComparison | None = None
    # (old, new) when the change switches the prompt's model.
    model_change: tuple[str, str] | None = None
    # Why the head's accuracy is no evidence (not measurable, too few cases): each fails the gate.
    no_evidence: list[str] = field(default_factory=list)
    # Base rows the change removes from the dataset, evaluated in their base version all the same.
    removed_cases: list[str] = field(default_factory=list)
    # The same answers under the head's own exam, when the change rewrites it (shown, never gating).
    head_definition: SuiteReport | None = None
    # The level of the gate's one-sided tests (base policy).
    alpha: float = ALPHA
    # The head's dataset and the line of each regressed case in it (a removed base row has none).
    dataset: str = ""
    regression_lines: dict[str, int] = field(default_factory=dict)
    # sha256 of the exam (see SuitePlan.definition_hash): scores with different hashes are not comparable.
    definition_hash: str = ""
    # Per assertion (promptfoo suites): passes in head and base, to check against `promptfoo eval`.
    assertions_head: list[AssertionCount] = field(default_factory=list)
    assertions_base: list[AssertionCount] = field(default_factory=list)

    @property
    def inconclusive(self) -> list[MetricRow]:
        """Rows past a threshold by the point estimate but not significantly: a lead decides, with a reason."""
        return [row for row in self.rows if row.verdict == "inconclusive"]


def compare_suite(
    name: str, reasons: list[str], base: Variant | None, head: Variant, thresholds: Thresholds
) -> SuiteReport:
    """Compare head with base on the cases both answered; a head-only suite is reported without deltas."""
    strict = thresholds.gating == "strict"
    t = thresholds
    bm = base.metrics if base else None

    def pair(attr: str) -> tuple[Any, Any]:
        return (getattr(bm, attr) if bm else None), getattr(head.metrics, attr)

    acc = paired(base, head, accuracy_of, t.alpha)
    rows = [
        _rate_row(
            "accuracy", "Accuracy", pair("accuracy"), pair("accuracy_interval"), acc, t.accuracy_drop_pp, -1, strict
        ),
        _relative_row("latency_p50", "Latency p50", "s", pair("latency_p50_s"), None, None, strict),
        _relative_row(
            "latency_p95",
            "Latency p95",
            "s",
            pair("latency_p95_s"),
            paired(base, head, latency_of, t.alpha, outcomes=False),
            t.latency_p95_increase_pct,
            strict,
        ),
        _relative_row(
            "cost_per_1k",
            "Cost / 1K queries",
            "usd",
            pair("cost_per_1k_usd"),
            paired(base, head, cost_of, t.alpha, outcomes=False),
            t.cost_increase_pct,
            strict,
        ),
        _rate_row(
            "hallucination",
            "Hallucination rate",
            pair("hallucination_rate"),
            pair("hallucination_interval"),
            paired(base, head, hallucination_of, t.alpha),
            t.hallucination_increase_pp,
            +1,
            strict,
        ),
        _relative_row("cost_per_pct", "Cost / 1% accuracy", "usd", pair("cost_per_pct_usd"), None, None, strict),
        _errors_row(base, head),
    ]

    regressions, fixes = _flips(base, head) if base else ([], [])
    errors = [
        CaseError(variant.name, r.case_id, r.error)
        for variant in filter(None, (base, head))
        for r in variant.results
        if r.error
    ]
    no_evidence = _no_evidence(head, acc.n if acc else None, t.min_cases)
    return SuiteReport(
        name=name,
        reasons=reasons,
        head=head,
        base=base,
        rows=rows,
        regressions=regressions,
        fixes=fixes,
        paired_cases=acc.n if acc else 0,
        min_detectable_drop_pp=acc.min_detectable * 100 if acc and acc.min_detectable is not None else None,
        errors=errors,
        verdict="fail" if no_evidence or any(row.verdict == "fail" for row in rows) else "pass",
        alpha=t.alpha,
        no_evidence=no_evidence,
    )


def _no_evidence(head: Variant, paired_cases: int | None, min_cases: int) -> list[str]:
    """Why the head's accuracy proves nothing, if it does not: an unmeasured metric is not a pass.

    `paired_cases` is None for a suite new in this change (no base to pair with): its graded cases count.
    """
    m = head.metrics
    if m.accuracy is None:
        grade_errors = [g.error for r in head.results for g in r.grades if g.kind == "accuracy" and g.error]
        if m.n_calls and m.n_errors == m.n_calls:
            return ["head accuracy cannot be measured: every call under test failed"]
        if grade_errors:
            return [f"head accuracy cannot be measured: every accuracy grade is an error ({grade_errors[0]})"]
        return ["head accuracy cannot be measured: the suite has no accuracy grader"]
    counted, what = (m.n_graded, "graded") if paired_cases is None else (paired_cases, "paired")
    if counted < min_cases:
        return [f"only {counted} {what} cases, fewer than `min_cases` ({min_cases}): too few to judge the change"]
    return []


def paired(
    base: Variant | None,
    head: Variant,
    value: Callable[[CaseResult], float | bool | None],
    alpha: float = ALPHA,
    outcomes: bool = True,
) -> PairedDelta | None:
    """The paired comparison of `value` on the cases both variants answered; one value per case (the
    mean of its samples), so a case's repeats count once. `outcomes`: pass/fail values, not measurements."""
    if base is None:
        return None
    b, h = per_case(base.results, value), per_case(head.results, value)
    common = [case_id for case_id in h if case_id in b]
    return paired_delta([b[c] for c in common], [h[c] for c in common], alpha, outcomes)


def rate_verdict(
    base: Sequence[float], head: Sequence[float], threshold_pp: float, worse_sign: int, alpha: float, strict: bool
) -> Verdict:
    """The gate's verdict on a rate (accuracy: `worse_sign` -1, hallucination: +1) from paired
    per-case values, as `compare_suite` decides it (without the interval a report also shows)."""
    test = paired_test(base, head, alpha)
    return _verdict(worse_sign * test.delta * 100 if test else None, threshold_pp, test, worse_sign, strict)


def _verdict(
    change: float | None, threshold: float | None, test: PairedTest | None, worse_sign: int, strict: bool
) -> Verdict:
    """`change` is signed so that positive is worse; `worse_sign` is the sign of a worse per-case
    difference (head − base).

    A breach fails on the one-sided test toward the harm: the gate only ever asks whether head is
    worse. "Improved" needs the two-sided test: no gate question picked its direction in advance, and
    the gate never acts on it, so it keeps the stricter standard.
    """
    if change is None:
        return "n/a"
    if threshold is not None and change > threshold:
        if strict:
            return "fail"
        return "fail" if test is not None and test.p_toward(worse_sign) < test.alpha else "inconclusive"
    if change < 0 and test is not None and worse_sign * test.delta < 0 and test.significant:
        return "improved"
    return "pass"


def _test_fields(change: float, test: PairedTest, worse_sign: int, verdict: Verdict) -> dict[str, Any]:
    """The p-value a row shows, which test gave it, and for an inconclusive breach the cases needed."""
    one_sided = change > 0
    p_value = test.p_toward(worse_sign) if one_sided else test.p_value
    return {
        "p_value": p_value,
        "significant": p_value < test.alpha,
        "test": test.test,
        "one_sided": one_sided,
        "cases_needed": test.cases_needed(worse_sign) if verdict == "inconclusive" else None,
    }


def _rate_row(
    key: str,
    label: str,
    values: tuple[float | None, float | None],
    intervals: tuple[Interval | None, Interval | None],
    paired: PairedDelta | None,
    threshold_pp: float,
    worse_sign: int,
    strict: bool,
) -> MetricRow:
    base, head = values
    if paired is None or base is None or head is None:
        return MetricRow(
            key, label, "rate", base, head, None, "", base_interval=intervals[0], head_interval=intervals[1]
        )
    delta_pp = paired.delta * 100
    change = worse_sign * delta_pp
    verdict = _verdict(change, threshold_pp, paired, worse_sign, strict)
    return MetricRow(
        key,
        label,
        "rate",
        base,
        head,
        delta_pp,
        "pp",
        Interval(paired.interval.low * 100, paired.interval.high * 100),
        threshold=threshold_pp,
        verdict=verdict,
        base_interval=intervals[0],
        head_interval=intervals[1],
        min_detectable=paired.min_detectable * 100 if paired.min_detectable is not None else None,
        **_test_fields(change, paired, worse_sign, verdict),
    )


def _relative_row(
    key: str,
    label: str,
    unit: Literal["s", "usd"],
    values: tuple[float | None, float | None],
    paired: PairedDelta | None,
    threshold_pct: float | None,
    strict: bool,
) -> MetricRow:
    base, head = values
    change = relative_change_pct(base, head)
    if change is None or threshold_pct is None:
        # Not gated (or nothing to compare): shown for information, no verdict.
        return MetricRow(key, label, unit, base, head, change, "%" if change is not None else "")
    # The paired test is on per-case values, one-sided toward a rise: a p95 that rose while most cases
    # got faster is not a significant rise, so it cannot fail.
    verdict = _verdict(change, threshold_pct, paired, +1, strict)
    return MetricRow(
        key,
        label,
        unit,
        base,
        head,
        change,
        "%",
        threshold=threshold_pct,
        verdict=verdict,
        **(_test_fields(change, paired, +1, verdict) if paired else {}),
    )


def _errors_row(base: Variant | None, head: Variant) -> MetricRow:
    """Calls that failed after retries. Those cases leave the rates, so a head that breaks calls would
    otherwise look no worse: more failures than the base fail the gate on their own."""
    before = base.metrics.n_errors if base else 0
    after = head.metrics.n_errors
    # Every head call failing is no evaluation at all, even if the base failed as badly.
    verdict: Verdict = "fail" if after > before or (after and after == head.metrics.n_calls) else "pass"
    return MetricRow(
        "failed_calls", "Failed calls", "count", before if base else None, after, after - before, "", verdict=verdict
    )


def _flips(base: Variant, head: Variant) -> tuple[list[Flip], list[Flip]]:
    def first(results: Sequence[CaseResult]) -> dict[str, CaseResult]:
        out: dict[str, CaseResult] = {}
        for r in results:
            out.setdefault(r.case_id, r)
        return out

    b_scores, h_scores = per_case(base.results, accuracy_of), per_case(head.results, accuracy_of)
    b_first, h_first = first(base.results), first(head.results)
    regressions: list[Flip] = []
    fixes: list[Flip] = []
    for case_id, h_score in h_scores.items():
        b_score = b_scores.get(case_id)
        if b_score is None or b_score == h_score:
            continue
        h_result = h_first[case_id]
        reason = "; ".join(g.reason for g in h_result.grades if g.kind == "accuracy" and g.passed is False and g.reason)
        if h_score < b_score:
            reason = reason or "failed a grader"
        else:
            reason = "; ".join(g.reason for g in b_first[case_id].grades if g.passed is False and g.reason)
        flip = Flip(case_id, h_result.category, b_first[case_id].output, h_result.output, reason)
        (regressions if h_score < b_score else fixes).append(flip)
    return regressions, fixes
