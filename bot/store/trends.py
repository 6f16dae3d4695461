"""Trend series of a suite on the default branch, with a pull request's head as the last point."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.pipeline.run import Report
from bot.store.store import Store

# Evaluations on the branch per chart; the head comes after them.
TREND_POINTS = 20


@dataclass(frozen=True)
class Series:
    """One line: x labels and y values of the same length (points with no value are left out)."""

    labels: list[str]
    values: list[float]


@dataclass(frozen=True)
class Trend:
    suite: str
    branch: str
    earlier: int  # evaluations on the branch before the head
    accuracy_pct: Series
    cost_per_1k_usd: Series


def chart_text(value: str, limit: int = 60) -> str:
    """Text safe inside a Mermaid quoted string: no quotes, brackets or line breaks can end it."""
    return re.sub(r"[^\w .:/#@+-]", "", " ".join(value.split()))[:limit] or "-"


def _series(points: list[tuple[str, float | None]], scale: float, digits: int) -> Series:
    kept = [(label, round(value * scale, digits)) for label, value in points if value is not None]
    return Series([label for label, _ in kept], [value for _, value in kept])


def suite_trends(store: Store, repository: str, report: Report, branch: str, head_label: str) -> list[Trend]:
    """For each suite of `report`: its last evaluations on `branch` and this report's head after them."""
    trends = []
    for suite in report.suites:
        history = store.suite_history(repository, suite.name, branch, TREND_POINTS)
        head = suite.head.metrics
        accuracy = [(p.sha[:7], p.accuracy) for p in history] + [(head_label, head.accuracy)]
        cost = [(p.sha[:7], p.cost_per_1k_usd) for p in history] + [(head_label, head.cost_per_1k_usd)]
        trends.append(
            Trend(
                chart_text(suite.name), chart_text(branch), len(history), _series(accuracy, 100, 1), _series(cost, 1, 6)
            )
        )
    return trends
