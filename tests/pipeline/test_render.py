from __future__ import annotations

import dataclasses
import json

from bot.engine.graders import Grade
from bot.engine.runner import CaseResult
from bot.pipeline.compare import compare_suite
from bot.pipeline.config import Thresholds
from bot.pipeline.render import MAX_MARKDOWN_BYTES, cut_utf8, md_cell, md_code, render_json, render_markdown
from bot.pipeline.run import Report, Spend
from bot.pipeline.variants import Variant


def result(case: int, passed: bool, output: str = "answer", latency_s: float = 1.0) -> CaseResult:
    grade = Grade("equals", "accuracy", passed, "" if passed else "expected 'x'")
    return CaseResult(f"c{case}", "billing", 0, output, latency_s, 0.001, 100, 20, False, None, (grade,))


def report_with(base_passes: list[bool], head_passes: list[bool], output: str = "answer") -> Report:
    base = Variant("base", "1.0.0", "openai/m", [result(i, p, output) for i, p in enumerate(base_passes)])
    head = Variant("head", "1.1.0", "openai/m", [result(i, p, output, 1.0) for i, p in enumerate(head_passes)])
    suite = compare_suite("qa", ["prompts/qa.yaml changed"], base, head, Thresholds())
    spend = Spend(80, 0, 80, 0, 0, 0.08, 0, 0.0, 0, "disk", 12.5)
    return Report("main", "feature", ["prompts/qa.yaml"], suites=[suite], spend=spend)


def test_untrusted_text_cannot_break_tables_ping_or_inject_html() -> None:
    text = "| @alice <img src=x onerror=alert(1)> `code`\n| next row"
    assert md_cell(text) == "\\| @\u200dalice &lt;img src=x onerror=alert(1)&gt; \\`code\\` \\| next row"
    assert md_cell("x" * 300, limit=10) == "xxxxxxxxx…"
    # No link syntax, and no bare URL GitHub would link (a zero-width space after the scheme).
    assert md_cell("[Approve here](https://evil) ![x](y)") == "\\[Approve here\\](https:\u200b//evil) !\\[x\\](y)"
    # In a code span nothing is markup, so only a backtick could end it early.
    assert md_code("c1` [x](y) `") == "`c1' [x](y) '`"


def test_summary_table_with_fixed_numbers() -> None:
    text = render_markdown(report_with([True] * 40, [True] * 28 + [False] * 12))
    assert text.startswith("## evalbot: ❌ fail\n")
    assert "| Metric | base (1.0.0) | head (1.1.0) | Δ | verdict |" in text
    # A drop is decided by the one-sided test: P(12 of 12 flips broke) = 0.5^12.
    accuracy = (
        "| Accuracy | 100.0% [91.2, 100.0] | 70.0% [54.6, 81.9] | -30.0 pp [-45.0, -17.5] one-sided McNemar p=0.000244 "
        "| ❌ fail |"
    )
    assert accuracy in text
    # Latency and cost: the paired bootstrap of the ratio of the statistic shown.
    p95 = "| Latency p95 | 1.00 s | 1.00 s | +0.0% [+0.0, +0.0] two-sided paired bootstrap of the p95 ratio p=1 |"
    assert p95 + " ✅ pass |" in text
    cost = "| Cost / 1K queries | $1.00 | $1.00 | +0.0% [+0.0, +0.0] two-sided paired bootstrap of the mean ratio p=1 |"
    assert cost + " ✅ pass |" in text
    assert "Latency is decided on all 40 paired cases, measured in this run. Slowest calls — base: `c0` 1.00 s," in text
    detectable = "40 paired cases: a change of accuracy of about 18.2 pp or more is detectable"
    assert detectable + " (80% power, one-sided α = 0.05)" in text
    assert "| Hallucination rate | — | — | — | — |" in text
    assert "<details><summary>Regressions: passed on base, fail on head (12)</summary>" in text
    spend = "80 model calls under test in 12.50 s (0 from cache, 80 HTTP requests, 0 retries, 0 failed)"
    assert spend + "; spend under test $0.0800" in text


def test_an_inconclusive_breach_says_what_would_decide_it() -> None:
    # 5 of 36 passing cases broke, 1 of 4 failing ones was fixed.
    text = render_markdown(report_with([True] * 36 + [False] * 4, [False] * 5 + [True] * 32 + [False] * 3))
    assert "| -10.0 pp [-22.5, +0.0] one-sided McNemar p=0.109 | ⚠️ inconclusive |" in text
    assert (
        "\n⚠️ Accuracy -10.0 pp is past the threshold (2 pp) but not significant: "
        "one-sided McNemar p = 0.109 ≥ α = 0.05. "
        "About 100 paired cases would decide a change this size (80% power); these 40 detect about 14.9 pp.\n"
    ) in text


def test_repeats_are_stated_as_one_share_per_case() -> None:
    base = Variant("base", "1", "openai/m", [result(c, c > 0 or s > 0) for c in range(10) for s in range(3)])
    head = Variant("head", "2", "openai/m", [result(c, True) for c in range(10) for s in range(3)])
    report = Report("main", "feature", [], suites=[compare_suite("qa", ["changed"], base, head, Thresholds())])
    text = render_markdown(report)
    assert "changed. 10 cases, 3 samples each." in text
    assert "10 paired cases (a case's samples count once, as its share of passing samples)" in text


def test_huge_report_is_trimmed_in_details_never_in_the_summary() -> None:
    # Non-Latin answers: GitHub counts the limit in bytes of UTF-8, 2-3 for each of these characters.
    long_output = "очень длинный ответ → 長い答え " * 100
    report = report_with([True] * 3000, [False] * 3000, output=long_output)
    text = render_markdown(report)
    assert len(text.encode()) <= MAX_MARKDOWN_BYTES
    assert "| Accuracy | 100.0% [99.9, 100.0] | 0.0% [0.0, 0.1] | -100.0 pp" in text
    assert "…and 2950 more." in text


def test_a_cut_in_utf8_falls_between_characters() -> None:
    assert cut_utf8("a✅b", 3) == "a"  # "✅" is 3 bytes: a cut inside it keeps none of it
    assert cut_utf8("a✅b", 4) == "a✅"
    assert cut_utf8("a✅b", 5) == "a✅b"


def test_json_has_the_same_numbers() -> None:
    data = json.loads(render_json(report_with([True] * 30 + [False] * 10, [True] * 36 + [False] * 4)))
    assert data["verdict"] == "pass" and data["exit_code"] == 0
    suite = data["suites"][0]
    assert (suite["base"]["metrics"]["accuracy"], suite["head"]["metrics"]["accuracy"]) == (0.75, 0.9)
    rows = {row["key"]: row for row in suite["rows"]}
    assert abs(rows["accuracy"]["delta"] - 15.0) < 1e-9
    assert suite["head"]["results"][0]["passed"] is True


def test_a_latency_row_names_its_bound_and_the_pairs_it_needs() -> None:
    def variant(name: str, latencies: list[float], retried: int | None = None) -> Variant:
        results = [result(i, True, "a", s) for i, s in enumerate(latencies)]
        if retried is not None:
            results[retried] = dataclasses.replace(results[retried], retried=True)
        return Variant(name, "1", "openai/m", results)

    slow = compare_suite("qa", ["c"], variant("base", [1.0] * 30), variant("head", [1.5] * 30), Thresholds())
    text = render_markdown(Report("main", "feature", [], suites=[slow]))
    # No resample at or below the threshold: p is 1 / 10,000, the bootstrap's resolution.
    row = "+50.0% [+50.0, +50.0] one-sided paired bootstrap of the p95 ratio vs 10% p=0.0001, bound +50.0%, 30 pairs"
    assert row + " | ❌ fail |" in text
    few = compare_suite("qa", ["c"], variant("base", [1.0] * 8), variant("head", [1.5] * 7 + [4.0], 7), Thresholds())
    text = render_markdown(Report("main", "feature", [], suites=[few]))
    assert "Latency p95 +212.5% is past the threshold (10%) but rests on 8 paired cases, fewer than 20: " in text
    assert "inconclusive — needs 20 pairs." in text
    assert "head: `c7` 4.00 s (retried), `c0` 1.50 s," in text
