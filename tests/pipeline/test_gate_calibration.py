"""Calibration of the gate's accuracy verdict on simulated pull requests: the statistics alone, no model calls.

The paired model is the one of issue 16's measurement: each case's base and head outcomes are drawn
independently, base passing with probability 0.90 and head with 0.90 (no change) or 0.82 (a true
8 pp drop). A case then gets worse with probability 0.90 × 0.18 and better with 0.10 × 0.82, which is
what `mcnemar_power` sums over. Each simulated suite goes through `rate_verdict`, the function the
accuracy row's verdict comes from, under the default thresholds (2 pp, α = 0.05).
"""

from __future__ import annotations

import numpy as np
import pytest

from bot.engine.stats import mcnemar_power
from bot.pipeline.compare import rate_verdict
from bot.pipeline.config import Thresholds

SUITES = 2_000
SEED = 16
BASE_RATE = 0.90
DROPPED_RATE = 0.82


def verdicts(n_cases: int, head_rate: float, strict: bool = False) -> list[str]:
    """The gate's accuracy verdict on SUITES simulated pull requests of `n_cases` paired cases each."""
    t = Thresholds()
    rng = np.random.default_rng(SEED)
    base = (rng.random((SUITES, n_cases)) < BASE_RATE).astype(float)
    head = (rng.random((SUITES, n_cases)) < head_rate).astype(float)
    return [
        rate_verdict(b.tolist(), h.tolist(), t.accuracy_drop_pp, -1, t.alpha, strict)
        for b, h in zip(base, head, strict=True)
    ]


def rate_of(values: list[str], verdict: str) -> float:
    return values.count(verdict) / len(values)


def test_no_true_change_rarely_fails_the_gate() -> None:
    false_alarms = rate_of(verdicts(40, BASE_RATE), "fail")
    # The one-sided test's exact size here; at 40 cases a significant drop is always past 2 pp.
    size = mcnemar_power(40, BASE_RATE * (1 - BASE_RATE), (1 - BASE_RATE) * BASE_RATE)
    naive = rate_of(verdicts(40, BASE_RATE, strict=True), "fail")
    print(f"\nno change, 40 cases: gate fails {false_alarms:.2%} (exact size {size:.2%}); point estimate {naive:.2%}")
    assert false_alarms <= 0.05
    assert false_alarms == pytest.approx(size, abs=0.03)
    # The point-estimate rule (gating: strict) fails about half of these unchanged pull requests.
    assert naive > 0.4


def test_a_true_8pp_drop_is_caught_at_the_exact_one_sided_power() -> None:
    caught = rate_of(verdicts(200, DROPPED_RATE), "fail")
    worse, better = BASE_RATE * (1 - DROPPED_RATE), (1 - BASE_RATE) * DROPPED_RATE
    power = mcnemar_power(200, worse, better, alpha=Thresholds().alpha)
    # The two-sided exact test the gate used before rejects a drop as the one-sided test at α / 2.
    two_sided = mcnemar_power(200, worse, better, alpha=Thresholds().alpha / 2)
    print(f"\n8 pp drop, 200 cases: gate fails {caught:.2%}; exact power {power:.2%}, two-sided {two_sided:.2%}")
    assert caught == pytest.approx(power, abs=0.03)
    assert power > two_sided + 0.1
