"""Several models side by side on the same cases: paired deltas, the Pareto front, a recommendation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.engine.metrics import accuracy_of
from bot.engine.stats import relative_change_pct
from bot.pipeline.variants import Variant, paired


@dataclass(frozen=True)
class ModelColumn:
    """One model's column; deltas are against the reference (current) model, paired on shared cases."""

    model: str
    variant: Variant
    is_reference: bool
    accuracy_delta_pp: float | None
    accuracy_p_value: float | None
    latency_p95_change_pct: float | None
    cost_change_pct: float | None
    hallucination_delta_pp: float | None
    pareto: bool


@dataclass(frozen=True)
class ModelComparison:
    reference: str
    columns: list[ModelColumn]
    recommended: str | None
    # The accuracy window for the recommendation (thresholds.accuracy_drop_pp).
    window_pp: float


def _objectives(variant: Variant) -> tuple[float, float, float] | None:
    """(accuracy, p95, cost) with bigger-is-better for each; None when any is unknown."""
    m = variant.metrics
    if m.accuracy is None or m.latency_p95_s is None or m.cost_per_1k_usd is None:
        return None
    return (m.accuracy, -m.latency_p95_s, -m.cost_per_1k_usd)


def pareto_front(variants: dict[str, Variant]) -> set[str]:
    """Models no other model matches or beats on accuracy, p95 and cost while beating on one of them.

    A model with an unknown accuracy, latency or price cannot be placed, so it is never on the front.
    """
    points = {model: p for model, v in variants.items() if (p := _objectives(v)) is not None}
    front = set()
    for model, point in points.items():
        dominated = any(
            other != model and all(o >= s for o, s in zip(q, point, strict=True)) and q != point
            for other, q in points.items()
        )
        if not dominated:
            front.add(model)
    return front


def recommend(variants: dict[str, Variant], window_pp: float) -> str | None:
    """The cheapest model whose accuracy is within `window_pp` of the best one's (not simply the best)."""
    priced = {m: v.metrics for m, v in variants.items() if v.metrics.accuracy is not None and v.metrics.cost_per_1k_usd}
    if not priced:
        return None
    best = max(m.accuracy or 0.0 for m in priced.values())
    eligible = [
        (m.cost_per_1k_usd, -(m.accuracy or 0.0), model)
        for model, m in priced.items()
        if (m.accuracy or 0.0) >= best - window_pp / 100
    ]
    return min(eligible)[2] if eligible else None


def compare_models(reference: str, variants: dict[str, Variant], window_pp: float) -> ModelComparison:
    """The trade-off table of `variants` (model → the head prompt on that model) against `reference`."""
    ref = variants[reference]
    front = pareto_front(variants)
    columns = []
    for model, variant in variants.items():
        is_ref = model == reference
        acc = None if is_ref else paired(ref, variant, accuracy_of)
        m, r = variant.metrics, ref.metrics
        hallucination = (
            None
            if is_ref or m.hallucination_rate is None or r.hallucination_rate is None
            else (m.hallucination_rate - r.hallucination_rate) * 100
        )
        columns.append(
            ModelColumn(
                model=model,
                variant=variant,
                is_reference=is_ref,
                accuracy_delta_pp=acc.delta * 100 if acc else None,
                accuracy_p_value=acc.p_value if acc else None,
                latency_p95_change_pct=None if is_ref else relative_change_pct(r.latency_p95_s, m.latency_p95_s),
                cost_change_pct=None if is_ref else relative_change_pct(r.cost_per_1k_usd, m.cost_per_1k_usd),
                hallucination_delta_pp=hallucination,
                pareto=model in front,
            )
        )
    return ModelComparison(reference, columns, recommend(variants, window_pp), window_pp)


def worse_everywhere(old: Variant, new: Variant) -> bool:
    """The seed's rule for a model change: fail only when the new model is worse on every metric known
    for both (accuracy, p95 latency, cost, hallucination rate); a tie is not worse."""
    pairs: list[tuple[Any, Any, int]] = [
        (old.metrics.accuracy, new.metrics.accuracy, -1),
        (old.metrics.latency_p95_s, new.metrics.latency_p95_s, +1),
        (old.metrics.cost_per_1k_usd, new.metrics.cost_per_1k_usd, +1),
        (old.metrics.hallucination_rate, new.metrics.hallucination_rate, +1),
    ]
    known = [(o, n, sign) for o, n, sign in pairs if o is not None and n is not None]
    return bool(known) and all((n - o) * sign > 0 for o, n, sign in known)
