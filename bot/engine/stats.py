"""Statistics as pure functions over lists: intervals, percentiles, paired tests, detectable effects."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, Literal

from bot.engine.distributions import (
    binomial_pmf,
    binomial_sf,
    binomial_tails_half,
    normal_ppf,
    signed_rank_ps,
)

# Intervals are two-sided 95%, for reading; the gate's one-sided tests use α (`thresholds.alpha`).
CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
# Cases needed above this are estimated by the normal approximation (Connor 1987) alone.
EXACT_CASES_LIMIT = 1_000_000
BOOTSTRAP_RESAMPLES = 10_000
# Resampled values drawn at once (8 bytes each, twice): bounds a bootstrap's memory whatever the cases
# (4 MiB). Chunks that fit the CPU's caches take half the CPU of 1M-value ones, with the same numbers.
BOOTSTRAP_CHUNK_VALUES = 250_000
# A fixed seed: the same results give the same report, run after run.
BOOTSTRAP_SEED = 20_240_601


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class PairedTest:
    """The paired test of head − base over cases (same order): a p-value each way and both ways.

    Exact McNemar (a binomial test on the cases that flipped) when every value is pass/fail, else the
    Wilcoxon signed-rank test on the per-case differences (latency, cost, and a case's share of
    passing samples when it has several).
    """

    n: int
    delta: float
    test: Literal["mcnemar", "wilcoxon"]
    p_value: float
    # One-sided: the alternative that head is above base, and that it is below.
    p_increase: float
    p_decrease: float
    # Sample standard deviation of the per-case differences.
    sd: float
    # Share of cases that flipped (pass/fail values only).
    discordant: float | None
    # Mean of the base values, for a detectable effect when no case differs.
    base_mean: float
    alpha: float

    @property
    def significant(self) -> bool:
        """Two-sided at `alpha`: used to call a change an improvement, never to fail one."""
        return self.p_value < self.alpha

    def p_toward(self, sign: int) -> float:
        """The one-sided p-value of the alternative that head − base has this sign (+1 or -1)."""
        return self.p_increase if sign > 0 else self.p_decrease

    @property
    def min_detectable(self) -> float | None:
        """The smallest change of the mean a one-sided test at `alpha` detects with 80% power on these
        cases (normal approximation with the observed spread of the differences, or independent
        errors at the base rate when no case differs)."""
        if self.n < 2:
            return None
        sd = self.sd or math.sqrt(max(2 * self.base_mean * (1 - self.base_mean), 1 / self.n))
        return _z_sum(self.alpha) * sd / math.sqrt(self.n)

    def cases_needed(self, sign: int) -> int | None:
        """Paired cases for a change of the observed size, in the direction `sign`, to be significant
        one-sided at `alpha` with 80% power; None when the change does not point that way.

        Pass/fail: where the exact power of the one-sided McNemar test, with the observed shares of cases
        that got worse and better, reaches 80%. Otherwise the normal approximation with the observed
        spread of the differences.
        """
        effect = sign * self.delta
        if effect <= 0:
            return None
        if self.discordant is None:
            return max(math.ceil((_z_sum(self.alpha) * self.sd / effect) ** 2), 1)
        # Connor's (1987) normal approximation for McNemar's test, where the exact search starts.
        z_alpha, z_power = normal_ppf(1 - self.alpha), normal_ppf(POWER)
        spread = math.sqrt(max(self.discordant - effect**2, 0.0))
        root_n = (z_alpha * math.sqrt(self.discordant) + z_power * spread) / effect
        worse = (self.discordant + effect) / 2
        return _mcnemar_cases_needed(worse, self.discordant - worse, self.alpha, max(math.ceil(root_n**2), 1))


@dataclass(frozen=True)
class PairedDelta(PairedTest):
    """A paired test with the paired percentile-bootstrap 95% interval of the mean difference."""

    interval: Interval


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
        return _wilson(int(sum(scores)), n)
    return _bootstrap_mean(scores)


def _wilson(k: int, n: int) -> Interval:
    """The Wilson score interval (Newcombe 1998), without continuity correction."""
    z = normal_ppf(0.5 + 0.5 * CONFIDENCE)
    p = k / n
    denom = 2 * (n + z**2)
    center = (2 * n * p + z**2) / denom
    delta = z / denom * math.sqrt(4 * n * p * (1 - p) + z**2)
    return Interval(0.0 if k == 0 else center - delta, 1.0 if k == n else center + delta)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default; None for no values."""
    if not values:
        return None
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def paired_test(
    base: Sequence[float], head: Sequence[float], alpha: float = ALPHA, outcomes: bool = True
) -> PairedTest | None:
    """Test per-case values of two variants on the same cases (same order); None for no cases.

    `outcomes`: the values are pass/fail outcomes (1/0), or a case's share of passing samples; else
    measurements (latency, cost), which a value of exactly 0 or 1 does not make pass/fail. A case is
    one paired value however many samples it has: repeated samples of one case are not independent.
    """
    if len(base) != len(head):
        raise ValueError("paired samples must have the same length")
    n = len(base)
    if n == 0:
        return None
    diffs = [h - b for b, h in zip(base, head, strict=True)]
    delta = sum(diffs) / n
    binary = outcomes and _is_binary(base) and _is_binary(head)
    if binary:
        # Exact McNemar: under no change, each flipped case is as likely to break as to be fixed.
        up, down = sum(1 for d in diffs if d > 0), sum(1 for d in diffs if d < 0)
        p_increase, p_decrease, p_value = _binomial_ps(up, down)
    elif all(d == diffs[0] for d in diffs):
        # Every case moved the same way by the same amount (or none moved): the signed-rank test is
        # undefined for no spread; its exact value is the sign test's.
        moved = n if diffs[0] else 0
        p_increase, p_decrease, p_value = _binomial_ps(moved if diffs[0] > 0 else 0, moved if diffs[0] < 0 else 0)
    else:
        # Zero differences are dropped, as McNemar drops the cases that did not flip.
        p_increase, p_decrease, p_value = signed_rank_ps(diffs)
    sd = math.sqrt(sum((d - delta) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    return PairedTest(
        n=n,
        delta=delta,
        test="mcnemar" if binary else "wilcoxon",
        p_value=p_value,
        p_increase=p_increase,
        p_decrease=p_decrease,
        sd=sd,
        discordant=sum(1 for d in diffs if d) / n if binary else None,
        base_mean=sum(base) / n,
        alpha=alpha,
    )


def paired_delta(
    base: Sequence[float], head: Sequence[float], alpha: float = ALPHA, outcomes: bool = True
) -> PairedDelta | None:
    """`paired_test` with the 95% interval of the mean difference, a paired percentile bootstrap."""
    test = paired_test(base, head, alpha, outcomes)
    if test is None:
        return None
    diffs = [h - b for b, h in zip(base, head, strict=True)]
    return PairedDelta(**{f.name: getattr(test, f.name) for f in fields(PairedTest)}, interval=_bootstrap_mean(diffs))


def mcnemar_power(n: int, p_worse: float, p_better: float, alpha: float = ALPHA) -> float:
    """Exact power of the one-sided exact McNemar test (significant when p < `alpha`) on `n` paired
    cases, each worse with probability `p_worse` and better with `p_better`, independently.

    The sum over the number m of flipped cases, Binomial(n, p_worse + p_better), of the chance that
    the worse ones among them, Binomial(m, p_worse / (p_worse + p_better)), reach the test's
    critical count.
    """
    import numpy as np

    p_flip = p_worse + p_better
    if p_flip == 0:
        return 0.0
    # Only the flip counts within 8 standard deviations carry weight (the rest < 1e-14 in all).
    spread = 8 * math.sqrt(n * p_flip * (1 - p_flip)) + 1
    m = np.arange(max(0, math.floor(n * p_flip - spread)), min(n, math.ceil(n * p_flip + spread)) + 1)
    reject = binomial_sf(_mcnemar_critical(m, alpha) - 1, m, p_worse / p_flip)
    return float(np.sum(binomial_pmf(m, n, p_flip) * reject))


def relative_change_pct(base: float | None, head: float | None) -> float | None:
    if base is None or head is None or base == 0:
        return None
    return (head - base) / base * 100


def _bootstrap_mean(values: Sequence[float]) -> Interval:
    import numpy as np

    data = np.asarray(values, dtype=float)
    if len(data) < 2 or np.all(data == data[0]):
        return Interval(float(data.mean()), float(data.mean()))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    # The percentile interval, not BCa: BCa is unstable on the degenerate, discrete distributions
    # pass/fail differences are; the percentile interval is well-defined.
    # In chunks: all resamples of 1,000 cases at once take 160 MB; the chunks draw the same numbers.
    means = np.empty(BOOTSTRAP_RESAMPLES)
    rows = max(1, BOOTSTRAP_CHUNK_VALUES // len(data))
    for start in range(0, BOOTSTRAP_RESAMPLES, rows):
        stop = min(start + rows, BOOTSTRAP_RESAMPLES)
        means[start:stop] = data[rng.integers(0, len(data), size=(stop - start, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return Interval(float(low), float(high))


# Pure in two small integers, and called once per row and per simulated suite in the calibration test.
@cache
def _binomial_ps(up: int, down: int) -> tuple[float, float, float]:
    """p-values (increase, decrease, two-sided) of the exact binomial test of `up` against `down` moves."""
    return binomial_tails_half(up, down)


def _mcnemar_critical(m: Any, alpha: float) -> Any:
    """For each number m of flipped cases, the smallest count k of worse ones with
    P(Binomial(m, 1/2) ≥ k) < alpha: by the same binomial tail the test's p-value is."""
    import numpy as np

    # Start from the normal approximation, then step each k to the exact boundary.
    k = np.ceil(m / 2 + normal_ppf(1 - alpha) * np.sqrt(m) / 2).astype(int)
    while True:
        lower = binomial_sf(k - 2, m, 0.5) < alpha  # k - 1 flips would reject too
        higher = binomial_sf(k - 1, m, 0.5) >= alpha  # k flips do not reject
        if not (lower.any() or higher.any()):
            return k
        k = k - lower + higher


def _mcnemar_cases_needed(p_worse: float, p_better: float, alpha: float, approx: int) -> int:
    """The n at which the exact one-sided McNemar power crosses 80%, bisecting from Connor's estimate.

    The exact test's power saw-tooths with n by a case or so, so this is a crossing, not necessarily
    the very first. Above `EXACT_CASES_LIMIT` the normal approximation is as good and far cheaper.
    """
    if approx > EXACT_CASES_LIMIT:
        return approx
    lo, hi = 0, max(approx, 1)
    while mcnemar_power(hi, p_worse, p_better, alpha) < POWER:
        lo, hi = hi, hi * 2
        if hi > EXACT_CASES_LIMIT:
            return approx
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if mcnemar_power(mid, p_worse, p_better, alpha) >= POWER else (mid, hi)
    return hi


def _z_sum(alpha: float) -> float:
    return normal_ppf(1 - alpha) + normal_ppf(POWER)


RatioStatistic = Literal["p95", "mean"]


@dataclass(frozen=True)
class RatioTest:
    """A paired bootstrap of head / base for a statistic of the calls (p95 latency, mean cost), with the
    one-sided question the gate asks: is the ratio above `limit` (1 + the threshold)?

    Cases are resampled together (a case's base and head calls stay paired, its samples stay together).
    `bound` is the one-sided lower (1 − alpha) bound of the ratio; `p_above` the share of resamples at
    or below `limit` (at least one), the p-value that bound comes from: bound > limit exactly when
    p_above < alpha (for alpha above 1 / resamples).
    """

    n: int
    statistic: RatioStatistic
    ratio: float
    interval: Interval
    bound: float
    limit: float
    p_above: float
    # Against no change (ratio 1), both ways: what may call it an improvement.
    p_two_sided: float
    # Standard deviation of the log ratio over the resamples: its standard error at these cases.
    log_spread: float
    alpha: float

    def cases_needed(self) -> int | None:
        """Paired cases for a ratio of the observed size to clear `limit` one-sided at `alpha` with 80%
        power (the log ratio's standard error shrinking as 1/√n); None when the ratio is not above it."""
        if self.ratio <= self.limit or self.log_spread == 0:
            return None
        effect = math.log(self.ratio / self.limit)
        return max(math.ceil(self.n * (_z_sum(self.alpha) * self.log_spread / effect) ** 2), 1)


def paired_ratio(
    base: Sequence[Sequence[float]],
    head: Sequence[Sequence[float]],
    statistic: RatioStatistic,
    limit: float,
    alpha: float = ALPHA,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> RatioTest | None:
    """The paired bootstrap of `statistic`(head calls) / `statistic`(base calls).

    Args:
        base: per case, the base's values of its samples (every case the same number of samples).
        head: the head's, same cases in the same order.
        statistic: "p95" (numpy's linear interpolation, as the report's percentiles) or "mean".
        limit: the ratio the gate asks about (1 + threshold / 100).
        alpha: the one-sided level.
        resamples: bootstrap resamples (fixed seed: the same calls give the same report).

    Returns:
        None when there is no case or the base's statistic is 0 (no ratio).
    """
    import numpy as np

    b, h = np.asarray(base, dtype=float), np.asarray(head, dtype=float)
    if b.size == 0 or b.shape != h.shape:
        if b.shape != h.shape:
            raise ValueError("paired samples must have the same shape")
        return None
    n, samples = b.shape

    def stat(values: Any, scratch: bool = False) -> Any:
        # `scratch`: a resample made for this call only, which numpy may partition in place instead
        # of copying it first (never the cases themselves: their order pairs base with head).
        if statistic == "p95":
            return np.percentile(values, 95, axis=-1, overwrite_input=scratch)
        return values.mean(axis=-1)

    observed_base = float(stat(b.reshape(-1)))
    if observed_base == 0:
        return None
    ratio = float(stat(h.reshape(-1))) / observed_base
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    ratios = np.empty(resamples)
    rows = max(1, BOOTSTRAP_CHUNK_VALUES // (n * samples))
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        picks = rng.integers(0, n, size=(stop - start, n))
        sb = stat(b[picks].reshape(stop - start, n * samples), scratch=True)
        sh = stat(h[picks].reshape(stop - start, n * samples), scratch=True)
        # A resample whose base statistic is 0 has no finite ratio: any rise is infinitely worse.
        ratios[start:stop] = np.where(sb > 0, sh / np.where(sb > 0, sb, 1), np.where(sh > 0, np.inf, 1.0))
    low, high = np.percentile(ratios, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    finite = np.log(ratios[np.isfinite(ratios) & (ratios > 0)])
    return RatioTest(
        n=n,
        statistic=statistic,
        ratio=ratio,
        interval=Interval(float(low), float(high)),
        # "inverted_cdf": the smallest resampled ratio with at least alpha of them at or below it, so
        # that bound > limit and p_above < alpha are the same decision.
        bound=float(np.quantile(ratios, alpha, method="inverted_cdf")),
        limit=limit,
        # Resolved to 1 / resamples at best: none at or below the limit reads p = 1e-4, not 0.
        p_above=max(int(np.sum(ratios <= limit)), 1) / resamples,
        p_two_sided=min(1.0, 2 * float(min(np.mean(ratios <= 1), np.mean(ratios >= 1)))),
        log_spread=float(finite.std(ddof=1)) if len(finite) > 1 else 0.0,
        alpha=alpha,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values, in the order given: rejecting where an adjusted
    p-value is below α keeps the chance of any false rejection among the family at most α, whatever
    the tests' dependence, and rejects at least what Bonferroni does.

    The i-th smallest p-value is multiplied by (m − i + 1) (i from 1), capped at 1, and made
    non-decreasing in that order (a larger p-value is never adjusted below a smaller one's).
    """
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def rate_above_p(successes: int, n: int, limit: float) -> float:
    """The exact one-sided p-value that a rate is above `limit`, from `successes` of `n`:
    P(X ≥ successes) for X ~ Binomial(n, limit). 1 for no trials."""
    if n == 0 or successes <= 0:
        return 1.0
    return float(binomial_sf(successes - 1, n, limit))


def rate_cases_needed(limit: float, rate: float, alpha: float = ALPHA) -> int | None:
    """Cases for a rate of `rate` to test above `limit` one-sided at `alpha` with 80% power (the
    normal approximation of the one-sample binomial test); None when `rate` is not above `limit`."""
    if rate <= limit:
        return None
    spread = normal_ppf(1 - alpha) * math.sqrt(limit * (1 - limit)) + normal_ppf(POWER) * math.sqrt(rate * (1 - rate))
    return max(math.ceil((spread / (rate - limit)) ** 2), 1)


@dataclass(frozen=True)
class GroupGap:
    """The paired, stratified bootstrap of per-group means at base and head (`group_gap`).

    `interval`: the 95% interval of the change (head − base) of the gap between the best and the worst
    group's mean. Per group, in the order given: `relative`, its change minus the change of the other
    groups' cases together; `p_behind`, the one-sided bootstrap p-value that it fell more than `margin`
    behind them (the share of resamples where it did not, at least one: resolved to 1 / resamples);
    `spread`, the standard deviation of `relative` over the resamples (its standard error at these cases).
    """

    interval: Interval
    relative: list[float]
    p_behind: list[float]
    spread: list[float]
    margin: float

    def cases_needed(self, index: int, cases: int, alpha: float) -> int | None:
        """Cases in the group for a lag of the observed size to be past `margin` one-sided at `alpha` with
        80% power (the standard error shrinking as 1/√n); None when it does not lag by more than `margin`."""
        excess = -self.relative[index] - self.margin
        if excess <= 0 or self.spread[index] == 0:
            return None
        return max(math.ceil(cases * (_z_sum(alpha) * self.spread[index] / excess) ** 2), 1)


def group_gap(groups: Sequence[tuple[Sequence[float], Sequence[float]]], margin: float) -> GroupGap | None:
    """Bootstrap the groups' means: each group's cases resampled within the group (its size kept), a
    case's base and head values together, every group in each resample. None for fewer than two groups
    or an empty one.

    Args:
        groups: per group, (base values, head values) of its cases, in the same case order.
        margin: how far a group may fall behind the others (same unit as the values: 0.05 for 5 pp).
    """
    if len(groups) < 2 or any(not base for base, _ in groups):
        return None
    import numpy as np

    rng = np.random.default_rng(BOOTSTRAP_SEED)
    shape = (len(groups), BOOTSTRAP_RESAMPLES)
    base_means, head_means = np.empty(shape), np.empty(shape)
    for g, (base, head) in enumerate(groups):
        b, h = np.asarray(base, dtype=float), np.asarray(head, dtype=float)
        rows = max(1, BOOTSTRAP_CHUNK_VALUES // len(b))
        for start in range(0, BOOTSTRAP_RESAMPLES, rows):
            stop = min(start + rows, BOOTSTRAP_RESAMPLES)
            picks = rng.integers(0, len(b), size=(stop - start, len(b)))
            base_means[g, start:stop] = b[picks].mean(axis=1)
            head_means[g, start:stop] = h[picks].mean(axis=1)
    changes = (head_means.max(axis=0) - head_means.min(axis=0)) - (base_means.max(axis=0) - base_means.min(axis=0))
    low, high = np.percentile(changes, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    sizes = np.asarray([len(base) for base, _ in groups], dtype=float)[:, None]
    moved = (head_means - base_means) * sizes  # each group's summed change per resample
    observed = [float(sum(h) - sum(b)) for b, h in groups]
    total, cases = sum(observed), float(sizes.sum())
    relative, p_behind, spread = [], [], []
    for g, size in enumerate(float(n) for n in sizes[:, 0]):
        lag = moved[g] / size - (moved.sum(axis=0) - moved[g]) / (cases - size)
        relative.append(observed[g] / size - (total - observed[g]) / (cases - size))
        p_behind.append(max(int(np.sum(lag >= -margin)), 1) / BOOTSTRAP_RESAMPLES)
        spread.append(float(lag.std(ddof=1)))
    return GroupGap(Interval(float(low), float(high)), relative, p_behind, spread, margin)
