from __future__ import annotations

import math

import pytest

from bot.engine import stats
from bot.engine.stats import (
    mcnemar_power,
    paired_delta,
    paired_ratio,
    paired_test,
    percentile,
    proportion_interval,
    relative_change_pct,
)


def test_percentiles_interpolate_linearly() -> None:
    values = [0.1 * i for i in range(1, 11)]  # 0.1 .. 1.0
    assert percentile(values, 50) == pytest.approx(0.55)
    assert percentile(values, 95) == pytest.approx(0.955)
    assert percentile(values, 99) == pytest.approx(0.991)
    assert percentile([], 50) is None


def test_wilson_interval_of_pass_fail_scores() -> None:
    interval = proportion_interval([1.0] * 36 + [0.0] * 4)
    assert (interval.low, interval.high) == pytest.approx((0.7695, 0.9604), abs=1e-4)
    # All passing still leaves room below 100%, as a 40-case sample should.
    perfect = proportion_interval([1.0] * 40)
    assert perfect.high == 1.0 and perfect.low == pytest.approx(0.9124, abs=1e-4)
    assert proportion_interval([]) is None


def test_paired_delta_uses_mcnemar_on_discordant_pairs() -> None:
    base = [1.0] * 30 + [0.0] * 10
    head = [0.0] * 2 + [1.0] * 36 + [0.0] * 2  # 2 broken, 8 fixed
    result = paired_delta(base, head)
    assert result.delta == pytest.approx(0.15)
    assert result.test == "mcnemar"
    # Two-sided 2 × P(X ≥ 8) for X ~ Binomial(10, 1/2); one-sided each way P(X ≥ 8) and P(X ≥ 2).
    assert result.p_value == pytest.approx(0.109375)
    assert result.p_increase == pytest.approx(56 / 1024)
    assert result.p_decrease == pytest.approx(1013 / 1024)
    assert not result.significant
    assert result.interval.low < 0.15 < result.interval.high


def test_a_clear_drop_is_significant() -> None:
    base = [1.0] * 40
    head = [1.0] * 28 + [0.0] * 12
    result = paired_delta(base, head)
    assert result.delta == pytest.approx(-0.3)
    assert result.p_value == pytest.approx(2 * 0.5**12)
    assert (result.p_decrease, result.p_increase) == (pytest.approx(0.5**12), 1.0)
    assert result.significant and result.interval.high < 0


def test_one_sided_decides_a_drop_the_two_sided_test_misses() -> None:
    # 9 broken, 2 fixed: P(X ≥ 9) = 67/2048 for X ~ Binomial(11, 1/2), under 0.05; twice that is not.
    base = [1.0] * 36 + [0.0] * 4
    head = [0.0] * 9 + [1.0] * 29 + [0.0] * 2
    result = paired_test(base, head)
    assert result.p_decrease == pytest.approx(67 / 2048)
    assert result.p_toward(-1) < 0.05 <= result.p_value
    assert paired_test(base, head, alpha=0.01).p_toward(-1) > 0.01


def test_identical_variants_have_no_change() -> None:
    result = paired_delta([1.0, 0.0, 1.0], [1.0, 0.0, 1.0])
    assert (result.delta, result.p_value, result.p_increase, result.p_decrease) == (0.0, 1.0, 1.0, 1.0)
    assert not result.significant
    assert (result.interval.low, result.interval.high) == (0.0, 0.0)


def test_min_detectable_drop_is_one_sided_and_shrinks_with_more_cases() -> None:
    small = paired_delta([1.0, 0.0] * 10, [1.0, 0.0] * 10)
    large = paired_delta([1.0, 0.0] * 200, [1.0, 0.0] * 200)
    # No case differs: independent errors at a 50% rate, sd = sqrt(2 * 0.5 * 0.5), z = 1.645 + 0.842.
    assert small.min_detectable == pytest.approx(2.4865 * 0.70711 / 20**0.5, abs=1e-4)
    assert large.min_detectable < small.min_detectable
    # A lower α asks for a bigger change.
    assert paired_test([1.0, 0.0] * 10, [1.0, 0.0] * 10, alpha=0.01).min_detectable == pytest.approx(
        (2.3263 + 0.8416) * 0.70711 / 20**0.5, abs=1e-4
    )


def test_cases_needed_for_the_observed_drop() -> None:
    # 5 broken and 1 fixed of 40: -10 pp, one-sided p = 7/64, not significant.
    result = paired_test([1.0] * 36 + [0.0] * 4, [0.0] * 5 + [1.0] * 32 + [0.0] * 3)
    assert (result.delta, result.p_decrease) == (pytest.approx(-0.1), pytest.approx(7 / 64))
    # Where the exact one-sided McNemar power, a case getting worse 12.5% and better 2.5% of the time,
    # crosses 80%.
    assert result.cases_needed(-1) == 100
    assert mcnemar_power(100, 0.125, 0.025) == pytest.approx(0.80146, abs=1e-5)
    assert mcnemar_power(99, 0.125, 0.025) < 0.8
    # No change toward a rise, so no number of cases would show one.
    assert result.cases_needed(+1) is None


def test_exact_mcnemar_power_matches_the_issue_design() -> None:
    # 90% → 82% drawn independently per case: worse 0.9 × 0.18, better 0.1 × 0.82.
    assert mcnemar_power(200, 0.162, 0.082) == pytest.approx(0.70499, abs=1e-5)
    # The two-sided test at 0.05 rejects a drop as the one-sided one at 0.025 does.
    assert mcnemar_power(200, 0.162, 0.082, alpha=0.025) == pytest.approx(0.58841, abs=1e-5)
    assert mcnemar_power(40, 0.09, 0.09) == pytest.approx(0.01849, abs=1e-5)


def test_continuous_values_use_wilcoxon() -> None:
    base = [0.10, 0.12, 0.11, 0.13, 0.10, 0.12, 0.11, 0.14, 0.10, 0.12]
    head = [b + 0.05 for b in base]
    result = paired_delta(base, head, outcomes=False)
    assert result.delta == pytest.approx(0.05) and result.test == "wilcoxon"
    # All ten cases rose: the exact signed-rank tail is 1/1024 one-sided.
    assert (result.p_increase, result.p_decrease, result.p_value) == (1 / 1024, 1.0, 2 / 1024)
    assert result.significant


def test_measurements_of_exactly_one_are_not_pass_fail() -> None:
    result = paired_test([1.0] * 5, [0.0] * 5, outcomes=False)
    assert result.test == "wilcoxon" and result.p_decrease == 0.5**5


def test_shares_of_repeated_samples_use_wilcoxon_on_the_cases() -> None:
    # 20 cases of 3 samples each: one paired value per case, its share of passing samples.
    base = [1.0] * 18 + [2 / 3, 2 / 3]
    head = [2 / 3] * 6 + [0.0] + [1.0] * 11 + [1.0, 2 / 3]
    result = paired_test(base, head)
    assert (result.n, result.test) == (20, "wilcoxon")
    assert result.p_decrease == pytest.approx(0.017404239405933563, abs=1e-12)


def test_relative_change() -> None:
    assert relative_change_pct(2.0, 2.5) == pytest.approx(25.0)
    assert relative_change_pct(0.0, 1.0) is None
    assert relative_change_pct(None, 1.0) is None


@pytest.mark.parametrize("chunk_values", [1, 999, 1_000_000_000])
def test_the_bootstrap_draws_the_same_numbers_in_chunks_of_any_size(
    chunk_values: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    values = [(-1.0, 0.0, 0.5, 1.0)[(i * 7) % 4] * (i % 3) for i in range(300)]
    # Every resample at once, as an unchunked bootstrap would draw them.
    data = np.asarray(values)
    rng = np.random.default_rng(stats.BOOTSTRAP_SEED)
    means = data[rng.integers(0, len(data), size=(stats.BOOTSTRAP_RESAMPLES, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    monkeypatch.setattr(stats, "BOOTSTRAP_CHUNK_VALUES", chunk_values)
    assert stats._bootstrap_mean(values) == stats.Interval(float(low), float(high))


def test_the_ratio_bootstrap_bound_and_p_value_are_one_decision() -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    base = rng.lognormal(0, 0.4, (60, 1))
    for factor in (1.0, 1.1, 1.15, 1.2, 1.3):
        head = base * factor * rng.lognormal(0, 0.2, (60, 1))
        test = paired_ratio(base.tolist(), head.tolist(), "p95", 1.1)
        assert test is not None and test.n == 60
        # The bound is the α-quantile of the resampled ratios; the p-value the share at or below the limit.
        assert (test.bound > test.limit) == (test.p_above < test.alpha)
        assert test.interval.low <= test.ratio <= test.interval.high or factor == 1.0
    assert paired_ratio([[0.0]] * 5, [[1.0]] * 5, "mean", 1.25) is None
    assert paired_ratio([], [], "p95", 1.1) is None


def test_the_ratio_of_p95_pairs_cases_and_keeps_their_samples_together() -> None:
    # Three samples per case; every head call twice its base's: each resample's ratio is 2.
    base = [[1.0 + c / 10, 1.1 + c / 10, 0.9 + c / 10] for c in range(25)]
    head = [[2 * v for v in case] for case in base]
    test = paired_ratio(base, head, "p95", 1.1)
    assert (test.ratio, test.bound, test.interval.low, test.interval.high) == pytest.approx((2, 2, 2, 2))
    assert test.p_above == 1 / stats.BOOTSTRAP_RESAMPLES


def test_the_p95_bootstrap_partitions_its_resamples_in_place_never_the_cases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import numpy as np

    # Given arrays, not lists: numpy would partition them in place were they not copied, and their
    # order is what pairs each base call with its head call.
    base = np.array([[float(v)] for v in (5, 1, 4, 2, 3, 9, 0, 8, 7, 6)])
    head = base[::-1].copy()
    before = base.copy(), head.copy()
    in_place = paired_ratio(base, head, "p95", 1.1)
    assert np.array_equal(base, before[0]) and np.array_equal(head, before[1])
    # The same numbers as when numpy copies every resample before partitioning it.
    percentile = np.percentile
    monkeypatch.setattr(np, "percentile", lambda *a, **kw: percentile(*a, **{**kw, "overwrite_input": False}))
    assert in_place == paired_ratio(before[0], before[1], "p95", 1.1)


def test_pairs_needed_grow_as_the_change_nears_the_threshold() -> None:
    import numpy as np

    base = np.array([[1.0 + (i % 10) / 10] for i in range(30)])
    wobble = np.array([[1 + 0.2 * np.sin(i)] for i in range(30)])
    near = paired_ratio(base.tolist(), (base * 1.15 * wobble).tolist(), "p95", 1.1)
    far = paired_ratio(base.tolist(), (base * 1.6 * wobble).tolist(), "p95", 1.1)
    assert near.ratio > 1.1 and far.ratio > near.ratio
    assert near.cases_needed() > far.cases_needed() >= 1
    # Not above the limit: no number of cases would show it above.
    assert paired_ratio(base.tolist(), base.tolist(), "p95", 1.1).cases_needed() is None


@pytest.mark.parametrize("chunk_values", [7, 1_000_000_000])
def test_the_ratio_bootstrap_draws_the_same_numbers_in_chunks_of_any_size(
    chunk_values: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = [[0.5 + ((i * 7) % 13) / 10] for i in range(40)]
    head = [[b[0] * (1 + ((i * 5) % 7) / 20)] for i, b in enumerate(base)]
    reference = paired_ratio(base, head, "p95", 1.1)
    monkeypatch.setattr(stats, "BOOTSTRAP_CHUNK_VALUES", chunk_values)
    assert paired_ratio(base, head, "p95", 1.1) == reference


def test_holm_adjusts_a_hand_worked_family() -> None:
    # Sorted 0.01, 0.02, 0.04 times 3, 2, 1: 0.03, 0.04, 0.04. All three are below 0.05, where
    # Bonferroni (times 3: 0.03, 0.06, 0.12) rejects only the first.
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    # Monotone: 0.04 × 1 = 0.04 would fall below 0.03 × 2 = 0.06, so it takes 0.06; capped at 1.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_a_rate_above_a_limit_is_an_exact_binomial_tail() -> None:
    # 3 of 10 above 5%: P(X ≥ 3) for X ~ Binomial(10, 0.05) = 1 − P(0) − P(1) − P(2).
    tail = 1 - sum(math.comb(10, k) * 0.05**k * 0.95 ** (10 - k) for k in range(3))
    assert stats.rate_above_p(3, 10, 0.05) == pytest.approx(tail)
    assert stats.rate_above_p(0, 10, 0.05) == 1.0 and stats.rate_above_p(0, 0, 0.05) == 1.0


def test_cases_for_a_rate_to_test_above_its_limit() -> None:
    # ((1.6449 √(0.05·0.95) + 0.8416 √(0.3·0.7)) / 0.25)² = (0.7442 / 0.25)² = 8.86 → 9.
    assert stats.rate_cases_needed(0.05, 0.30) == 9
    assert stats.rate_cases_needed(0.05, 0.10) > stats.rate_cases_needed(0.05, 0.30)
    assert stats.rate_cases_needed(0.05, 0.05) is None


def test_the_group_bootstrap_pairs_cases_within_groups() -> None:
    same = [1.0] * 90 + [0.0] * 10
    dropped = [1.0] * 75 + [0.0] * 25
    # Group b's head loses 15 of its 90 passing cases (in the same order); group a is unchanged: the gap
    # goes 0 → 15 pp, and b's change is 15 pp below a's.
    gap = stats.group_gap([(same, same), (same, dropped)], margin=0.05)
    assert gap is not None
    # The resampled base gap is not 0 (two groups of 100 at 90% differ by chance): the interval is
    # wide and reaches a little below 0.
    assert gap.interval == stats.Interval(pytest.approx(-0.02, abs=1e-9), pytest.approx(0.21, abs=1e-9))
    assert gap.relative == pytest.approx([0.15, -0.15])
    # b's lag: 15 of 100 broke, sd √(0.15 · 0.85 / 100) = 3.6 pp; 5 pp is 2.8 of them away.
    assert gap.spread[1] == pytest.approx(0.0357, abs=0.002)
    assert gap.p_behind[0] == 1.0 and gap.p_behind[1] < 0.01
    # Nothing changed: every resample has the same gap on both sides, and no group lags.
    still = stats.group_gap([(same, same), (dropped, dropped)], margin=0.05)
    assert still is not None and still.interval == stats.Interval(0.0, 0.0) and still.p_behind == [1.0, 1.0]
    assert stats.group_gap([(same, same)], margin=0.05) is None


def test_cases_for_a_lag_past_its_margin() -> None:
    gap = stats.GroupGap(stats.Interval(0, 0), relative=[-0.15], p_behind=[0.2], spread=[0.05], margin=0.05)
    # 100 × ((1.6449 + 0.8416) × 0.05 / 0.10)² = 154.6 → 155.
    assert gap.cases_needed(0, 100, 0.05) == 155
    assert stats.GroupGap(stats.Interval(0, 0), [-0.04], [1.0], [0.05], 0.05).cases_needed(0, 100, 0.05) is None
