"""Latency decided on same-run pairs: answers from the cache carry the latency of another day, so a
sample of cases is called again, base and head back to back; only those pairs decide the p95 row.

The stub's delays are set per request (by the prompt's system text and a switch the test flips), and
far apart (tens of times): the assertions are on the gate's decision, not on timings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.engine.cache import DiskCache
from bot.pipeline.compare import compare_suite
from bot.pipeline.config import Thresholds
from bot.pipeline.render import render_markdown
from bot.pipeline.run import Report, RunOptions, evaluate
from bot.pipeline.source import GitSource
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import Reply, StubLLM, user_text

N_CASES = 24
FAST_S, SLOW_S = 0.01, 0.25


def build_repo(repo: GitRepo) -> None:
    graders = [{"type": "contains", "field": "expected"}]
    repo.write(".evalbot.yml", suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", graders))
    repo.write("evals/qa.jsonl", [{"id": f"c{i}", "question": f"q{i}", "expected": "ok"} for i in range(N_CASES)])
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1"))
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2"))
    repo.commit("first head", tag="head1")
    repo.write("prompts/qa.yaml", prompt_file("1.2.0", system_prompt="v3"))
    repo.commit("second head", tag="head2")


class Delays:
    """The stub's delay for each request: `default`, or per system prompt."""

    def __init__(self, default: float):
        self.default = default
        self.by_prompt: dict[str, float] = {}

    def __call__(self, body: dict[str, Any]) -> Reply:
        system = body["messages"][0]["content"]
        assert user_text(body).startswith("Question: q")
        return Reply(text="ok", delay_s=self.by_prompt.get(system, self.default))


async def evaluate_to(repo: GitRepo, stub: StubLLM, head: str, cache: DiskCache, concurrency: int = 8) -> Report:
    options = RunOptions(api_base=stub.base_url, concurrency=concurrency, cache=cache)
    return await evaluate(GitSource(repo.root), "base", head, options)


@pytest.mark.parametrize(("then_s", "now_s"), [(FAST_S, SLOW_S), (SLOW_S, FAST_S)])
async def test_a_base_from_a_cache_of_another_day_is_measured_again(
    repo: GitRepo, stub: StubLLM, tmp_path: Path, then_s: float, now_s: float
) -> None:
    build_repo(repo)
    delays = Delays(then_s)
    stub.handler = delays
    cache = DiskCache(tmp_path / "cache")
    await evaluate_to(repo, stub, "head1", cache)  # the base's answers are cached, at `then_s`
    delays.default = now_s  # another day: the provider (or this machine) is slower, or faster
    report = await evaluate_to(repo, stub, "head2", cache)
    (suite,) = report.suites

    # The base's answers came from the cache with their old latencies; compared with them, the head
    # (the same prompt but for its version) would look 25 times slower, or faster.
    assert all(r.stored for r in suite.base.results) and not any(r.stored for r in suite.head.results)
    old_way = compare_suite("qa", [], suite.base, suite.head, Thresholds())
    p95_old = next(row for row in old_way.rows if row.key == "latency_p95")
    assert p95_old.verdict == ("fail" if now_s > then_s else "improved")

    # Measured again, base and head back to back, on every case (fewer than `latency_sample`).
    # Same delays on both sides now: the change is noise (tens of percent at most on a loaded machine,
    # against the old way's −96% or +2,400%), and it never fails the gate.
    p95 = next(row for row in suite.rows if row.key == "latency_p95")
    assert abs(p95.delta) < 50 and p95.verdict != "fail" and p95.pairs == N_CASES
    assert (suite.latency.pairs, suite.latency.remeasured, suite.latency.from_cache) == (N_CASES, True, 0)
    assert report.spend.latency_calls == 2 * N_CASES
    assert len(stub.requests) == 2 * N_CASES + N_CASES + 2 * N_CASES  # first run, the new head, the pairs
    text = render_markdown(report)
    assert f"Latency is decided on {N_CASES} same-run pairs" in text
    assert "base and head back to back in a random order" in text
    await cache.close()


async def test_a_true_slowdown_of_the_head_is_flagged_on_the_same_run_pairs(
    repo: GitRepo, stub: StubLLM, tmp_path: Path
) -> None:
    build_repo(repo)
    # Delays long beside what a loaded machine adds to a call (a p95 of 24 pairs rests on a few calls).
    delays = Delays(0.6)
    stub.handler = delays
    cache = DiskCache(tmp_path / "cache")
    await evaluate_to(repo, stub, "head1", cache, concurrency=24)
    # The new head is 30% slower than the base, whose cached answers were made at the same speed.
    delays.by_prompt["v3"] = 0.78
    report = await evaluate_to(repo, stub, "head2", cache, concurrency=24)
    (suite,) = report.suites
    p95 = next(row for row in suite.rows if row.key == "latency_p95")
    assert suite.latency.remeasured and p95.pairs == N_CASES
    assert p95.verdict == "fail" and p95.bound > 10
    await cache.close()


async def test_the_sample_is_latency_sample_cases_and_the_estimate_counts_it(
    repo: GitRepo, stub: StubLLM, tmp_path: Path
) -> None:
    build_repo(repo)
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "contains", "field": "expected"}])
    config["suites"][0]["latency_sample"] = 5
    repo.write(".evalbot.yml", config)
    repo.commit("five pairs", tag="base5")
    stub.handler = Delays(FAST_S)
    cache = DiskCache(tmp_path / "cache")
    options = RunOptions(api_base=stub.base_url, concurrency=8, cache=cache)
    repo.write("prompts/qa.yaml", prompt_file("1.3.0", system_prompt="v4"))
    repo.commit("head", tag="head5")
    cold = await evaluate(GitSource(repo.root), "base5", "head5", options)
    # The estimate counts the 5 pairs (10 calls) a cached base may need, on top of 2 × 24 calls.
    assert cold.estimate.calls == 2 * N_CASES + 10
    # A cold cache: every answer measured now, all pairs count.
    assert (cold.suites[0].latency.pairs, cold.suites[0].latency.remeasured) == (N_CASES, False)
    repo.write("prompts/qa.yaml", prompt_file("1.4.0", system_prompt="v5"))
    repo.commit("head again", tag="head6")
    warm = await evaluate(GitSource(repo.root), "base5", "head6", options)
    (suite,) = warm.suites
    assert (suite.latency.pairs, suite.latency.remeasured, suite.latency.from_cache) == (5, True, N_CASES - 5)
    p95 = next(row for row in suite.rows if row.key == "latency_p95")
    # Five pairs of a stub on a loaded machine may look faster or slower, never enough to fail.
    assert p95.verdict != "fail" and p95.pairs == 5
    assert warm.spend.latency_calls == 10
    await cache.close()
