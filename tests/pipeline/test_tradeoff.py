"""Several models side by side: exact table values, the Pareto front, the recommendation, model changes."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import cli
from bot.engine.models import RetryPolicy
from bot.pipeline.render import render_markdown
from bot.pipeline.run import RunOptions, evaluate
from bot.pipeline.source import GitSource
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import Reply, StubLLM, user_text

N = 20
# model: (cases answered right, seconds per answer, $ per 1K input tokens, $ per 1K output tokens)
MODELS = {
    "big": (18, 0.10, 0.01, 0.03),  # 90%, $2.50 / 1K queries
    "mid": (17, 0.05, 0.002, 0.006),  # 85%, $0.50
    "small": (12, 0.01, 0.0005, 0.0015),  # 60%, $0.125
    "bad": (12, 0.15, 0.01, 0.03),  # 60%, slow and dear: dominated
}
PRICES = {f"openai/{m}": {"input_per_1k": p_in, "output_per_1k": p_out} for m, (_, _, p_in, p_out) in MODELS.items()}
# Priced too: the budget check refuses a model with no known price before any call.
PRICES["openai/down"] = PRICES["openai/big"]


def by_model(body: dict[str, Any]) -> Reply:
    model = body["model"].removeprefix("openai/")
    if model == "down":
        return Reply(status=500)
    right, delay_s, _, _ = MODELS[model]
    case = int(user_text(body).rsplit("q", 1)[-1])
    return Reply(text=f"a{case}" if case < right else "nope", delay_s=delay_s, prompt_tokens=100, completion_tokens=50)


def build(
    repo: GitRepo, base_model: str, head_model: str, models: list[str], window_pp: float = 5.0, **head_prompt: Any
) -> None:
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}], prices=PRICES)
    config["suites"][0]["models"] = models
    # Latency on a shared 2-core machine is noisy at this scale: the threshold gate is not what is tested.
    config["thresholds"] = {"accuracy_drop_pp": window_pp, "latency_p95_increase_pct": 1000}
    repo.write(".evalbot.yml", config)
    repo.write("evals/qa.jsonl", [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"} for i in range(N)])
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", model=base_model))
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", model=head_model, **head_prompt))
    repo.commit("head", tag="head")


async def run(repo: GitRepo, stub: StubLLM, **options: Any) -> Any:
    stub.handler = by_model
    retry = RetryPolicy(max_attempts=2, base_delay_s=0.001)
    return await evaluate(
        GitSource(repo.root), "base", "head", RunOptions(api_base=stub.base_url, retry=retry, **options)
    )


async def test_three_models_give_exact_columns_pareto_marks_and_a_recommendation(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, "openai/big", "openai/big", ["openai/mid", "openai/small", "openai/bad"])
    report = await run(repo, stub)
    (suite,) = report.suites
    mc = suite.models
    assert mc.reference == "openai/big"
    columns = {c.model: c for c in mc.columns}
    assert list(columns) == ["openai/big", "openai/mid", "openai/small", "openai/bad"]
    accuracy = {m: c.variant.metrics.accuracy for m, c in columns.items()}
    assert accuracy == {"openai/big": 0.9, "openai/mid": 0.85, "openai/small": 0.6, "openai/bad": 0.6}
    cost = {m: c.variant.metrics.cost_per_1k_usd for m, c in columns.items()}
    assert cost == pytest.approx({"openai/big": 2.5, "openai/mid": 0.5, "openai/small": 0.125, "openai/bad": 2.5})
    assert columns["openai/mid"].accuracy_delta_pp == pytest.approx(-5.0)
    assert columns["openai/mid"].accuracy_p_value == 1.0  # one case flipped
    assert columns["openai/small"].accuracy_delta_pp == pytest.approx(-30.0)
    assert columns["openai/small"].accuracy_p_value == pytest.approx(2 * 0.5**6)
    assert columns["openai/small"].cost_change_pct == pytest.approx(-95.0)
    assert {m for m, c in columns.items() if c.pareto} == {"openai/big", "openai/mid", "openai/small"}
    # Within 5 pp of the best (90%): big and mid; mid is cheaper.
    assert mc.recommended == "openai/mid"

    text = render_markdown(report)
    assert "| Metric | `openai/big` (current) | `openai/mid` | `openai/small` | `openai/bad` |" in text
    assert "| Accuracy | 90.0% | 85.0% (-5.0 pp) p=1 | 60.0% (-30.0 pp) p=0.0312 | 60.0% (-30.0 pp) p=0.0312 |" in text
    assert "| Cost / 1K queries | $2.50 | $0.5000 (-80.0%) | $0.1250 (-95.0%) | $2.50 (+0.0%) |" in text
    assert "| Pareto front | ✅ | ✅ | ✅ | — |" in text
    assert "Recommended: `openai/mid`, the cheapest model within 5.0 pp of the best accuracy" in text


async def test_the_recommendation_follows_the_accuracy_window(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, "openai/big", "openai/big", ["openai/mid"], window_pp=2.0)
    report = await run(repo, stub)
    assert report.suites[0].models.recommended == "openai/big"


async def test_a_model_change_that_is_worse_everywhere_fails(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, "openai/mid", "openai/bad", [])
    report = await run(repo, stub)
    (suite,) = report.suites
    assert suite.model_change == ("openai/mid", "openai/bad")
    assert [c.model for c in suite.models.columns] == ["openai/mid", "openai/bad"]
    assert suite.verdict == "fail" and report.exit_code == 1
    assert "which it is; the trade-off is for a lead to approve" in render_markdown(report)


async def test_a_model_change_that_trades_accuracy_for_cost_passes(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, "openai/big", "openai/small", [])
    report = await run(repo, stub)
    (suite,) = report.suites
    # Accuracy fell 30 pp (significant): under thresholds that fails; a model change goes to a lead instead.
    assert suite.rows[0].verdict == "fail"
    assert suite.verdict == "pass" and report.exit_code == 0
    assert "which it is not" in render_markdown(report)


async def test_a_model_change_with_a_prompt_change_still_meets_the_thresholds(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, "openai/big", "openai/small", [], system_prompt="Be brief.")
    report = await run(repo, stub)
    # Cheaper, so not worse everywhere; but the prompt changed too, and accuracy fell 30 pp (significant).
    assert report.suites[0].verdict == "fail"


async def test_a_model_whose_provider_always_fails_shows_errors_not_zero(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, "openai/big", "openai/big", ["openai/down", "openai/small"])
    report = await run(repo, stub)
    columns = {c.model: c for c in report.suites[0].models.columns}
    down = columns["openai/down"].variant.metrics
    assert down.accuracy is None and down.n_errors == N
    assert not columns["openai/down"].pareto and report.suites[0].models.recommended == "openai/big"
    text = render_markdown(report)
    assert "| Failed calls | 0 / 20 | 20 / 20 | 0 / 20 |" in text
    assert "| Accuracy | 90.0% | — | 60.0% (-30.0 pp) p=0.0312 |" in text


def test_cli_models_option_adds_columns(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, "openai/big", "openai/big", [])
    stub.handler = by_model
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--api-base", stub.base_url, "--models", "openai/mid"]
    result = CliRunner().invoke(cli, args)
    assert "| Metric | `openai/big` (current) | `openai/mid` |" in result.output
    assert result.exit_code == 0
