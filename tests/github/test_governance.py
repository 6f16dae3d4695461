"""The governance gates on GitHub: a policy violation fails evalbot/evals, annotated on its line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from arq import ArqRedis

from bot.settings import Settings
from tests.conftest import GitRepo, suite_config
from tests.github.conftest import webhook_client
from tests.github.fake_github import FakeGitHub
from tests.github.test_annotations import open_pr, where
from tests.github.test_e2e import PRICES
from tests.pipeline.test_policies import BASE_SYSTEM, HEAD_SYSTEM, prompt_yaml
from tests.stub_llm import Reply, StubLLM


@pytest.fixture
async def webhook(redis: ArqRedis, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with webhook_client(settings, redis) as http:
        yield http


async def test_a_forbidden_clause_fails_the_check_with_an_annotation_on_its_line(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, webhook: httpx.AsyncClient, run_worker: Any
) -> None:
    graders = [{"type": "equals", "field": "expected"}]
    config = suite_config("agent", "prompts/agent.yaml", "evals/agent.jsonl", graders, prices=PRICES)
    policies = [{"name": "no-open-ended-discounts", "must_not_match": "(?i)any discount"}]
    config["suites"][0]["lineage"] = {"required": True}
    repo.write(".evalbot.yml", {"policies": policies, "thresholds": {"min_cases": 1}, **config})
    repo.write("evals/agent.jsonl", [{"id": "c1", "question": "q", "expected": "ok", "source": "ticket-9"}])
    repo.write("prompts/agent.yaml", prompt_yaml("1.0.0", BASE_SYSTEM))
    base = repo.commit("base")
    repo.git("checkout", "-q", "-b", "feature")
    repo.write("prompts/agent.yaml", prompt_yaml("1.1.0", HEAD_SYSTEM))
    repo.write(
        "evals/agent.jsonl",
        [
            {"id": "c1", "question": "q", "expected": "ok", "source": "ticket-9"},
            {"id": "c2", "question": "r", "expected": "ok"},
        ],
    )
    head = repo.commit("head")
    stub.handler = lambda body: Reply("ok")

    evals, notes = await open_pr(repo, fake_github, webhook, run_worker, base, head)

    assert (evals["status"], evals["conclusion"]) == ("completed", "failure")
    assert where(notes) == [("evals/agent.jsonl", 2, "failure"), ("prompts/agent.yaml", 6, "failure")]
    assert notes[1]["title"] == "Policy no-open-ended-discounts: introduced by this change"
    summary = evals["output"]["summary"]
    assert "### Policy review: ❌ fail" in summary and "### Data lineage of `evals/agent.jsonl`" in summary
    assert evals["output"]["title"].endswith("; policy review: 1 violation(s) introduced; 1 row(s) without a source")
