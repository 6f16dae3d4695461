"""What the worker keeps of a pull request: its runs, approvals and overrides, read back after Redis is
flushed; and the trend charts of the sticky comment."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

import pytest
from arq import ArqRedis
from click.testing import CliRunner
from sqlalchemy import select

from bot.cli import cli
from bot.github.constants import APPROVAL_CHECK, COMMENT_MARKER, EVALS_CHECK
from bot.settings import Settings
from bot.store import Store
from bot.store.tables import Run
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.github.conftest import answers, webhook_client
from tests.github.fake_github import FakeGitHub
from tests.github.test_approval import REPO, PullRequest
from tests.github.test_schedule import DAY_S, SEEN, Provider
from tests.stub_llm import StubLLM


async def _audit(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.setenv("DATABASE_URL", str(settings.DATABASE_URL))
    # In a thread: the command runs as from a shell, outside the test's event loop.
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["audit", "--repo", REPO, *args])
    assert result.exit_code == 0, result.output
    return str(result.output)


@pytest.mark.slow
async def test_a_pull_requests_runs_approval_and_override_outlive_a_redis_flush(
    pr: Any,
    repo: GitRepo,
    stub: StubLLM,
    redis: ArqRedis,
    settings: Settings,
    job_store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pull = await pr(["lead"], head_right=9, base_right=9)
    await pull.opened()
    await pull.comment("lead", "/approve numbers look right")
    approved = pull.head

    stub.handler = answers(head_right=1, base_right=9)  # the next push breaks 8 cases: p = 0.008
    await pull.push(repo, "1.2.0")
    assert pull.check(EVALS_CHECK)["conclusion"] == "failure"
    await pull.comment("lead", "/approve known regression, fixed in #14")
    assert pull.check(APPROVAL_CHECK)["output"]["title"] == "Approved by lead (override)"

    # Redis lost (its database emptied; not FLUSHALL: the server may hold other databases).
    await redis.flushdb()

    lines = [json.loads(line) for line in (await _audit(settings, monkeypatch, "--pr", "2")).splitlines()]
    assert [(e["kind"], e["actor"], e["sha"], e.get("reason"), e.get("verdict")) for e in lines] == [
        ("verdict", "evalbot", approved, None, "pass"),
        ("approval", "lead", approved, "numbers look right", None),
        ("verdict", "evalbot", pull.head, None, "fail"),
        ("override", "lead", pull.head, "known regression, fixed in #14", None),
    ]
    rows = list(csv.DictReader(io.StringIO(await _audit(settings, monkeypatch, "--format", "csv"))))
    assert [(r["pr"], r["kind"], r["actor"], r["reason"], r["verdict"]) for r in rows] == [
        ("2", "verdict", "evalbot", "", "pass"),
        ("2", "approval", "lead", "numbers look right", ""),
        ("2", "verdict", "evalbot", "", "fail"),
        ("2", "override", "lead", "known regression, fixed in #14", ""),
    ]
    assert json.loads(rows[2]["details"])["metrics"]["qa"]["accuracy"]["head"] == 0.1

    with job_store.engine.connect() as connection:
        runs = connection.execute(select(Run).order_by(Run.id)).all()
    assert [(r.trigger, r.pr_number, r.head_sha, r.verdict, r.base_branch, r.head_branch) for r in runs] == [
        ("pull_request", 2, approved, "pass", "main", "feature"),
        ("pull_request", 2, pull.head, "fail", "main", "feature"),
    ]

    # Redis lost everything, the record of when the head arrived too: a command cannot be shown to have
    # seen the head, so the first is refused with the reason (fail closed) and the head noted now.
    await pull.comment("Codertocat", "/eval")
    assert f"evalbot has no record of when `{pull.head[:7]}` arrived" in pull.replies()[-1]
    # A re-run asked for after that still finds the override, and the check shows the trail.
    await pull.comment("Codertocat", "/eval")
    approval = pull.check(APPROVAL_CHECK)
    assert (approval["conclusion"], approval["output"]["title"]) == ("success", "Approved by lead (override)")
    summary = approval["output"]["summary"]
    assert "<details><summary>Audit trail of this pull request (7)</summary>" in summary
    assert f"| override | lead | `{pull.head[:7]}` | known regression, fixed in #14 |" in summary
    with job_store.engine.connect() as connection:
        rerun = connection.execute(select(Run).order_by(Run.id.desc())).first()
    assert rerun is not None and (rerun.trigger, rerun.head_sha) == ("eval_command", pull.head)


def _main_with_history(repo: GitRepo) -> None:
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}])
    config["thresholds"] = {"latency_p95_increase_pct": 1000}
    config["prices"] = {"openai/stub": {"input_per_1k": 0.001, "output_per_1k": 0.002}}
    repo.write(".evalbot.yml", {"approvers": ["lead"], "schedule": {"cron": "0 3 * * *"}, **config})
    repo.write("evals/qa.jsonl", [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"} for i in range(10)])
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1"))


@pytest.mark.slow
async def test_the_sticky_comment_charts_the_suite_on_the_default_branch_with_the_head_last(
    repo: GitRepo,
    stub: StubLLM,
    redis: ArqRedis,
    settings: Settings,
    job_store: Store,
    fake_github: FakeGitHub,
    run_worker: Any,
) -> None:
    _main_with_history(repo)
    job_store.note_repository(REPO, 1, at=SEEN)
    provider = Provider(stub, right=5)
    earlier = []
    for day, right in ((1, 5), (2, 6), (3, 7)):  # three nights, a commit to main before each
        repo.write("README.md", f"day {day}")
        earlier.append(repo.commit(f"day {day}"))
        provider.right = right
        await redis.enqueue_job("check_schedules", now=SEEN + day * DAY_S - 8 * 3600)
        await run_worker()
    assert [e.get("verdict") for e in job_store.audit_entries(REPO) if e.kind == "verdict"] == [
        "baseline",
        "stable",
        "stable",
    ]

    repo.git("checkout", "-q", "-b", "feature")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2"))
    head = repo.commit("head")
    stub.handler = answers(head_right=9, base_right=7)
    async with webhook_client(settings, redis) as http:
        pull = PullRequest(http, fake_github, run_worker, earlier[-1], head)
        await pull.opened()

    (comment,) = [c["body"] for c in fake_github.comments.values() if COMMENT_MARKER in c["body"]]
    labels = ", ".join(f'"{sha[:7]}"' for sha in earlier) + f', "#2 {head[:7]}"'
    assert (
        "<details open><summary>Trend of suite `qa`: its last 3 evaluations on `main`, then this head</summary>\n\n"
        "```mermaid\n"
        "xychart-beta\n"
        '    title "qa: accuracy (%)"\n'
        f"    x-axis [{labels}]\n"
        '    y-axis "%" 0 --> 100\n'
        "    line [50.0, 60.0, 70.0, 90.0]\n"
        "```\n"
        "```mermaid\n"
        "xychart-beta\n"
        '    title "qa: cost per 1K queries (USD)"\n'
        f"    x-axis [{labels}]\n"
        '    y-axis "USD"\n'
        "    line [0.2, 0.2, 0.2, 0.2]\n"
        "```\n\n"
        "</details>\n"
    ) in comment
    # The check run carries the report alone: the charts live in the comment, where GitHub renders them.
    assert "xychart-beta" not in pull.check(EVALS_CHECK)["output"]["summary"]
