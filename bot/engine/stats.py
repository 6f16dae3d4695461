"""Statistics as pure functions over lists: intervals, percentiles, paired tests, detectable effects."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
POWER = 0.8
BOOTSTRAP_RESAMPLES = 10_000
# A fixed seed: the same results give the same report, run after run.
BOOTSTRAP_SEED = 20_240_601


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class PairedDelta:
    """head − base over paired cases, with a 95% interval, a p-value and the smallest detectable change."""

    n: int
    delta: float
    interval: Interval
    p_value: float
    significant: bool
    test: str
    min_detectable: float | None


def _is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def proportion_interval(scores: Sequence[float]) -> Interval | None:
    """95% interval of a mean score: Wilson for pass/fail scores, else a percentile bootstrap.

    Wilson rather than the normal approximation: it stays inside [0, 1] and keeps its coverage at
    the small n and the near-0 or near-1 rates eval sets have.
    """
    n = len(scores)
    if n == 0:
        return None
    if _is_binary(scores):
        from scipy.stats import binomtest

        ci = binomtest(int(sum(scores)), n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
        return Interval(float(ci.low), float(ci.high))
    return _bootstrap_mean(scores)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default; None for no values."""
    if not values:
        return None
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def paired_delta(base: Sequence[float], head: Sequence[float]) -> PairedDelta | None:
    """Compare per-case scores of two variants on the same cases (same order).

    The interval is a paired percentile bootstrap of the mean difference. The p-value is McNemar's
    exact test when the scores are pass/fail (it uses only the discordant pairs, the cases that
    flipped), else the Wilcoxon signed-rank test. `min_detectable` is the smallest change of the mean
    this many cases detect with 80% power at α = 0.05 (normal approximation, observed spread of the
    differences, or independent errors at the base rate when no case differs).
    """
    if len(base) != len(head):
        raise ValueError("paired samples must have the same length")
    n = len(base)
    if n == 0:
        return None
    diffs = [h - b for b, h in zip(base, head, strict=True)]
    delta = sum(diffs) / n
    if all(d == diffs[0] for d in diffs):
        # No spread: every resample gives the same mean (and scipy's tests are undefined).
        interval = Interval(delta, delta)
        p_value = 1.0 if delta == 0 else _sign_p(diffs)
        test = "mcnemar" if _is_binary(base) and _is_binary(head) else "wilcoxon"
    else:
        interval = _bootstrap_mean(diffs)
        if _is_binary(base) and _is_binary(head):
            p_value, test = _mcnemar_p(base, head), "mcnemar"
        else:
            from scipy.stats import wilcoxon

            p_value, test = float(wilcoxon(diffs, zero_method="zsplit").pvalue), "wilcoxon"
    return PairedDelta(
        n=n,
        delta=delta,
        interval=interval,
        p_value=p_value,
        significant=p_value < ALPHA,
        test=test,
        min_detectable=_min_detectable(base, diffs),
    )


def relative_change_pct(base: float | None, head: float | None) -> float | None:
    if base is None or head is None or base == 0:
        return None
    return (head - base) / base * 100


def _mcnemar_p(base: Sequence[float], head: Sequence[float]) -> float:
    from scipy.stats import binomtest

    fixed = sum(1 for b, h in zip(base, head, strict=True) if b < h)
    broke = sum(1 for b, h in zip(base, head, strict=True) if b > h)
    if fixed + broke == 0:
        return 1.0
    return float(binomtest(fixed, fixed + broke, 0.5).pvalue)


def _sign_p(diffs: Sequence[float]) -> float:
    # Every case moved the same way by the same amount: an exact sign test on n cases.
    from scipy.stats import binomtest

    moved = sum(1 for d in diffs if d != 0)
    return float(binomtest(moved, moved, 0.5).pvalue) if moved else 1.0


def _bootstrap_mean(values: Sequence[float]) -> Interval:
    import numpy as np

    data = np.asarray(values, dtype=float)
    if len(data) < 2 or np.all(data == data[0]):
        return Interval(float(data.mean()), float(data.mean()))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    # Resampling indexes with numpy directly: scipy.stats.bootstrap's BCa warns on the degenerate,
    # discrete distributions pass/fail differences are; the percentile interval is well-defined.
    idx = rng.integers(0, len(data), size=(BOOTSTRAP_RESAMPLES, len(data)))
    means = data[idx].mean(axis=1)
    low, high = np.percentile(means, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return Interval(float(low), float(high))


def _min_detectable(base: Sequence[float], diffs: Sequence[float]) -> float | None:
    from scipy.stats import norm

    n = len(diffs)
    if n < 2:
        return None
    mean_diff = sum(diffs) / n
    sd = math.sqrt(sum((d - mean_diff) ** 2 for d in diffs) / (n - 1))
    if sd == 0:
        rate = sum(base) / n
        sd = math.sqrt(max(2 * rate * (1 - rate), 1 / n))
    z = float(norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER))
    return z * sd / math.sqrt(n)
