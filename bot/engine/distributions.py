"""The distributions behind the paired tests and the drift checks, in pure Python and numpy.

Each function gives the numbers scipy.stats gave where evalbot used it (binomtest, wilcoxon, binom,
norm, chi2, ks_2samp), to rounding; tests/engine/test_distributions.py holds values computed by scipy.
Exact counts are Python or numpy integers wherever they fit, so small-sample p-values are exact ratios.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from statistics import NormalDist
from typing import Any

import numpy as np

_NORMAL = NormalDist()
# Binomial tails up to this many trials are summed as exact integers; above, the incomplete beta
# function gives them to about 1e-14 at a constant cost.
EXACT_BINOMIAL_TRIALS = 2000
# The continued fraction of the incomplete beta converges in O(√max(a, b)) steps: 10,000 covers
# a million trials.
_BETA_MAX_STEPS = 10_000
_BETA_EPS = 1e-15
_TINY = 1e-300


def normal_ppf(q: float) -> float:
    """The standard normal quantile (Wichura's AS241, as scipy's `ndtri`, to double precision)."""
    return _NORMAL.inv_cdf(q)


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z, accurate far into the tail (erfc, not 1 − cdf)."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def binomial_tails_half(up: int, down: int) -> tuple[float, float, float]:
    """p-values (greater, less, two-sided) of the exact binomial test of `up` successes in
    `up + down` trials at probability 1/2, as scipy's `binomtest`: the two-sided one sums the outcomes
    no likelier than the observed, which for a fair coin is twice the smaller tail, at most 1."""
    n = up + down
    if n == 0:
        return 1.0, 1.0, 1.0
    greater = _half_tail(up, n)  # P(X ≥ up)
    less = _half_tail(down, n)  # P(X ≤ up) = P(X ≥ down) by symmetry
    both = 1.0 if 2 * up == n else min(1.0, 2 * min(greater, less))
    return greater, less, both


def _half_tail(k: int, n: int) -> float:
    """P(X ≥ k) for X ~ Binomial(n, 1/2)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if n <= EXACT_BINOMIAL_TRIALS:
        return float(sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n)
    return float(binomial_sf(np.asarray([k - 1]), np.asarray([n]), 0.5)[0])


def binomial_sf(k: Any, n: Any, p: float) -> Any:
    """P(X > k) for X ~ Binomial(n, p), elementwise over arrays `k` and `n` (scipy's `binom.sf`):
    the regularized incomplete beta I_p(k + 1, n − k)."""
    k, n = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
    out = np.where(k < 0, 1.0, 0.0)
    inside = (k >= 0) & (k < n)
    if inside.any():
        if p <= 0:
            out[inside] = 0.0
        elif p >= 1:
            out[inside] = 1.0
        else:
            out[inside] = regularized_beta(k[inside] + 1, n[inside] - k[inside], p)
    return out


def binomial_pmf(k: Any, n: int, p: float) -> Any:
    """P(X = k) for X ~ Binomial(n, p), elementwise over an integer array `k` (scipy's `binom.pmf`)."""
    k = np.asarray(k, dtype=float)
    if p <= 0 or p >= 1:
        return np.where(k == (0 if p <= 0 else n), 1.0, 0.0)
    log_pmf = math.lgamma(n + 1) - _lgamma(k + 1) - _lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
    return np.exp(log_pmf)


def regularized_beta(a: Any, b: Any, x: float) -> Any:
    """I_x(a, b) elementwise over arrays `a` and `b` (a, b > 0, 0 < x < 1): the continued fraction
    of Numerical Recipes (§6.4, modified Lentz), on the side where it converges fast and the small
    tail keeps its relative precision."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    direct = x < (a + 1) / (a + b + 2)
    aa, bb = np.where(direct, a, b), np.where(direct, b, a)
    xx = np.where(direct, x, 1 - x)
    log_front = _lgamma(aa + bb) - _lgamma(aa) - _lgamma(bb) + aa * np.log(xx) + bb * np.log1p(-xx)
    part = np.exp(log_front) * _beta_fraction(aa, bb, xx) / aa
    return np.where(direct, part, 1 - part)


def _beta_fraction(a: Any, b: Any, x: Any) -> Any:
    def floor(v: Any) -> Any:
        return np.where(np.abs(v) < _TINY, _TINY, v)

    c = np.ones_like(a)
    d = 1 / floor(1 - (a + b) * x / (a + 1))
    h = d.copy()
    for m in range(1, _BETA_MAX_STEPS + 1):
        even = m * (b - m) * x / ((a - 1 + 2 * m) * (a + 2 * m))
        d = 1 / floor(1 + even * d)
        c = floor(1 + even / c)
        h *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1 + 2 * m))
        d = 1 / floor(1 + odd * d)
        c = floor(1 + odd / c)
        step = d * c
        h *= step
        if np.all(np.abs(step - 1) < _BETA_EPS):
            break
    return h


def _lgamma(values: Any) -> Any:
    flat = np.asarray(values, dtype=float)
    return np.fromiter((math.lgamma(v) for v in flat.ravel()), float, flat.size).reshape(flat.shape)


# Sign-flip counts of the ranks 1..n: the exact null distribution of the signed-rank sum without ties.
@cache
def _untied_counts(n: int) -> Any:
    return _sign_flip_counts(tuple(range(2, 2 * n + 1, 2)))


def _sign_flip_counts(weights: tuple[int, ...]) -> Any:
    """For each total s, how many of the 2^n ways to give `weights` signs make the positive ones sum to
    s. Exact in int64: 2^n ≤ 2^50 here."""
    counts = np.zeros(sum(weights) + 1, dtype=np.int64)
    counts[0] = 1
    for w in weights:
        counts[w:] += counts[:-w].copy()
    return counts


def signed_rank_ps(diffs: Sequence[float]) -> tuple[float, float, float]:
    """p-values (greater, less, two-sided) of the Wilcoxon signed-rank test of `diffs` as scipy's
    `wilcoxon(diffs, zero_method="wilcox")` computes them with `method="auto"`.

    Zero differences are dropped. Exact (the null distribution of the rank sum) when there are at most
    50 differences, none zero and no ties; by every sign flip when there are ties or zeros among at most
    13; else the normal approximation with the tie correction of the variance, no continuity correction.
    """
    values = np.asarray(diffs, dtype=float)
    nonzero = values[values != 0]
    count = len(nonzero)
    if count == 0:
        return math.nan, math.nan, math.nan
    ranks, tie_sizes = _average_ranks(np.abs(nonzero))
    r_plus = float(ranks[nonzero > 0].sum())
    tied = bool((tie_sizes > 1).any())
    zeros = count < len(values)
    if len(values) <= 50 and not tied and not zeros:
        return _flip_ps(_untied_counts(count), round(2 * r_plus), count)
    if len(values) <= 13:
        # Ranks are whole or half: doubled, the sign flips count exactly in integers.
        doubled = tuple(round(float(2 * r)) for r in ranks)
        return _flip_ps(_sign_flip_counts(doubled), round(2 * r_plus), count)
    mean = count * (count + 1) / 4
    var = (count * (count + 1) * (2 * count + 1) - float(np.sum(tie_sizes**3 - tie_sizes)) / 2) / 24
    z = (r_plus - mean) / math.sqrt(var)
    return normal_sf(z), normal_sf(-z), 2 * normal_sf(abs(z))


def _flip_ps(counts: Any, observed2: int, n: int) -> tuple[float, float, float]:
    total = 2**n
    greater = int(counts[observed2:].sum()) / total
    less = int(counts[: observed2 + 1].sum()) / total
    return greater, less, min(1.0, 2 * min(greater, less))


def _average_ranks(values: Any) -> tuple[Any, Any]:
    """Ranks (1-based, ties get their average) and the size of each group of equal values."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(values)])
    average = starts + (sizes + 1) / 2
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(average, sizes)
    return ranks, sizes


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for X ~ χ²(dof) (scipy's `chi2.sf`): the closed form of the upper incomplete gamma
    function at integer degrees of freedom, a sum of positive terms (no cancellation)."""
    if x <= 0:
        return 1.0
    half = x / 2
    if dof % 2 == 0:
        terms = (math.exp(i * math.log(half) - half - math.lgamma(i + 1)) for i in range(dof // 2))
        return min(1.0, sum(terms))
    terms = (math.exp((i + 0.5) * math.log(half) - half - math.lgamma(i + 1.5)) for i in range((dof - 1) // 2))
    return min(1.0, math.erfc(math.sqrt(half)) + sum(terms))


def ks_2samp_p(n1: int, n2: int, h: int) -> float:
    """Exact two-sided p-value of the two-sample Kolmogorov-Smirnov statistic D = h / lcm(n1, n2):
    the share of the C(n1 + n2, n1) orderings of the two samples whose empirical CDFs get at least D
    apart (Hodges 1958), as scipy's `ks_2samp(method="exact")`."""
    if h <= 0:
        return 1.0
    if n1 == n2:
        return _ks_square(n1, h)
    # A uniformly random ordering walked step by step: from (x, y), the next value is the first
    # sample's with probability (n1 − x) / (n1 − x + n2 − y). The mass that never reaches the boundary
    # |x·n2 − y·n1| ≥ h·g, carried along the anti-diagonals (no overflow: probabilities, not counts).
    g = math.gcd(n1, n2)
    limit = h * g
    x = np.arange(n1 + 1)
    mass = np.zeros(n1 + 1)
    mass[0] = 1.0
    for step in range(1, n1 + n2 + 1):
        y = step - x
        valid = (y >= 0) & (y <= n2)
        prev_y = y  # from (x, y − 1): a step of the second sample
        from_y = np.where(valid & (prev_y - 1 >= 0), mass * _step_p(n2 - (prev_y - 1), n1 - x), 0.0)
        shifted = np.r_[0.0, mass[:-1]]  # from (x − 1, y): a step of the first sample
        from_x = np.where(valid & (x >= 1), shifted * _step_p(n1 - (x - 1), n2 - y), 0.0)
        mass = np.where(valid & (np.abs(x * n2 - y * n1) < limit), from_x + from_y, 0.0)
    return float(min(1.0, max(0.0, 1.0 - mass[n1])))


def _step_p(mine: Any, other: Any) -> Any:
    total = mine + other
    return np.where(total > 0, mine / np.where(total > 0, total, 1), 0.0)


def _ks_square(n: int, h: int) -> float:
    """P(D ≥ h/n) for two samples of n each: the alternating sum of Gnedenko and Korolyuk, evaluated
    from the innermost term out so that no subtraction cancels (scipy's `_compute_prob_outside_square`)."""
    p = 0.0
    k = n // h
    while k >= 0:
        term = 1.0
        for j in range(h):
            term = (n - k * h - j) * term / (n + k * h + j + 1)
        p = term * (1.0 - p)
        k -= 1
    return 2 * p
