"""Distribution drift between two samples of a column: pure functions over lists."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bot.engine.distributions import chi2_sf, ks_2samp_p

# Evidently's defaults: KS up to 1,000 rows, normed Wasserstein (threshold 0.1) above; PSI bands.
KS_MAX_ROWS = 1000
WASSERSTEIN_THRESHOLD = 0.1
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.2
# PSI is undefined for an empty bin: a share is floored at this, as PSI implementations do.
_PSI_FLOOR = 1e-4


@dataclass(frozen=True)
class DriftTest:
    """One column's test: `p_value` for chi-square and KS, `score` for PSI and Wasserstein."""

    test: Literal["chi-square", "ks", "wasserstein"]
    statistic: float
    p_value: float | None
    psi: float | None = None


def psi(base: Sequence[str], head: Sequence[str]) -> float:
    """Population stability index of a categorical column: Σ (h − b) · ln(h / b) over categories."""
    b_counts, h_counts = Counter(base), Counter(head)
    total = 0.0
    for category in set(b_counts) | set(h_counts):
        b = max(b_counts[category] / len(base), _PSI_FLOOR)
        h = max(h_counts[category] / len(head), _PSI_FLOOR)
        total += (h - b) * math.log(h / b)
    return total


def categorical_drift(base: Sequence[str], head: Sequence[str]) -> DriftTest:
    """Chi-square test of homogeneity on the category counts, with the PSI alongside: Pearson's
    statistic on the 2 × k table, with Yates' continuity correction when k = 2 (one degree of freedom),
    as scipy's `chi2_contingency`."""
    categories = sorted(set(base) | set(head))
    if len(categories) < 2:
        return DriftTest("chi-square", 0.0, 1.0, psi(base, head))
    b_counts, h_counts = Counter(base), Counter(head)
    observed = np.array([[b_counts[c] for c in categories], [h_counts[c] for c in categories]], dtype=float)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    dof = len(categories) - 1
    if dof == 1:
        diff = expected - observed
        observed = observed + np.sign(diff) * np.minimum(0.5, np.abs(diff))
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return DriftTest("chi-square", statistic, chi2_sf(statistic, dof), psi(base, head))


def numeric_drift(base: Sequence[float], head: Sequence[float]) -> DriftTest:
    """Two-sample KS for small samples (exact p-value); Wasserstein distance normed by the base's spread
    for large ones."""
    b, h = np.sort(np.asarray(base, dtype=float)), np.sort(np.asarray(head, dtype=float))
    if max(len(b), len(h)) <= KS_MAX_ROWS:
        both = np.concatenate([b, h])
        gap = np.abs(np.searchsorted(b, both, side="right") / len(b) - np.searchsorted(h, both, side="right") / len(h))
        # D is a multiple of 1 / lcm(n1, n2): counted in those steps, the exact test counts lattice paths.
        lcm = len(b) * len(h) // math.gcd(len(b), len(h))
        steps = round(float(gap.max()) * lcm)
        return DriftTest("ks", steps / lcm, ks_2samp_p(len(b), len(h), steps))
    mean = sum(base) / len(base)
    spread = math.sqrt(sum((x - mean) ** 2 for x in base) / len(base)) or 1.0
    return DriftTest("wasserstein", _wasserstein(b, h) / spread, None)


def _wasserstein(b: np.ndarray, h: np.ndarray) -> float:
    """The first Wasserstein distance of two sorted samples: the area between their empirical CDFs."""
    points = np.sort(np.concatenate([b, h]))
    widths = np.diff(points)
    b_cdf = np.searchsorted(b, points[:-1], side="right") / len(b)
    h_cdf = np.searchsorted(h, points[:-1], side="right") / len(h)
    return float(np.sum(np.abs(b_cdf - h_cdf) * widths))


def outliers(base: Sequence[float], head: Sequence[float], sigmas: float = 3.0) -> list[int]:
    """Indexes of `head` values more than `sigmas` standard deviations from the base mean."""
    if len(base) < 2:
        return []
    mean = sum(base) / len(base)
    sd = math.sqrt(sum((x - mean) ** 2 for x in base) / (len(base) - 1))
    if sd == 0:
        return [i for i, x in enumerate(head) if x != mean]
    return [i for i, x in enumerate(head) if abs(x - mean) > sigmas * sd]
