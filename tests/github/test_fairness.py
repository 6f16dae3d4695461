"""The fairness gate on GitHub: a name-sensitive head fails evalbot/evals, and only an approver's
`/approve <reason>` lets it through, as an override in the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from arq import ArqRedis

from bot.github.constants import EVALS_CHECK
from bot.settings import Settings
from bot.store import Store
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.github.conftest import webhook_client
from tests.github.fake_github import FakeGitHub
from tests.github.test_approval import PullRequest
from tests.stub_llm import Reply, StubLLM, user_text

TEMPLATE = "Guest {guest_name} asks: {question}"


def name_sensitive(body: dict[str, Any]) -> Reply:
    """Every case right, but the head's prompt ("v2") gets cases 0-2 wrong for Mohammed."""
    text = user_text(body)
    case = int(text.rsplit("q", 1)[-1])
    wrong = "v2" in body["messages"][0]["content"] and "Mohammed" in text and case < 3
    return Reply("nope" if wrong else f"a{case}")


def build(repo: GitRepo) -> tuple[str, str]:
    thresholds = {"min_cases": 10, "latency_p95_increase_pct": 1000}
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}], thresholds=thresholds)
    config["suites"][0]["fairness"] = {"counterfactual": {"field": "guest_name", "values": ["Emma", "Mohammed"]}}
    repo.write(".evalbot.yml", {"approvers": ["lead"], **config})
    rows = [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}", "guest_name": "Emma"} for i in range(10)]
    repo.write("evals/qa.jsonl", rows)
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1", user_prompt_template=TEMPLATE))
    base = repo.commit("base")
    repo.git("checkout", "-q", "-b", "feature")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2", user_prompt_template=TEMPLATE))
    return base, repo.commit("head")


@pytest.mark.slow
async def test_a_fairness_failure_fails_the_check_and_needs_an_override(
    repo: GitRepo,
    fake_github: FakeGitHub,
    stub: StubLLM,
    redis: ArqRedis,
    settings: Settings,
    run_worker: Any,
    job_store: Store,
) -> None:
    base, head = build(repo)
    stub.handler = name_sensitive
    async with webhook_client(settings, redis) as http:
        pull = PullRequest(http, fake_github, run_worker, base, head)
        await pull.opened()

        evals = pull.check(EVALS_CHECK)
        # Accuracy is unchanged (the rows name Emma): only the probes fail, 3 of 10 flipping.
        assert evals["conclusion"] == "failure"
        assert evals["output"]["title"].endswith("; fairness failed: qa")
        summary = evals["output"]["summary"]
        assert "### Suite `qa`: ✅ pass" in summary and "### Fairness of suite `qa`: ❌ fail" in summary
        assert "- head: the graded outcome differs between values on 3 of 10 cases (30.0%)" in summary

        await pull.approve_with_reason(job_store, "lead", "the name list is a known provider quirk; tracked in #31")
