"""A hostile pull request cannot stall the worker: slow regexes and large datasets run off the event loop."""

from __future__ import annotations

from typing import Any, TypeVar

from bot.engine.graders import REGEX_TIMEOUT_S, Sample, regex
from bot.engine.models import ModelClient
from bot.pipeline.changes import plan
from bot.pipeline.run import RunOptions, data_checks, evaluate
from bot.pipeline.source import GitSource
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.loop_ticker import ticking
from tests.stub_llm import Reply, StubLLM

T = TypeVar("T")
# The issue's pattern (catastrophic backtracking in `re`: seconds per case) and one the `regex` module
# cannot shortcut either (exponential in both).
ISSUE_PATTERN = r"^(\w+\s?)*$"
EXPONENTIAL_PATTERN = r"^(a|a)*$"
ANSWER = "a" * 29 + "!"  # 30 characters


async def test_a_backtracking_regex_grader_ends_at_its_time_limit_and_the_loop_keeps_ticking(
    repo: GitRepo, stub: StubLLM
) -> None:
    graders = [{"type": "regex", "pattern": ISSUE_PATTERN}, {"type": "regex", "field": "pattern"}]
    repo.write(".evalbot.yml", suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", graders))
    rows = [{"id": f"c{i}", "question": f"q{i}", "pattern": EXPONENTIAL_PATTERN} for i in range(6)]
    repo.write("evals/qa.jsonl", rows)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2"))
    repo.commit("head", tag="head")
    stub.handler = lambda body: Reply(text=ANSWER)

    options = RunOptions(api_base=stub.base_url, concurrency=1)
    # litellm's import and first-call set-up happen once per worker process, not per job: done first.
    await ModelClient(None, {}, 1, None, stub.base_url).complete("openai/stub", [{"role": "user", "content": "-"}])
    report, ticks = await ticking(evaluate(GitSource(repo.root), "base", "head", options))

    (suite,) = report.suites
    grades = [grade for variant in (suite.base, suite.head) if variant for r in variant.results for grade in r.grades]
    issue = [g for g in grades if g.reason == f"no match for {ISSUE_PATTERN!r}"]
    slow = [g for g in grades if g.error and g.error.startswith("regular expression took too long")]
    # The issue's pattern is answered (no match) by the regex module at once; the exponential one is
    # cut at the limit and recorded as the grader's error, never as a pass.
    assert (len(issue), len(slow), len(grades)) == (12, 12, 24)
    assert all(g.passed is False for g in issue) and all(g.passed is None for g in slow)
    head = suite.head.metrics
    # Each case fails on the issue's pattern; the slow one is counted as a grader error.
    assert (head.n_graded, head.accuracy, head.grader_errors) == (6, 0.0, 6)
    # `re` took seconds per case on the loop; now no pause comes near that.
    assert ticks.longest_busy_s < 0.25, f"the event loop was held for {ticks.longest_busy_s:.3f} s of CPU"


async def test_a_regex_match_at_its_time_limit_leaves_the_loop_running() -> None:
    grader = regex(EXPONENTIAL_PATTERN)
    grade, ticks = await ticking(grader(Sample(ANSWER, {}, "")))
    assert grade.passed is None
    assert grade.error == f"regular expression took too long (over 0.1 s on this answer): {EXPONENTIAL_PATTERN!r}"
    # The match took its full 0.1 s limit in a thread: the loop thread spent next to no CPU between two
    # ticks (on the loop, the match's CPU would have fallen between two).
    assert REGEX_TIMEOUT_S == 0.1
    assert ticks.longest_busy_s < 0.03


async def test_parsing_and_checking_5000_rows_leaves_the_loop_running(repo: GitRepo) -> None:
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}])
    config["suites"][0].update(schema="evals/qa.schema.yaml", training_data="train/qa.jsonl")
    repo.write(".evalbot.yml", config)
    repo.write("evals/qa.schema.yaml", {"type": "object", "required": ["id", "question"]})
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    cats = ["billing", "booking", "complaint"]

    def rows(n: int, shift: int) -> list[dict[str, Any]]:
        return [
            {
                "id": f"c{i}",
                "question": f"question {i} about room {(i * 7 + shift) % 500} and night {i % 13}",
                "expected": f"answer {i}",
                "category": cats[(i + shift) % 3],
                "nights": (i * 31 + shift) % 17,
            }
            for i in range(n)
        ]

    repo.write("evals/qa.jsonl", rows(5000, 0))
    repo.write("train/qa.jsonl", rows(5000, 1))
    repo.commit("base", tag="base")
    repo.write("evals/qa.jsonl", rows(5000, 2))
    repo.write("train/qa.jsonl", rows(1000, 2))
    repo.commit("head", tag="head")
    source = GitSource(repo.root)

    async def work() -> Any:
        the_plan = await plan(source, "base", "head")
        return the_plan, await data_checks(source, the_plan, "base")

    (the_plan, (quality,)), ticks = await ticking(work())

    assert the_plan.errors == [] and len(the_plan.suites[0].dataset.cases) == 5000
    assert (quality.rows_base, quality.rows_head, len(quality.changed)) == (5000, 5000, 5000)
    assert len(quality.contaminated) == 1000
    # Parsing and checking took far longer than this, in threads: the loop was never held that long.
    assert ticks.longest_busy_s < 0.2, f"the event loop was held for {ticks.longest_busy_s:.3f} s of CPU"
