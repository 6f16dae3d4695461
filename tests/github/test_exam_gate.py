"""The base's exam on GitHub: a rewritten exam and an inconclusive breach, through the fake API and the worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml
from arq import ArqRedis

from bot.github.constants import APPROVAL_CHECK, EVALS_CHECK
from bot.settings import Settings
from bot.store import Store
from tests.conftest import GitRepo
from tests.github.conftest import answers, build_pr_repo, webhook_client
from tests.github.fake_github import FakeGitHub
from tests.github.test_approval import REPO, PullRequest
from tests.stub_llm import StubLLM


@pytest.fixture
async def http(settings: Settings, redis: ArqRedis) -> AsyncIterator[httpx.AsyncClient]:
    async with webhook_client(settings, redis) as client:
        yield client


def rewrite_config(repo: GitRepo, change: Any) -> None:
    config = yaml.safe_load((repo.root / ".evalbot.yml").read_text())
    change(config)
    repo.write(".evalbot.yml", config)


@pytest.mark.slow
async def test_an_inconclusive_breach_needs_a_reason_to_approve(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, job_store: Store, http: httpx.AsyncClient, run_worker: Any
) -> None:
    base, head = build_pr_repo(repo, ["lead"])
    # 5/10 → 4/10: -10 pp, past the 2 pp threshold, but one broken case is not significant (one-sided p = 0.5).
    stub.handler = answers(head_right=4, base_right=5)
    pull = PullRequest(http, fake_github, run_worker, base, head)
    await pull.opened()

    assert pull.check(EVALS_CHECK)["conclusion"] == "success"
    waiting = pull.check(APPROVAL_CHECK)
    assert waiting["conclusion"] == "action_required"
    assert waiting["output"]["summary"].startswith(
        "## evalbot/approval: ⏳ waiting for a lead\n\n"
        "⚠️ **Inconclusive**: past a threshold by the point estimate, but not significant on this many cases. "
        "Approving needs a reason (`/approve <reason>`) and is recorded as an override.\n\n"
        "- Suite `qa`: Accuracy -10.0 pp (threshold +2.0 pp, one-sided p=0.5)\n"
    )

    await pull.comment("lead", "/approve")
    assert pull.check(APPROVAL_CHECK)["conclusion"] == "action_required"
    assert pull.replies()[-1] == (
        "@lead `/approve`: `evalbot/evals` shows an inconclusive threshold breach on this commit: an approval "
        "needs a reason (`/approve &lt;reason&gt;`) and is recorded as an override\n"
    )

    await pull.comment("lead", "/approve one case of ten; the new wording is what support asked for")
    approval = pull.check(APPROVAL_CHECK)
    assert approval["conclusion"] == "success" and approval["output"]["title"] == "Approved by lead (override)"
    summary = approval["output"]["summary"]
    assert "The approval of the inconclusive breaches above is recorded as an override." in summary
    (override,) = [e for e in job_store.audit_entries(REPO, 2) if e.kind == "override"]
    assert override.get("reason") == "one case of ten; the new wording is what support asked for"


async def test_a_head_that_drops_the_graders_fails_evals_and_says_so(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, http: httpx.AsyncClient, run_worker: Any
) -> None:
    base, _ = build_pr_repo(repo, ["lead"])
    rewrite_config(repo, lambda config: config["suites"][0].update(graders=[]))
    head = repo.commit("no graders, no failures")
    stub.handler = answers(head_right=1, base_right=9)
    pull = PullRequest(http, fake_github, run_worker, base, head)
    await pull.opened()

    evals = pull.check(EVALS_CHECK)
    assert evals["conclusion"] == "failure"
    assert (
        evals["output"]["title"] == "Evaluation definition changed; qa: accuracy 90.0% → 10.0% (-80.0 pp), 8 regressed"
    )
    assert evals["output"]["summary"].startswith("## evalbot: ❌ fail\n\n### ⚠️ Evaluation definition changed\n\n")
    assert "| Accuracy | 90.0% [59.6, 98.2] | 10.0% [1.8, 40.4] | -80.0 pp" in evals["output"]["summary"]
    approval = pull.check(APPROVAL_CHECK)
    assert approval["conclusion"] == "action_required"
    assert (
        "⚠️ **Evaluation definition changed**: the gate used the base branch's definition; the head's is shown "
        "beside it in `evalbot/evals`.\n\n- Suite `qa`: grader removed: equals\n"
    ) in approval["output"]["summary"]
