"""The distributions that replace scipy.stats, against values scipy 1.17 computed (kept as constants:
scipy is no longer a dependency). Compared with scipy on thousands of random inputs before it left, the
largest relative differences were: binomial tests 4e-11, binomial tails and probabilities 2e-9 (at a
million trials), signed-rank p-values 3e-15, chi-square 2e-14, KS 3e-11, Wilson and normal 1e-15."""

from __future__ import annotations

import numpy as np
import pytest

from bot.engine import distributions as d
from bot.engine import drift
from bot.engine.stats import proportion_interval

# The exact signed-rank distribution (15 distinct differences), sign flips (12 with ties and zeros), and
# the normal approximation with the tie correction (40 with ties; 60 distinct).
EXACT = [0.3, -0.1, 0.25, 0.7, -0.05, 0.42, 0.11, 0.9, -0.33, 0.15, 0.61, 0.08, -0.2, 0.5, 0.35]
FLIPS = [1 / 3, 1 / 3, -2 / 3, 0, 1, 1 / 3, -1 / 3, 2 / 3, 1 / 3, 0, 1 / 3, -1 / 3]
TIED = [round(((i * 37) % 17 - 6) / 10, 1) for i in range(40)]
LARGE = [((i * 7919) % 101 - 45) / 50 for i in range(60)]


@pytest.mark.parametrize(
    ("diffs", "expected"),
    [
        (EXACT, (0.009033203125, 0.992462158203125, 0.01806640625)),
        (FLIPS, (0.1611328125, 0.8798828125, 0.322265625)),
        (TIED, (0.012414550131937378, 0.9875854498680626, 0.024829100263874755)),
        (LARGE, (0.11867640374172267, 0.8813235962582773, 0.23735280748344534)),
    ],
)
def test_signed_rank_p_values_are_scipys(diffs: list[float], expected: tuple[float, float, float]) -> None:
    assert d.signed_rank_ps(diffs) == pytest.approx(expected, rel=1e-12)


def test_binomial_tests_are_scipys() -> None:
    # 7 of 20, summed exactly; 2,600 of 5,000 by the incomplete beta function.
    assert d.binomial_tails_half(7, 13) == pytest.approx((0.9423408508300781, 0.13158798217773438, 0.26317596435546875))
    assert d.binomial_tails_half(2600, 2400) == pytest.approx(
        (0.002441824868758747, 0.9977647795188216, 0.004883649737517494), rel=1e-10
    )
    assert d.binomial_tails_half(10, 10) == (pytest.approx(0.5880985260009766), pytest.approx(0.5880985260009766), 1.0)


def test_binomial_sf_and_pmf_are_scipys() -> None:
    sf = d.binomial_sf(np.array([40, 3, -1, 10]), np.array([200, 10, 10, 10]), 0.162)
    assert sf[0] == pytest.approx(0.06326475303051907, rel=1e-12)
    assert (sf[2], sf[3]) == (1.0, 0.0)
    assert d.binomial_sf(np.array([3]), np.array([10]), 0.7)[0] == pytest.approx(0.9894079216, rel=1e-12)
    assert d.binomial_pmf(np.array([37]), 200, 0.244)[0] == pytest.approx(0.009741891143384208, rel=1e-10)


def test_normal_and_chi_square_are_scipys() -> None:
    assert d.normal_ppf(0.95) == pytest.approx(1.6448536269514722, rel=1e-15)
    assert d.normal_ppf(1e-10) == pytest.approx(-6.361340902404056, rel=1e-14)
    assert d.normal_sf(8.5) == pytest.approx(9.47953482220325e-18, rel=1e-12)
    assert d.chi2_sf(12.3, 4) == pytest.approx(0.015254394655769615, rel=1e-12)
    assert d.chi2_sf(3.1, 1) == pytest.approx(0.07829229414640966, rel=1e-12)
    assert d.chi2_sf(250.0, 7) == pytest.approx(2.770711708247275e-50, rel=1e-10)


def test_wilson_interval_is_scipys() -> None:
    interval = proportion_interval([1.0] * 30 + [0.0] * 10)
    assert (interval.low, interval.high) == pytest.approx((0.5980, 0.8581), abs=1e-4)


def test_drift_tests_are_scipys() -> None:
    # chi2_contingency: Yates' correction at one degree of freedom, none at two.
    two = drift.categorical_drift(["a"] * 30 + ["b"] * 10, ["a"] * 18 + ["b"] * 22)
    assert (two.statistic, two.p_value) == pytest.approx((6.302083333333334, 0.012059616177490228), rel=1e-12)
    three = drift.categorical_drift(["a"] * 30 + ["b"] * 10 + ["c"] * 5, ["a"] * 18 + ["b"] * 22 + ["c"] * 9)
    assert (three.statistic, three.p_value) == pytest.approx((8.488014253320374, 0.014349974315192176), rel=1e-12)
    # ks_2samp's exact p-value, for unequal and equal sample sizes.
    base = [((i * 13) % 29) / 3 for i in range(40)]
    head = [((i * 11) % 31) / 3 + 1 for i in range(55)]
    ks = drift.numeric_drift(base, head)
    assert (ks.statistic, ks.p_value) == pytest.approx((0.20454545454545456, 0.24731065827831414), rel=1e-10)
    equal_base = [((i * 13) % 29) / 3 for i in range(50)]
    equal = drift.numeric_drift(equal_base, [((i * 11) % 31) / 3 + 1.5 for i in range(50)])
    assert (equal.statistic, equal.p_value) == pytest.approx((0.22, 0.17858668181221732), rel=1e-10)
    # wasserstein_distance.
    assert drift._wasserstein(np.sort(base), np.sort(head)) == pytest.approx(1.3643939393939393, rel=1e-12)
