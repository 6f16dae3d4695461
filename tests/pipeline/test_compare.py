"""The gate's verdict on each row: one-sided tests toward the harm, per-case shares with repeats."""

from __future__ import annotations

import pytest

from bot.engine.graders import Grade
from bot.engine.runner import CaseResult, LatencyPair, TimedCall
from bot.engine.stats import paired_test, percentile
from bot.errors import InputError
from bot.pipeline.compare import LatencyEvidence, MetricRow, SuiteReport, Variant, compare_suite, rate_verdict
from bot.pipeline.config import Thresholds, parse_config

BASE_36_OF_40 = [True] * 36 + [False] * 4


def outcome(case: int, passed: bool, sample: int = 0, latency_s: float = 1.0) -> CaseResult:
    grade = Grade("equals", "accuracy", passed, "" if passed else "expected 'x'")
    return CaseResult(f"c{case}", None, sample, "answer", latency_s, 0.001, 100, 20, False, None, (grade,))


def suite_of(base: list[bool], head: list[bool], thresholds: Thresholds | None = None) -> SuiteReport:
    base_variant = Variant("base", "1.0.0", "openai/m", [outcome(i, p) for i, p in enumerate(base)])
    head_variant = Variant("head", "1.1.0", "openai/m", [outcome(i, p) for i, p in enumerate(head)])
    return compare_suite("qa", ["changed"], base_variant, head_variant, thresholds or Thresholds())


def row(suite: SuiteReport, key: str) -> MetricRow:
    return next(r for r in suite.rows if r.key == key)


def flips(broken: int, fixed: int) -> list[bool]:
    """Head outcomes against BASE_36_OF_40: the first `broken` passing cases fail, `fixed` failing ones pass."""
    return [False] * broken + [True] * (36 - broken) + [True] * fixed + [False] * (4 - fixed)


def test_a_drop_significant_one_sided_fails_the_gate() -> None:
    # 9 broken, 2 fixed: one-sided p = P(X ≥ 9 | Binomial(11, 1/2)) = 67/2048; two-sided 0.0654 would not decide it.
    acc = row(suite_of(BASE_36_OF_40, flips(9, 2)), "accuracy")
    assert acc.delta == pytest.approx(-17.5)
    assert (acc.test, acc.one_sided, acc.p_value) == ("mcnemar", True, pytest.approx(67 / 2048))
    assert acc.verdict == "fail" and acc.significant is True and acc.cases_needed is None


def test_alpha_is_the_base_policy_level() -> None:
    suite = suite_of(BASE_36_OF_40, flips(9, 2), Thresholds(alpha=0.01))
    acc = row(suite, "accuracy")
    assert acc.verdict == "inconclusive" and suite.verdict == "pass" and suite.alpha == 0.01
    # At α = 0.01, a case getting worse 9/40 and better 2/40 of the time: the exact power crosses 80% at 91.
    assert acc.cases_needed == 91


def test_alpha_is_read_from_the_base_and_checked() -> None:
    base, head = parse_config("thresholds: {alpha: 0.01}\n"), parse_config("thresholds: {alpha: 0.2}\n")
    assert head.with_policy_of(base).thresholds.alpha == 0.01
    with pytest.raises(InputError, match=r"^\.evalbot\.yml:2: thresholds\.alpha: Input should be less than 0\.5$"):
        parse_config("thresholds:\n  alpha: 0.5\n")


def test_an_inconclusive_breach_states_the_cases_needed() -> None:
    acc = row(suite_of(BASE_36_OF_40, flips(5, 1)), "accuracy")
    assert (acc.verdict, acc.p_value) == ("inconclusive", pytest.approx(7 / 64))
    assert acc.cases_needed == 100
    assert acc.min_detectable == pytest.approx(14.8976, abs=1e-4)


def test_strict_gating_keeps_the_point_estimate() -> None:
    assert row(suite_of(BASE_36_OF_40, flips(5, 1), Thresholds(gating="strict")), "accuracy").verdict == "fail"


def test_an_improvement_needs_the_two_sided_test() -> None:
    # 9 fixed, 2 broken on a base of 27 / 40: significant one-sided toward a gain, not two-sided.
    base = [True] * 27 + [False] * 13
    head = [False] * 2 + [True] * 25 + [True] * 9 + [False] * 4
    acc = row(suite_of(base, head), "accuracy")
    assert (acc.one_sided, acc.p_value) == (False, pytest.approx(134 / 2048))
    assert acc.verdict == "pass"
    assert rate_verdict([1.0] * 40, [0.0] * 12 + [1.0] * 28, 2.0, +1, 0.05, False) == "improved"


def test_rate_verdict_is_the_rows_verdict() -> None:
    for broken, fixed in ((9, 2), (5, 1), (0, 3), (1, 0)):
        head = flips(broken, fixed)
        expected = row(suite_of(BASE_36_OF_40, head), "accuracy").verdict
        base = [float(p) for p in BASE_36_OF_40]
        assert rate_verdict(base, [float(p) for p in head], 2.0, -1, 0.05, False) == expected


def timed_variant(
    name: str, latencies: list[float], cost_usd: float = 0.001, retried: set[int] = frozenset()
) -> Variant:
    results = [
        CaseResult(f"c{i}", None, 0, "answer", s, cost_usd, 100, 20, False, None, (), i in retried)
        for i, s in enumerate(latencies)
    ]
    return Variant(name, "1", "openai/m", results)


# 40 cases whose latencies spread from 0.8 s to 1.2 s.
SPREAD = [0.8 + 0.4 * ((i * 7) % 40) / 39 for i in range(40)]


def test_a_p95_rise_fails_on_the_bootstrap_bound_of_the_ratio() -> None:
    suite = compare_suite(
        "qa", ["changed"], timed_variant("base", SPREAD), timed_variant("head", [s * 1.3 for s in SPREAD]), Thresholds()
    )
    p95 = row(suite, "latency_p95")
    assert p95.delta == pytest.approx(30.0)
    # The test of the statistic shown: a paired bootstrap of the p95 ratio, one-sided against the 10% threshold.
    assert (p95.test, p95.statistic, p95.one_sided, p95.pairs, p95.verdict) == ("bootstrap", "p95", True, 40, "fail")
    assert p95.bound > 10 and p95.p_value < 0.05
    assert p95.delta_interval.low <= 30 <= p95.delta_interval.high
    # Every head call exactly 30% slower: each resample's ratio is 1.3, so the bound is too.
    assert p95.bound == pytest.approx(30.0)


def test_one_slow_call_does_not_decide_p95() -> None:
    # The same latencies but for three slow head calls (a cold start, two loaded moments): p95 rises past
    # 10%, the bound of the ratio does not.
    head = list(SPREAD)
    for value, slow in zip(sorted(SPREAD)[-3:], (2.0, 3.0, 12.0), strict=True):
        head[SPREAD.index(value)] = slow
    suite = compare_suite("qa", ["changed"], timed_variant("base", SPREAD), timed_variant("head", head), Thresholds())
    p95 = row(suite, "latency_p95")
    assert p95.delta > 10 and p95.bound <= 10 and p95.p_value >= 0.05
    assert p95.verdict == "inconclusive" and p95.cases_needed > 40
    # The report names the slowest calls of each side, with their case ids.
    assert [c.latency_s for c in suite.latency.slowest_head[:3]] == [12.0, 3.0, 2.0]
    assert len(suite.latency.slowest_base) == 5 and suite.latency.slowest_base[0].latency_s == max(SPREAD)


def test_fewer_than_20_pairs_are_inconclusive_never_a_fail() -> None:
    base, head = timed_variant("base", SPREAD[:12]), timed_variant("head", [s * 2 for s in SPREAD[:12]])
    for gating in ("significant", "strict"):
        p95 = row(compare_suite("qa", ["changed"], base, head, Thresholds(gating=gating)), "latency_p95")
        assert p95.delta == pytest.approx(100.0) and p95.bound == pytest.approx(100.0)
        assert (p95.verdict, p95.pairs, p95.cases_needed) == ("inconclusive", 12, 20)


def test_latency_is_decided_on_the_same_run_pairs_only() -> None:
    # The answers' latencies came from the cache: base fast (measured another day), head slow now.
    base, head = timed_variant("base", [0.05] * 40), timed_variant("head", SPREAD)
    assert row(compare_suite("qa", ["changed"], base, head, Thresholds()), "latency_p95").verdict == "fail"
    # Measured again, back to back, on 30 of the cases: the same spread of latencies on both sides.
    pairs = [
        LatencyPair(0, TimedCall(f"c{i}", SPREAD[(i + 1) % 30], False), TimedCall(f"c{i}", SPREAD[i], False))
        for i in range(30)
    ]
    suite = compare_suite("qa", ["changed"], base, head, Thresholds(), LatencyEvidence(pairs, remeasured=True))
    p95 = row(suite, "latency_p95")
    assert (p95.verdict, p95.pairs) == ("pass", 30)
    assert p95.base == pytest.approx(percentile([p.base.latency_s for p in pairs], 95))
    assert (suite.latency.pairs, suite.latency.remeasured, suite.latency.from_cache) == (30, True, 10)
    slowest = max(range(30), key=lambda i: SPREAD[i])
    assert suite.latency.slowest_head[0].case_id == f"c{slowest}" and not suite.latency.slowest_head[0].retried


def test_cost_is_tested_as_the_ratio_of_its_means() -> None:
    base = timed_variant("base", [1.0] * 30, cost_usd=0.001)
    head = timed_variant("head", [1.0] * 30, cost_usd=0.0015)
    cost = row(compare_suite("qa", ["changed"], base, head, Thresholds()), "cost_per_1k")
    assert (cost.test, cost.statistic, cost.delta, cost.verdict) == ("bootstrap", "mean", pytest.approx(50.0), "fail")
    assert cost.bound == pytest.approx(50.0) and cost.base == pytest.approx(1.0)


def test_repeats_are_tested_as_per_case_shares() -> None:
    # 20 cases × 3 samples. Base passes every sample but cases 18-19 pass 2 of 3; head: cases 0-5 lose
    # one sample, case 6 all three, case 18 recovers.
    base_passes = {18: 2, 19: 2}
    head_passes = {**dict.fromkeys(range(6), 2), 6: 0, 19: 2}

    def variant(name: str, passes: dict[int, int]) -> Variant:
        results = [outcome(c, s < passes.get(c, 3), sample=s) for c in range(20) for s in range(3)]
        return Variant(name, "1", "openai/m", results)

    suite = compare_suite("qa", ["changed"], variant("base", base_passes), variant("head", head_passes), Thresholds())
    acc = row(suite, "accuracy")
    assert suite.paired_cases == 20
    assert acc.delta == pytest.approx(-4 / 30 * 100)
    # The one-sided signed-rank test on the 20 per-case differences of shares ...
    assert (acc.test, acc.one_sided) == ("wilcoxon", True)
    assert acc.p_value == pytest.approx(0.017404239405933563, abs=1e-12)
    assert acc.verdict == "fail"
    # ... not McNemar on 60 samples as if they were independent cases (9 broken, 1 fixed: 11/1024).
    flat_base = [float(s < base_passes.get(c, 3)) for c in range(20) for s in range(3)]
    flat_head = [float(s < head_passes.get(c, 3)) for c in range(20) for s in range(3)]
    as_samples = paired_test(flat_base, flat_head)
    assert (as_samples.n, as_samples.p_decrease) == (60, pytest.approx(11 / 1024))
