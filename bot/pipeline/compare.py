"""Stage 5: paired base-vs-head comparison of each suite, and the gate verdict under base policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bot.engine.metrics import (
    accuracy_of,
    cost_of,
    hallucination_of,
    latency_of,
    per_case,
)
from bot.engine.runner import CaseResult, LatencyPair, TimedCall
from bot.engine.stats import (
    ALPHA,
    Interval,
    PairedDelta,
    PairedTest,
    RatioStatistic,
    RatioTest,
    paired_ratio,
    paired_test,
    percentile,
    relative_change_pct,
)
from bot.pipeline.config import Thresholds
from bot.pipeline.variants import Variant, paired

if TYPE_CHECKING:
    from bot.pipeline.fairness import FairnessReport
    from bot.pipeline.tradeoff import ModelComparison

Verdict = Literal["pass", "fail", "inconclusive", "improved", "n/a"]

# Fewest paired cases a latency or cost decision may rest on: below it a rise past the threshold is
# "inconclusive — needs N pairs", never a fail (one slow call would otherwise decide a p95 of ten).
MIN_RATIO_PAIRS = 20
# The slowest calls of each side the report names, so that an outlier is seen, not hidden.
SLOWEST_CALLS = 5


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
    test: Literal["mcnemar", "wilcoxon", "bootstrap"] | None = None
    one_sided: bool | None = None
    # An inconclusive breach: the paired cases a change this size needs to be decided (80% power).
    cases_needed: int | None = None
    # The smallest change these cases detect (80% power, one-sided), in `delta_unit`; rate rows only.
    min_detectable: float | None = None
    # Bootstrap rows (p95 latency, cost per 1K): the statistic the ratio is of, the one-sided
    # (1 − α) lower bound of the change in % (what the gate compares with the threshold), and the
    # paired cases the row rests on.
    statistic: RatioStatistic | None = None
    bound: float | None = None
    pairs: int | None = None


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


@dataclass(frozen=True)
class LatencyEvidence:
    """The calls latency is decided on: base and head measured in this run.

    `remeasured`: some answers came from the cache, whose latencies were measured another day, so a
    sample of cases was called again, base and head back to back; only those pairs count.
    """

    pairs: list[LatencyPair]
    remeasured: bool = False

    @property
    def cases(self) -> int:
        return len({p.base.case_id for p in self.pairs})

    def slowest(self, side: Literal["base", "head"]) -> list[TimedCall]:
        calls = [getattr(p, side) for p in self.pairs]
        return sorted(calls, key=lambda call: -call.latency_s)[:SLOWEST_CALLS]


@dataclass(frozen=True)
class LatencySummary:
    """What the report says about the latency evidence: how many paired cases decided it, whether they
    were re-measured, how many paired cases' latencies came from the cache instead, and the slowest calls."""

    pairs: int
    remeasured: bool
    from_cache: int
    slowest_base: list[TimedCall]
    slowest_head: list[TimedCall]


def same_run_pairs(base: Variant, head: Variant) -> LatencyEvidence:
    """Every sample both variants answered, as measured by this run's calls."""

    def timed(variant: Variant) -> dict[tuple[str, int], CaseResult]:
        return {(r.case_id, r.sample): r for r in variant.results if r.error is None and r.latency_s is not None}

    b, h = timed(base), timed(head)
    pairs = [
        LatencyPair(
            key[1],
            TimedCall(key[0], b[key].latency_s or 0.0, b[key].retried),
            TimedCall(key[0], h[key].latency_s or 0.0, h[key].retried),
        )
        for key in h
        if key in b
    ]
    return LatencyEvidence(pairs)


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
    # The pairs the latency rows rest on (None without a base).
    latency: LatencySummary | None = None
    # The suite's `fairness:` gate (base policy), when its exam sets one.
    fairness: FairnessReport | None = None

    @property
    def inconclusive(self) -> list[MetricRow]:
        """Rows past a threshold by the point estimate but not significantly: a lead decides, with a reason."""
        return [row for row in self.rows if row.verdict == "inconclusive"]


def compare_suite(
    name: str,
    reasons: list[str],
    base: Variant | None,
    head: Variant,
    thresholds: Thresholds,
    latency: LatencyEvidence | None = None,
) -> SuiteReport:
    """Compare head with base on the cases both answered; a head-only suite is reported without deltas.

    `latency`: the pairs latency is decided on; by default every sample both answered (a run that
    called every model afresh).
    """
    strict = thresholds.gating == "strict"
    t = thresholds
    bm = base.metrics if base else None

    def pair(attr: str) -> tuple[Any, Any]:
        return (getattr(bm, attr) if bm else None), getattr(head.metrics, attr)

    if base is not None and latency is None:
        latency = same_run_pairs(base, head)
    acc = paired(base, head, accuracy_of, t.alpha)
    p50, p95 = _latency_rows(pair("latency_p50_s"), pair("latency_p95_s"), latency, t, strict)
    rows = [
        _rate_row(
            "accuracy", "Accuracy", pair("accuracy"), pair("accuracy_interval"), acc, t.accuracy_drop_pp, -1, strict
        ),
        p50,
        p95,
        _cost_row(base, head, pair("cost_per_1k_usd"), t, strict),
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
        _info_row("cost_per_pct", "Cost / 1% accuracy", "usd", pair("cost_per_pct_usd")),
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
    summary = None
    if base is not None and latency is not None:
        answered = len(set(per_case(base.results, latency_of)) & set(per_case(head.results, latency_of)))
        summary = LatencySummary(
            latency.cases,
            latency.remeasured,
            max(answered - latency.cases, 0) if latency.remeasured else 0,
            latency.slowest("base"),
            latency.slowest("head"),
        )
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
        latency=summary,
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


def _info_row(key: str, label: str, unit: Literal["s", "usd"], values: tuple[float | None, float | None]) -> MetricRow:
    """A row shown for information (or with nothing to compare): its relative change, no verdict."""
    base, head = values
    change = relative_change_pct(base, head)
    return MetricRow(key, label, unit, base, head, change, "%" if change is not None else "")


def _latency_rows(
    p50: tuple[float | None, float | None],
    p95: tuple[float | None, float | None],
    latency: LatencyEvidence | None,
    t: Thresholds,
    strict: bool,
) -> tuple[MetricRow, MetricRow]:
    """p50 (shown) and p95 (gated) of the same-run pairs; the head's alone for a new suite."""
    if latency is None:
        return (
            _info_row("latency_p50", "Latency p50", "s", p50),
            _info_row("latency_p95", "Latency p95", "s", p95),
        )
    grouped = _by_case(latency.pairs)
    base_s = [[p.base.latency_s for p in pairs] for pairs in grouped]
    head_s = [[p.head.latency_s for p in pairs] for pairs in grouped]
    flat_base, flat_head = [v for vs in base_s for v in vs], [v for vs in head_s for v in vs]
    limit = 1 + t.latency_p95_increase_pct / 100
    test = paired_ratio(base_s, head_s, "p95", limit, t.alpha) if grouped else None
    values = (percentile(flat_base, 95), percentile(flat_head, 95))
    return (
        _info_row("latency_p50", "Latency p50", "s", (percentile(flat_base, 50), percentile(flat_head, 50))),
        _ratio_row("latency_p95", "Latency p95", "s", values, test, t.latency_p95_increase_pct, strict),
    )


def _by_case(pairs: Sequence[LatencyPair]) -> list[list[LatencyPair]]:
    """Pairs grouped by case, keeping the cases with every sample paired (a case is resampled whole)."""
    groups: dict[str, list[LatencyPair]] = {}
    for p in pairs:
        groups.setdefault(p.base.case_id, []).append(p)
    full = max((len(g) for g in groups.values()), default=0)
    return [g for g in groups.values() if len(g) == full]


def _cost_row(
    base: Variant | None, head: Variant, values: tuple[float | None, float | None], t: Thresholds, strict: bool
) -> MetricRow:
    """Cost per 1K queries, tested as the ratio of the mean cost of the paired cases."""
    if base is None:
        return _info_row("cost_per_1k", "Cost / 1K queries", "usd", values)
    b, h = per_case(base.results, cost_of), per_case(head.results, cost_of)
    common = [case_id for case_id in h if case_id in b]
    limit = 1 + t.cost_increase_pct / 100
    test = paired_ratio([[b[c]] for c in common], [[h[c]] for c in common], "mean", limit, t.alpha)
    return _ratio_row("cost_per_1k", "Cost / 1K queries", "usd", values, test, t.cost_increase_pct, strict)


def ratio_verdict(test: RatioTest, threshold_pct: float, strict: bool) -> Verdict:
    """The gate's verdict on a latency or cost row from its bootstrap, as `compare_suite` decides it."""
    change = (test.ratio - 1) * 100
    if change > threshold_pct:
        decided = test.p_above < test.alpha or strict
        return "fail" if decided and test.n >= MIN_RATIO_PAIRS else "inconclusive"
    if change < 0 and test.p_two_sided < test.alpha:
        return "improved"
    return "pass"


def _ratio_row(
    key: str,
    label: str,
    unit: Literal["s", "usd"],
    values: tuple[float | None, float | None],
    test: RatioTest | None,
    threshold_pct: float,
    strict: bool,
) -> MetricRow:
    """A row gated on the paired bootstrap of head / base: the change shown is the tested ratio's.

    A rise past the threshold fails when the one-sided lower bound of the ratio is past it too (`strict`:
    the point estimate alone), and is inconclusive otherwise, or always when fewer than
    MIN_RATIO_PAIRS cases were paired: one slow call must not decide a p95 of ten.
    """
    base, head = values
    if test is None:
        return _info_row(key, label, unit, values)
    change = (test.ratio - 1) * 100
    verdict = ratio_verdict(test, threshold_pct, strict)
    one_sided = change > 0
    p_value = test.p_above if one_sided else test.p_two_sided
    needed = None
    if verdict == "inconclusive":
        needed = max(test.cases_needed() or MIN_RATIO_PAIRS, MIN_RATIO_PAIRS)
    return MetricRow(
        key,
        label,
        unit,
        base,
        head,
        change,
        "%",
        Interval((test.interval.low - 1) * 100, (test.interval.high - 1) * 100),
        p_value=p_value,
        significant=p_value < test.alpha,
        threshold=threshold_pct,
        verdict=verdict,
        test="bootstrap",
        one_sided=one_sided,
        cases_needed=needed,
        statistic=test.statistic,
        bound=(test.bound - 1) * 100,
        pairs=test.n,
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
