"""Metrics of one variant's results (DESIGN.md §5), and per-case values for paired comparison."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bot.engine.runner import CaseResult
from bot.engine.stats import Interval, mean, percentile, proportion_interval


@dataclass(frozen=True)
class CategoryAccuracy:
    category: str
    accuracy: float
    n: int


@dataclass(frozen=True)
class VariantMetrics:
    """What a report says about one variant. Rates are 0-1; None where nothing was measured."""

    n_cases: int
    n_calls: int
    n_errors: int
    n_cached: int
    n_graded: int
    accuracy: float | None
    accuracy_interval: Interval | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    cost_per_1k_usd: float | None
    cost_per_pct_usd: float | None
    hallucination_rate: float | None
    hallucination_interval: Interval | None
    n_hallucination_graded: int
    grader_errors: int
    rubric_means: dict[str, float] = field(default_factory=dict)
    categories: list[CategoryAccuracy] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def per_case(results: Sequence[CaseResult], value: Callable[[CaseResult], float | bool | None]) -> dict[str, float]:
    """The mean of `value` over each case's samples, for cases where it is known in every sample.

    A case with a failed call or grader in any sample is left out rather than counted as wrong.
    """
    samples: dict[str, list[float | bool | None]] = defaultdict(list)
    for result in results:
        samples[result.case_id].append(value(result))
    return {
        case_id: sum(float(v) for v in values if v is not None) / len(values)
        for case_id, values in samples.items()
        if None not in values
    }


def accuracy_of(result: CaseResult) -> bool | None:
    return result.passed


def hallucination_of(result: CaseResult) -> bool | None:
    return result.hallucinated


def latency_of(result: CaseResult) -> float | None:
    return result.latency_s


def cost_of(result: CaseResult) -> float | None:
    return result.cost_usd


def variant_metrics(results: Sequence[CaseResult]) -> VariantMetrics:
    """Summarise one variant's results."""
    answered = [r for r in results if r.error is None]
    scores = per_case(results, accuracy_of)
    accuracy = mean(list(scores.values()))
    halluc = per_case(results, hallucination_of)
    latencies = [r.latency_s for r in answered if r.latency_s is not None]
    costs = [r.cost_usd for r in answered]
    # One unknown price makes the total unknown: a partial sum would read as a real, lower cost.
    cost_per_call = None if not costs or None in costs else sum(c for c in costs if c is not None) / len(costs)
    cost_per_1k = None if cost_per_call is None else cost_per_call * 1000
    cost_per_pct = None if cost_per_1k is None or not accuracy else cost_per_1k / (accuracy * 100)

    by_criterion: dict[str, list[float]] = defaultdict(list)
    for result in answered:
        for grade in result.grades:
            for criterion, score in grade.scores.items():
                by_criterion[criterion].append(score)

    category_of = {r.case_id: r.category for r in results}
    by_category: dict[str, list[float]] = defaultdict(list)
    for case_id, score in scores.items():
        by_category[category_of[case_id] or "(none)"].append(score)

    return VariantMetrics(
        n_cases=len({r.case_id for r in results}),
        n_calls=len(results),
        n_errors=len(results) - len(answered),
        n_cached=sum(1 for r in answered if r.cached),
        n_graded=len(scores),
        accuracy=accuracy,
        accuracy_interval=proportion_interval(list(scores.values())),
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        latency_p99_s=percentile(latencies, 99),
        cost_per_1k_usd=cost_per_1k,
        cost_per_pct_usd=cost_per_pct,
        hallucination_rate=mean(list(halluc.values())),
        hallucination_interval=proportion_interval(list(halluc.values())),
        n_hallucination_graded=len(halluc),
        grader_errors=sum(1 for r in answered for g in r.grades if g.error is not None),
        rubric_means={c: sum(v) / len(v) for c, v in sorted(by_criterion.items())},
        categories=[
            CategoryAccuracy(c, sum(v) / len(v), len(v)) for c, v in sorted(by_category.items(), key=lambda kv: kv[0])
        ],
        errors=sorted({r.error for r in results if r.error}),
    )
