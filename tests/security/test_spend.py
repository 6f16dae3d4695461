"""Spend is bounded: every model priced, every call capped, retries counted, and the run stopped at the budget."""

from __future__ import annotations

from typing import Any

import pytest

from bot.engine.models import ModelClient, RetryPolicy
from bot.errors import ModelCallError
from bot.pipeline.render import render_markdown
from bot.pipeline.run import RunOptions, evaluate
from bot.pipeline.source import GitSource
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import Reply, StubLLM


def build(repo: GitRepo, n_cases: int = 1, graders: list[dict[str, Any]] | None = None, **prompt: Any) -> None:
    """One suite at tag head: `n_cases` cases, a prompt on openai/stub (keys of `prompt` override; a
    None value removes the key), the stub as judge, `budget` and other policy from `prompt.pop`."""
    policy = {key: prompt.pop(key) for key in ("budget", "prices") if key in prompt}
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", graders or [{"type": "equals"}], **policy)
    repo.write(".evalbot.yml", {"judge": "openai/stub", **config})
    rows = [
        {"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}", "context": f"Rooms cost 9{i} EUR."}
        for i in range(n_cases)
    ]
    repo.write("evals/qa.jsonl", rows)
    spec = {k: v for k, v in {**prompt_file("1.0.0"), **prompt}.items() if v is not None}
    repo.write("prompts/qa.yaml", spec)
    repo.commit("suite", tag="head")


async def run_all(repo: GitRepo, stub: StubLLM, **options: Any) -> Any:
    """Evaluate every suite at tag head on its own (one variant: the head prompt)."""
    return await evaluate(
        GitSource(repo.root), "head", "head", RunOptions(api_base=stub.base_url, run_all=True, **options)
    )


JUDGES = [
    {"type": "rubric", "criteria": ["correctness"]},
    {"type": "hallucination", "context_field": "context"},
]


async def test_a_model_with_no_known_price_is_refused_by_the_budget(repo: GitRepo, stub: StubLLM) -> None:
    # Today this counts $0: 4,000 calls at max_tokens 100000 "estimated" at $0.00, under any budget.
    build(repo, n_cases=4000, model="openai/my-finetune", max_tokens=100_000, budget={"max_cost_usd": 1000})
    report = await run_all(repo, stub)
    assert report.problems == [
        "no price is known for openai/my-finetune, so the budget cannot bound the run: add it to `prices:` in "
        "the base branch's .evalbot.yml; nothing was run"
    ]
    assert report.verdict == "fail" and stub.requests == []
    assert (
        "Not evaluated: no price is known for `openai/my-finetune`, so the budget cannot bound what the run would "
        "spend. Add it to `prices:` in `.evalbot.yml` on the base branch."
    ) in render_markdown(report)


async def test_a_default_budget_applies_when_the_config_sets_none(repo: GitRepo, stub: StubLLM) -> None:
    # 40 calls × (11 input tokens at $0.001 + 100,000 output tokens at $0.002 per 1K) × 2 billed attempts.
    build(repo, n_cases=40, max_tokens=100_000)
    report = await run_all(repo, stub)
    assert report.budget_usd == 10.0 and report.budget_refused
    assert report.estimate.usd == pytest.approx(40 * 2 * (11 * 0.001 + 100_000 * 0.002) / 1000)
    assert report.verdict == "fail" and stub.requests == []
    assert "is above the budget of $10.00 (`budget.max_cost_usd` of the base branch)" in render_markdown(report)


async def test_every_call_sends_the_max_tokens_the_estimate_assumed(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, n_cases=3, graders=JUDGES, max_tokens=None)  # the prompt sets no max_tokens
    report = await run_all(repo, stub)
    under_test = [r for r in stub.requests if r["messages"][0]["content"] == "You are a helpful agent."]
    judges = [r for r in stub.requests if r not in under_test]
    assert (len(under_test), len(judges)) == (3, 6) and report.spend.calls == 3
    assert [r.get("max_tokens") for r in under_test] == [512] * 3  # DEFAULT_MAX_TOKENS, as estimated
    assert [r.get("max_tokens") for r in judges] == [1024] * 6  # JUDGE_MAX_TOKENS, as estimated


async def test_the_estimate_counts_the_judges_inputs(repo: GitRepo, stub: StubLLM) -> None:
    build(repo, graders=JUDGES, max_tokens=None, budget={"max_cost_usd": 0.01})
    report = await run_all(repo, stub)
    # Tokens are characters / 4 + 1 per message, at $0.001 in / $0.002 out per 1K:
    # under test: system 7 + user 4 = 11 in, 512 out (the default max_tokens) → 1.035
    # rubric: its instructions 66 + criteria, request, empty answer and reference answer 20, + the answer's
    #   512 = 598 in, 1024 out → 2.646
    # hallucination: its instructions 89 + context and empty answer 10, + 512 = 611 in, 1024 out → 2.659
    # (in thousandths of a dollar), each billed at worst twice (RetryPolicy.max_billed_attempts).
    assert report.estimate.calls == 3
    assert report.estimate.usd == pytest.approx(2 * (1.035 + 2.646 + 2.659) / 1000)
    assert report.budget_refused and stub.requests == []  # $0.01268 is above $0.01


async def test_a_timed_out_call_is_retried_only_as_often_as_the_estimate_assumes(stub: StubLLM) -> None:
    # A timed-out attempt may have been generated and billed: five of them would be 5× what was estimated.
    stub.handler = lambda body: Reply(delay_s=1.0)
    retry = RetryPolicy(base_delay_s=0.001, timeout_s=0.2)
    client = ModelClient(api_base=stub.base_url, retry=retry, prices={"openai/stub": (0.001, 0.002)})
    with pytest.raises(ModelCallError):
        await client.complete("openai/stub", [{"role": "user", "content": "hello"}], max_tokens=10)
    assert len(stub.requests) == retry.max_billed_attempts == 2


async def test_the_run_stops_when_its_real_spend_reaches_the_budget(repo: GitRepo, stub: StubLLM) -> None:
    # The provider bills far more than max_tokens allows (the estimate, $0.0043, passes): each call
    # costs 10 × $0.001 + 100,000 × $0.002 per 1K = $0.20001, so the fifth reaches the $1 budget.
    build(repo, n_cases=20, budget={"max_cost_usd": 1.0})
    stub.handler = lambda body: Reply(prompt_tokens=10, completion_tokens=100_000)
    report = await run_all(repo, stub, concurrency=1)
    assert len(stub.requests) == 5
    assert report.stopped is not None and report.suites == []
    assert (report.stopped.calls_done, report.stopped.calls_planned) == (5, 20)
    assert report.stopped.spent_usd == pytest.approx(5 * 0.20001)
    assert report.verdict == "fail" and report.exit_code == 1
    text = render_markdown(report)
    assert "Stopped at $1.00 of the $1.00 budget after 5 of 20 calls" in text
