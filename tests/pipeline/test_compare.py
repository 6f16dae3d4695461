"""The gate's verdict on each row: one-sided tests toward the harm, per-case shares with repeats."""

from __future__ import annotations

import pytest

from bot.engine.graders import Grade
from bot.engine.runner import CaseResult
from bot.engine.stats import paired_test
from bot.errors import InputError
from bot.pipeline.compare import MetricRow, SuiteReport, Variant, compare_suite, rate_verdict
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


def test_a_latency_rise_is_tested_one_sided_with_wilcoxon() -> None:
    # Every one of 5 cases 20% slower: the exact one-sided signed-rank p is 1/32 (two-sided 1/16 would not decide).
    base = Variant("base", "1.0.0", "openai/m", [outcome(i, True, latency_s=1.0) for i in range(5)])
    head = Variant("head", "1.1.0", "openai/m", [outcome(i, True, latency_s=1.2) for i in range(5)])
    p95 = row(compare_suite("qa", ["changed"], base, head, Thresholds()), "latency_p95")
    assert p95.delta == pytest.approx(20.0)
    assert (p95.test, p95.one_sided, p95.p_value, p95.verdict) == ("wilcoxon", True, 1 / 32, "fail")


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
