"""The per-assertion table of a promptfoo suite's report: passes counted as promptfoo counts them."""

from __future__ import annotations

from bot.engine.graders import Grade
from bot.engine.runner import CaseResult
from bot.pipeline.compare import AssertionCount, Variant, assertion_counts, compare_suite
from bot.pipeline.config import Thresholds
from bot.pipeline.render import render_markdown
from bot.pipeline.run import Report


def result(case: int, *grades: tuple[str, bool | None]) -> CaseResult:
    made = tuple(
        Grade(name, "accuracy", passed, error=None if passed is not None else "judge failed") for name, passed in grades
    )
    return CaseResult(f"c{case}", None, 0, "answer", 1.0, 0.001, 100, 20, False, None, made)


def test_counts_are_per_assertion_and_per_answer_it_judged() -> None:
    results = [
        result(0, ("icontains", True), ("not-icontains", True)),
        result(1, ("icontains", False), ("not-icontains", True), ("is-json", None)),
        result(2, ("not-icontains", False)),
    ]
    assert assertion_counts(results) == [
        AssertionCount("icontains", 1, 2, 0),
        AssertionCount("not-icontains", 2, 3, 0),
        AssertionCount("is-json", 0, 1, 1),
    ]


def test_the_report_shows_base_and_head_passes_per_assertion() -> None:
    base = Variant("base", "", "openai/m", [result(i, ("contains", i < 3), ("latency", True)) for i in range(4)])
    head = Variant("head", "", "openai/m", [result(i, ("contains", i < 4), ("latency", True)) for i in range(4)])
    suite = compare_suite("support-bot", ["evals/tests/cases.csv changed"], base, head, Thresholds(min_cases=1))
    suite.assertions_base, suite.assertions_head = assertion_counts(base.results), assertion_counts(head.results)
    text = render_markdown(Report("main", "feature", ["evals/tests/cases.csv"], suites=[suite]))
    assert (
        "<details><summary>Assertions: passes as promptfoo counts them</summary>\n\n"
        "| Assertion | base passed | head passed |\n|---|---:|---:|\n"
        "| `contains` | 3/4 | 4/4 |\n| `latency` | 4/4 | 4/4 |\n\n</details>"
    ) in text
