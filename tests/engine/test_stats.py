from __future__ import annotations

import pytest

from bot.engine.stats import paired_delta, percentile, proportion_interval, relative_change_pct


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
    assert result.p_value == pytest.approx(0.109375)
    assert not result.significant
    assert result.interval.low < 0.15 < result.interval.high


def test_a_clear_drop_is_significant() -> None:
    base = [1.0] * 40
    head = [1.0] * 28 + [0.0] * 12
    result = paired_delta(base, head)
    assert result.delta == pytest.approx(-0.3)
    assert result.p_value == pytest.approx(2 * 0.5**12)
    assert result.significant and result.interval.high < 0


def test_identical_variants_have_no_change() -> None:
    result = paired_delta([1.0, 0.0, 1.0], [1.0, 0.0, 1.0])
    assert (result.delta, result.p_value, result.significant) == (0.0, 1.0, False)
    assert (result.interval.low, result.interval.high) == (0.0, 0.0)


def test_min_detectable_drop_shrinks_with_more_cases() -> None:
    small = paired_delta([1.0, 0.0] * 10, [1.0, 0.0] * 10)
    large = paired_delta([1.0, 0.0] * 200, [1.0, 0.0] * 200)
    # No case differs: independent errors at a 50% rate, sd = sqrt(2 * 0.5 * 0.5), z = 1.96 + 0.84.
    assert small.min_detectable == pytest.approx(2.8016 * 0.7071 / 20**0.5, abs=1e-3)
    assert large.min_detectable < small.min_detectable


def test_continuous_values_use_wilcoxon() -> None:
    base = [0.10, 0.12, 0.11, 0.13, 0.10, 0.12, 0.11, 0.14, 0.10, 0.12]
    head = [b + 0.05 for b in base]
    result = paired_delta(base, head)
    assert result.delta == pytest.approx(0.05) and result.test == "wilcoxon"
    assert result.significant


def test_relative_change() -> None:
    assert relative_change_pct(2.0, 2.5) == pytest.approx(25.0)
    assert relative_change_pct(0.0, 1.0) is None
    assert relative_change_pct(None, 1.0) is None
