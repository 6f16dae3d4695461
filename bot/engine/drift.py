"""Distribution drift between two samples of a column: pure functions over lists, scipy for the tests."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

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
    """Chi-square test of homogeneity on the category counts, with the PSI alongside."""
    from scipy.stats import chi2_contingency

    categories = sorted(set(base) | set(head))
    b_counts, h_counts = Counter(base), Counter(head)
    table = [[b_counts[c] for c in categories], [h_counts[c] for c in categories]]
    if len(categories) < 2:
        return DriftTest("chi-square", 0.0, 1.0, psi(base, head))
    result = chi2_contingency(table)
    return DriftTest("chi-square", float(result.statistic), float(result.pvalue), psi(base, head))


def numeric_drift(base: Sequence[float], head: Sequence[float]) -> DriftTest:
    """Two-sample KS for small samples; Wasserstein distance normed by the base's spread for large ones."""
    from scipy.stats import ks_2samp, wasserstein_distance

    if max(len(base), len(head)) <= KS_MAX_ROWS:
        with warnings.catch_warnings():
            # With ties scipy's exact p-value can fail; it then falls back to the asymptotic one and says
            # so with a RuntimeWarning. The fallback is the right answer here, not a problem to report.
            warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful", RuntimeWarning)
            result = ks_2samp(base, head)
        return DriftTest("ks", float(result.statistic), float(result.pvalue))
    mean = sum(base) / len(base)
    spread = math.sqrt(sum((x - mean) ** 2 for x in base) / len(base)) or 1.0
    return DriftTest("wasserstein", float(wasserstein_distance(base, head)) / spread, None)


def outliers(base: Sequence[float], head: Sequence[float], sigmas: float = 3.0) -> list[int]:
    """Indexes of `head` values more than `sigmas` standard deviations from the base mean."""
    if len(base) < 2:
        return []
    mean = sum(base) / len(base)
    sd = math.sqrt(sum((x - mean) ** 2 for x in base) / (len(base) - 1))
    if sd == 0:
        return [i for i, x in enumerate(head) if x != mean]
    return [i for i, x in enumerate(head) if abs(x - mean) > sigmas * sd]
