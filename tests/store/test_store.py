"""The durable store on the real PostgreSQL server and on SQLite: migrations, runs, audit trail, history."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select
from sqlalchemy.exc import SQLAlchemyError

from bot.cli import cli
from bot.engine.models import RetryPolicy
from bot.pipeline.render import render_json, render_markdown
from bot.pipeline.run import Report, RunOptions, evaluate
from bot.pipeline.source import GitSource
from bot.store import Store, database_url, head_revision, migrate, open_store, revision
from bot.store.tables import CaseOutcome, Run, SuiteResult
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.stub_llm import Reply, StubLLM, user_text

REPO = "acme/assistant"


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(database_url_for(database_url, tmp_path))
    migrate(opened)
    yield opened
    opened.close()


def database_url_for(url: str, tmp_path: Path) -> str:
    return database_url(url, tmp_path / "cache")


def test_migrations_run_up_from_an_empty_database(database_url: str, tmp_path: Path) -> None:
    store = open_store(database_url_for(database_url, tmp_path))
    try:
        assert revision(store) is None
        migrate(store)
        assert revision(store) == head_revision() == "0004"
        tables = set(inspect(store.engine).get_table_names())
        assert {
            "runs",
            "suite_results",
            "case_outcomes",
            "audit_events",
            "repositories",
            "feedback",
            "feedback_tokens",
        } <= tables
        migrate(store)  # nothing pending: a second start changes nothing
        assert revision(store) == head_revision()
    finally:
        store.close()


def test_plain_postgresql_url_gets_the_psycopg_driver_and_unset_means_sqlite(tmp_path: Path) -> None:
    assert (
        database_url("postgresql://evalbot@db:5432/evalbot", tmp_path) == "postgresql+psycopg://evalbot@db:5432/evalbot"
    )
    assert database_url("postgres://u:p@db/e", tmp_path) == "postgresql+psycopg://u:p@db/e"
    assert database_url(None, tmp_path / "cache") == f"sqlite:///{tmp_path / 'cache' / 'evalbot.db'}"
    assert (tmp_path / "cache").is_dir()


def test_audit_trail_is_append_only_and_decides_approval(store: Store) -> None:
    store.append_audit(REPO, "verdict", "evalbot", pr=2, sha="a" * 40, verdict="fail")
    store.append_audit(REPO, "override", "lead", pr=2, sha="a" * 40, reason="labels were wrong")
    store.append_audit(REPO, "approval", "lead", pr=3, sha="c" * 40, reason="")
    approval = store.approval(REPO, 2, "a" * 40)
    assert approval is not None and (approval.approver, approval.reason, approval.override) == (
        "lead",
        "labels were wrong",
        True,
    )
    assert store.approval(REPO, 2, "b" * 40) is None  # a push: another head SHA
    store.append_audit(REPO, "approval", "lead", pr=4, sha="d" * 40, reason="", base_ref="main")
    assert store.approval(REPO, 4, "d" * 40, "main") is not None
    assert store.approval(REPO, 4, "d" * 40, "release") is None  # a retarget: another base
    store.append_audit(REPO, "cancel", "lead", pr=2, sha="a" * 40, reason="")
    assert store.approval(REPO, 2, "a" * 40) is None
    assert [e.kind for e in store.audit_entries(REPO, 2)] == ["verdict", "override", "cancel"]
    assert [e.kind for e in store.audit_entries(REPO, 2, last=1)] == ["cancel"]
    assert len(store.audit_entries(REPO)) == 5

    for statement in ("UPDATE audit_events SET actor = 'mallory'", "DELETE FROM audit_events"):
        with pytest.raises(SQLAlchemyError, match="append-only"), store.engine.begin() as connection:
            connection.exec_driver_sql(statement)
    assert [e.actor for e in store.audit_entries(REPO, 2)] == ["evalbot", "lead", "lead"]


def test_evalbot_audit_exports_jsonl_and_csv(store: Store, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    store.append_audit(REPO, "approval", "lead", pr=2, sha="a" * 40, at=1_800_000_000.5, reason='ok, "ship it"')
    store.append_audit(REPO, "verdict", "evalbot", pr=5, sha="b" * 40, at=1_800_000_001, verdict="pass", metrics={})

    lines = CliRunner().invoke(cli, ["audit", "--repo", REPO, "--pr", "2"])
    assert lines.exit_code == 0, lines.output
    assert [json.loads(line) for line in lines.output.splitlines()] == [
        {
            "id": 1,
            "repository": REPO,
            "pr": 2,
            "sha": "a" * 40,
            "kind": "approval",
            "actor": "lead",
            "at": "2027-01-15T08:00:00.500000+00:00",
            "reason": 'ok, "ship it"',
        }
    ]
    table = CliRunner().invoke(cli, ["audit", "--repo", REPO, "--format", "csv"])
    assert table.exit_code == 0, table.output
    assert list(csv.reader(io.StringIO(table.output))) == [
        ["id", "at", "repository", "pr", "sha", "kind", "actor", "reason", "verdict", "details"],
        ["1", "2027-01-15T08:00:00.500000+00:00", REPO, "2", "a" * 40, "approval", "lead", 'ok, "ship it"', "", ""],
        ["2", "2027-01-15T08:00:01+00:00", REPO, "5", "b" * 40, "verdict", "evalbot", "", "pass", '{"metrics": {}}'],
    ]


def test_evalbot_audit_on_a_database_never_migrated_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    result = CliRunner().invoke(cli, ["audit", "--repo", REPO])
    assert result.exit_code == 2
    assert "the database has no evalbot tables yet: run `evalbot migrate`" in result.output


def _priced_repo(repo: GitRepo) -> None:
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}])
    config["prices"] = {"openai/stub": {"input_per_1k": 0.001, "output_per_1k": 0.002}}
    repo.write(".evalbot.yml", config)
    repo.write("evals/qa.jsonl", [{"id": f"c{i}", "question": f"q{i}", "expected": f"a{i}"} for i in range(10)])
    repo.write("prompts/qa.yaml", prompt_file("1.0.0", system_prompt="v1"))
    repo.commit("base", tag="base")
    repo.write("prompts/qa.yaml", prompt_file("1.1.0", system_prompt="v2"))
    repo.commit("head", tag="head")


def _answers(body: dict[str, Any]) -> Reply:
    """Head (v2) right on q0-q7 and refused (HTTP 400, no retry) on q9; base (v1) right on q0-q4."""
    case = int(user_text(body).rsplit("q", 1)[-1])
    head = "v2" in body["messages"][0]["content"]
    if head and case == 9:
        return Reply(status=400)
    right = case < (8 if head else 5)
    return Reply(text=f"a{case}" if right else "nope", prompt_tokens=100, completion_tokens=50)


async def _fixed_run(repo: GitRepo, stub: StubLLM) -> Report:
    _priced_repo(repo)
    stub.handler = _answers
    stub.fail_next(2, 500)  # two calls retried once each: the retries cost nothing but count
    retry = RetryPolicy(max_attempts=3, base_delay_s=0.001)
    options = RunOptions(api_base=stub.base_url, retry=retry, concurrency=1)
    return await evaluate(GitSource(repo.root), "base", "head", options)


async def test_cost_per_successful_inference_is_exact_for_a_fixed_run(repo: GitRepo, stub: StubLLM) -> None:
    report = await _fixed_run(repo, stub)
    spend = report.spend
    assert spend is not None
    # 19 answered calls at 100 * $0.001/1K + 50 * $0.002/1K = $0.0002 each; the refused call costs nothing.
    assert (spend.calls, spend.errors) == (20, 1)
    # At least the two scripted 500s were retried (a slow machine may see a dropped keep-alive too).
    assert spend.retries >= 2 and spend.http_requests == spend.calls + spend.retries
    assert spend.under_test_usd == pytest.approx(19 * 0.0002, rel=1e-12)
    assert spend.passed_answers == 8 + 5
    assert spend.per_success_usd == pytest.approx(19 * 0.0002 / 13, rel=1e-12)
    assert (
        "Cost per successful inference: $0.0003 (spend under test, failed and retried calls included, over the 13 "
        "passing answers made by this run)." in render_markdown(report)
    )
    assert json.loads(render_json(report))["spend"]["per_success_usd"] == pytest.approx(0.0038 / 13, rel=1e-12)


async def test_a_run_is_stored_with_every_variant_metric_and_case(repo: GitRepo, stub: StubLLM, store: Store) -> None:
    report = await _fixed_run(repo, stub)
    run_id = store.record_run(
        report, repository=REPO, trigger="pull_request", started_at=1_800_000_000, pr=2, base_branch="main"
    )
    with store.engine.connect() as connection:
        run = connection.execute(select(Run).where(Run.id == run_id)).one()
        results = connection.execute(select(SuiteResult).order_by(SuiteResult.variant)).all()
        outcomes = connection.execute(select(CaseOutcome)).all()
    assert (run.trigger, run.pr_number, run.verdict, run.calls, run.retries, run.failed_calls) == (
        "pull_request",
        2,
        "fail",
        20,
        report.spend.retries,
        1,
    )
    assert (run.passed_cases, run.cost_per_success_usd) == (13, pytest.approx(0.0038 / 13, rel=1e-12))
    assert [(r.variant, r.sha, r.branch, r.prompt_version, r.accuracy) for r in results] == [
        ("base", report.base_ref, "main", "1.0.0", 0.5),
        ("head", report.head_ref, None, "1.1.0", pytest.approx(8 / 9)),
    ]
    (suite,) = report.suites
    assert {r.definition_hash for r in results} == {suite.definition_hash} and len(suite.definition_hash) == 64
    head = next(r for r in results if r.variant == "head")
    accuracy_row = next(row for row in head.details["comparison"] if row["key"] == "accuracy")
    assert accuracy_row["delta"] == pytest.approx(suite.rows[0].delta)
    assert accuracy_row["p_value"] == pytest.approx(suite.rows[0].p_value)
    assert len(outcomes) == 20
    refused = next(o for o in outcomes if o.variant == "head" and o.case_id == "c9")
    assert (refused.passed, refused.cost_usd) == (None, None) and "HTTP 400" in refused.error

    # A stored variant is the variant again for the paired statistics.
    again = store.stored_variant(run_id, "qa", "head")
    assert again is not None and again.metrics == suite.head.metrics


def test_cli_eval_records_its_run_in_the_sqlite_file_beside_the_cache(
    repo: GitRepo, stub: StubLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _priced_repo(repo)
    stub.handler = _answers
    monkeypatch.delenv("DATABASE_URL", raising=False)
    args = ["eval", "--repo", str(repo.root), "--base", "base", "--head", "head", "--api-base", stub.base_url]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    store = open_store(f"sqlite:///{tmp_path / 'cache' / 'evalbot.db'}")
    try:
        with store.engine.connect() as connection:
            (run,) = connection.execute(select(Run)).all()
        assert (run.trigger, run.repository, run.base_branch, run.head_branch) == (
            "cli",
            str(repo.root.resolve()),
            "base",
            "head",
        )
        assert run.head_sha == repo.git("rev-parse", "head").strip()
    finally:
        store.close()


async def test_the_worker_runs_pending_migrations_at_start(database_url: str, tmp_path: Path) -> None:
    from bot.github.worker.registry import WorkerSettings
    from bot.settings import Settings

    ctx: dict[str, Any] = {"settings": Settings(DATABASE_URL=database_url, EVALBOT_CACHE_DIR=tmp_path / "cache")}
    await WorkerSettings.on_startup(ctx)
    try:
        assert revision(ctx["store"]) == head_revision()
        assert [job.name for job in WorkerSettings.cron_jobs] == [
            "cron:check_schedules",
            "cron:check_feedback_merges",
            "cron:watchdog",
            "cron:redeliver_failed",
        ]
    finally:
        await WorkerSettings.on_shutdown(ctx)
    assert "store" not in ctx
