"""Evaluated variants and their paired comparison: what the comparison of a suite (compare) and of models
side by side (tradeoff) both stand on, below both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bot.engine.metrics import VariantMetrics, per_case, variant_metrics
from bot.engine.runner import CaseResult
from bot.engine.stats import ALPHA, PairedDelta, paired_delta


@dataclass
class Variant:
    """One evaluated variant of a suite: its name, prompt version, model and results."""

    name: str
    version: str
    model: str
    results: list[CaseResult]
    metrics: VariantMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = variant_metrics(self.results)


def paired(
    base: Variant | None,
    head: Variant,
    value: Callable[[CaseResult], float | bool | None],
    alpha: float = ALPHA,
    outcomes: bool = True,
) -> PairedDelta | None:
    """The paired comparison of `value` on the cases both variants answered; one value per case (the
    mean of its samples), so a case's repeats count once. `outcomes`: pass/fail values, not measurements."""
    if base is None:
        return None
    b, h = per_case(base.results, value), per_case(head.results, value)
    common = [case_id for case_id in h if case_id in b]
    return paired_delta([b[c] for c in common], [h[c] for c in common], alpha, outcomes)
