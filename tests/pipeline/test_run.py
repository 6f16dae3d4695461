"""End to end through the pipeline: a git repo at two revisions, real HTTP to the stub model server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.engine.cache import DiskCache
from bot.engine.models import RetryPolicy
from bot.pipeline.render import render_markdown
from bot.pipeline.run import RunOptions, evaluate
from bot.pipeline.source import GitSource
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import Reply, StubLLM, user_text

N_CASES = 40
BASE_CORRECT = set(range(30))  # 30 / 40
HEAD_CORRECT = set(range(2, 38))  # 36 / 40: cases 0 and 1 regress, 30-37 get fixed


def scripted(body: dict[str, Any]) -> Reply:
    system = body["messages"][0]["content"]
    case = int(user_text(body).split("q")[-1])
    is_head = "v2" in system
    correct = case in (HEAD_CORRECT if is_head else BASE_CORRECT)
    delay_s = (0.1 if is_head else 0.01) + case * 0.001
    return Reply(text=f"a{case}" if correct else "wrong", delay_s=delay_s, prompt_tokens=100, completion_tokens=50)


def build_repo(repo: GitRepo) -> None:
    prices = {"openai/stub": {"input_per_1k": 0.001, "output_per_1k": 0.002}}
    graders = [{"type": "equals", "field": "expected"}]
    repo.write(".evalbot.yml", suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", graders, prices=prices))
    cats = ["billing", "booking"]
    repo.write(
        "evals/qa.jsonl",
        [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}", "category": cats[i % 2]} for i in range(N_CASES)],
    )
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1 agent"))
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2 agent"))
    repo.commit("head", tag="head")


async def run(repo: GitRepo, stub: StubLLM, cache: Any = None, concurrency: int = 8) -> Any:
    options = RunOptions(api_base=stub.base_url, concurrency=concurrency, cache=cache)
    return await evaluate(GitSource(repo.root), "base", "head", options)


@pytest.mark.slow
async def test_known_answers_give_exact_numbers(repo: GitRepo, stub: StubLLM) -> None:
    build_repo(repo)
    stub.handler = scripted
    # One call at a time: the stub shares this process's CPU, and latency is what this test measures.
    report = await run(repo, stub, concurrency=1)

    assert report.errors == [] and report.problems == []
    (suite,) = report.suites
    assert suite.reasons == ["prompts/qa.yaml changed"]
    base, head = suite.base.metrics, suite.head.metrics
    assert (base.accuracy, head.accuracy) == (0.75, 0.90)
    assert (base.n_graded, head.n_graded, head.n_errors) == (40, 40, 0)
    rows = {row.key: row for row in suite.rows}
    acc = rows["accuracy"]
    assert acc.delta == pytest.approx(15.0)
    # McNemar on the 10 discordant cases (8 fixed, 2 broken): exact two-sided binomial p.
    assert acc.p_value == pytest.approx(0.109375)
    assert acc.significant is False and acc.verdict == "pass"
    assert [f.case_id for f in suite.regressions] == ["c0", "c1"]
    assert [f.case_id for f in suite.fixes] == [f"c{i}" for i in range(30, 38)]
    # Wilson 95% interval of 30/40.
    assert (base.accuracy_interval.low, base.accuracy_interval.high) == pytest.approx((0.5980, 0.8581), abs=1e-4)

    # Cost: 100 prompt + 50 completion tokens at $0.001 / $0.002 per 1K = $0.0002 a call.
    assert base.cost_per_1k_usd == pytest.approx(0.2) and head.cost_per_1k_usd == pytest.approx(0.2)
    assert head.cost_per_pct_usd == pytest.approx(0.2 / 90)
    assert report.spend.under_test_usd == pytest.approx(80 * 0.0002)
    assert rows["cost_per_1k"].delta == pytest.approx(0.0)

    # Latency: the stub waits 10 ms (+1 ms per case) for base and 100 ms (+1 ms) for head; HTTP adds a
    # little, and a loaded machine more: the upper bounds only say the stub's delay is what was measured.
    expected_base_p50 = 0.01 + 0.0195
    expected_head_p95 = 0.1 + 0.03705
    assert expected_base_p50 <= base.latency_p50_s < expected_base_p50 + 0.5
    assert expected_head_p95 <= head.latency_p95_s < expected_head_p95 + 0.5
    assert rows["latency_p95"].delta > 10 and rows["latency_p95"].verdict == "fail"
    assert report.verdict == "fail" and report.exit_code == 1

    by_cat = {c.category: (c.accuracy, c.n) for c in head.categories}
    assert by_cat == {"billing": (18 / 20, 20), "booking": (18 / 20, 20)}
    assert len(stub.requests) == 80


async def test_second_identical_run_is_served_from_cache(repo: GitRepo, stub: StubLLM, tmp_path: Any) -> None:
    build_repo(repo)
    stub.handler = scripted
    cache = DiskCache(tmp_path / "c")
    first = await run(repo, stub, cache)
    calls_after_first = len(stub.requests)
    second = await run(repo, stub, cache)

    assert calls_after_first == 80 and second.spend.cached == 80
    # Every answer came from the cache; latency alone was measured again, on 30 cases (`latency_sample`),
    # base and head back to back: 60 calls, priced like any.
    assert second.spend.http_requests == second.spend.latency_calls == 60 and len(stub.requests) == 140
    assert second.spend.under_test_usd == pytest.approx(60 * 0.0002) == second.spend.latency_usd
    assert (second.suites[0].latency.pairs, second.suites[0].latency.from_cache) == (30, 10)
    for a, b in zip(first.suites[0].rows, second.suites[0].rows, strict=True):
        if not a.key.startswith("latency"):
            assert (a.base, a.head, a.delta) == (b.base, b.head, b.delta)
    await cache.close()


@pytest.mark.slow
async def test_provider_that_always_fails_gives_errors_not_wrong_answers(repo: GitRepo, stub: StubLLM) -> None:
    build_repo(repo)
    stub.handler = lambda body: Reply(status=500)
    options = RunOptions(api_base=stub.base_url, concurrency=8, retry=RetryPolicy(max_attempts=3, base_delay_s=0.001))
    report = await evaluate(GitSource(repo.root), "base", "head", options)
    (suite,) = report.suites
    assert suite.head.metrics.n_errors == 40 and suite.head.metrics.accuracy is None
    assert suite.rows[0].verdict == "n/a"
    assert len(suite.errors) == 80 and "HTTP 500" in suite.errors[0].message
    assert len(stub.requests) == 80 * 3  # every call tried max_attempts times, no client retries on top
    text = render_markdown(report)
    assert "Failed calls (80)" in text and "0.0%" not in text
    assert "| Failed calls | 40 | 40 | +0 | ❌ fail |" in text and report.exit_code == 1


async def test_a_head_that_breaks_calls_fails_the_gate(repo: GitRepo, stub: StubLLM) -> None:
    build_repo(repo)
    # The head's calls fail on cases 0-19, so its accuracy on the rest alone would look perfect.
    stub.handler = lambda body: (
        Reply(status=400)
        if "v2" in body["messages"][0]["content"] and int(user_text(body)[-2:].strip("q")) < 20
        else scripted(body)
    )
    report = await evaluate(GitSource(repo.root), "base", "head", RunOptions(api_base=stub.base_url))
    (suite,) = report.suites
    rows = {row.key: row for row in suite.rows}
    assert (rows["failed_calls"].base, rows["failed_calls"].head, rows["failed_calls"].verdict) == (0, 20, "fail")
    assert suite.verdict == "fail"


@pytest.mark.slow
def test_cli_eval_prints_report_and_exit_code(repo: GitRepo, stub: StubLLM) -> None:
    build_repo(repo)
    stub.handler = scripted
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "head", "--api-base", stub.base_url]
    # One call at a time, so the 90 ms the head adds per call is measured, and breaches the p95 gate.
    result = CliRunner().invoke(cli, [*args, "--concurrency", "1"])
    assert result.exit_code == 1, result.output
    assert "| Accuracy | 75.0% [59.8, 85.8] | 90.0% [76.9, 96.0] | +15.0 pp" in result.output
    assert "Regressions: passed on base, fail on head (2)" in result.output

    as_json = CliRunner().invoke(
        cli,
        ["eval", "--repo", str(repo.root), "--base", "base", "--format", "json", "--api-base", stub.base_url],
    )
    data = json.loads(as_json.output)
    assert data["verdict"] == "fail" and data["exit_code"] == 1
    assert data["suites"][0]["head"]["metrics"]["accuracy"] == 0.9
    assert data["spend"]["cached"] == 80  # the second run came from the disk cache


def test_budget_refuses_a_run_estimated_above_it(repo: GitRepo, stub: StubLLM) -> None:
    build_repo(repo)
    config = (repo.root / ".evalbot.yml").read_text()
    repo.git("checkout", "-q", "base")
    repo.git("checkout", "-q", "-b", "policy")
    # Per call: 7 prompt tokens + 50 output tokens (max_tokens) at $0.001 / $0.002 per 1K, billed at
    # worst twice (RetryPolicy.max_billed_attempts), for the 80 calls and the 30 pairs (60 calls) that
    # latency may be measured on again when answers come from the cache: 140 × 2 × $0.000107.
    (repo.root / ".evalbot.yml").write_text(config + "budget: {max_cost_usd: 0.001}\n")
    repo.commit("tight budget", tag="tight")
    repo.git("checkout", "-q", "head")
    args = ["eval", "--repo", str(repo.root), "--base", "tight", "--head", "head", "--api-base", stub.base_url]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "Not evaluated: the estimated cost, $0.0300 for 140 model calls" in result.output
    assert "above the budget of $0.0010" in result.output
    assert stub.requests == []


async def test_a_higher_budget_for_one_run_lifts_the_refusal(repo: GitRepo, stub: StubLLM) -> None:
    build_repo(repo)
    (repo.root / ".evalbot.yml").write_text(
        (repo.root / ".evalbot.yml").read_text() + "budget: {max_cost_usd: 0.001}\n"
    )
    repo.commit("tight budget on head too", tag="tight-head")
    options = RunOptions(api_base=stub.base_url, budget_usd=0.05)
    report = await evaluate(GitSource(repo.root), "base", "tight-head", options)
    assert not report.budget_refused and report.estimate.usd == pytest.approx(80 * 2 * 0.000107)
    assert len(stub.requests) == 80
