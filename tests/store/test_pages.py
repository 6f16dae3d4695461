"""What the run page reads, on the real PostgreSQL server and on SQLite: migration 0002, a run started
before its results, every answer with its grades, base and head paired."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from bot.pipeline.run import RunOptions, evaluate
from bot.pipeline.source import GitSource
from bot.store import Store, migrate, open_store, revision
from bot.store.pages import installation_of, run_page, run_ref
from bot.web.render import run_page_html
from tests.conftest import GitRepo, prompt_file, suite_config
from tests.store.test_store import REPO, _fixed_run, _priced_repo, database_url_for
from tests.stub_llm import Reply, StubLLM, user_text


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[Store]:
    opened = open_store(database_url_for(database_url, tmp_path))
    migrate(opened)
    yield opened
    opened.close()


def test_migration_0002_adds_the_page_columns_and_keeps_earlier_runs(database_url: str, tmp_path: Path) -> None:
    store = open_store(database_url_for(database_url, tmp_path))
    try:
        migrate(store, "0001")
        with store.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO runs (repository, pr_number, trigger, base_sha, head_sha, started_at, finished_at, "
                    "verdict, calls, retries, failed_calls, under_test_usd, judge_usd, passed_cases) VALUES "
                    "('acme/a', 3, 'pull_request', 'b', 'h', :at, :at, 'pass', 0, 0, 0, 0, 0, 0)"
                ),
                {"at": "2026-12-01T00:00:00+00:00"},
            )
        migrate(store)
        columns = {c["name"] for c in inspect(store.engine).get_columns("case_outcomes")}
        assert {"output", "grades"} <= columns
        page = run_page(store, 1)
        assert page is not None and (page.repository, page.pr, page.verdict, page.markdown) == (
            "acme/a",
            3,
            "pass",
            None,
        )
    finally:
        store.close()


async def test_a_started_run_is_filled_in_with_every_answer_and_grade(
    repo: GitRepo, stub: StubLLM, store: Store
) -> None:
    run_id = store.start_run(repository=REPO, trigger="pull_request", head_sha="h" * 40, started_at=1_800_000_000, pr=2)
    started = run_page(store, run_id)
    assert started is not None and (started.verdict, started.suites, started.markdown) == ("running", [], None)
    assert store.last_run(REPO, "pull_request") is None  # a run without results is no one's last run

    report = await _fixed_run(repo, stub)
    blob = "https://github.com/acme/assistant/blob/" + report.head_ref
    again = store.record_run(
        report,
        repository=REPO,
        trigger="pull_request",
        started_at=1_800_000_000,
        pr=2,
        run_id=run_id,
        pr_url="https://github.com/acme/assistant/pull/2",
        blob_url=blob,
    )
    assert again == run_id
    store.end_run(run_id, "crashed")  # a recorded run keeps its verdict
    page = run_page(store, run_id)
    assert page is not None and page.verdict == report.verdict == "fail"
    assert page.pr_url == "https://github.com/acme/assistant/pull/2" and page.blob_url == blob
    assert page.markdown is not None and "| Accuracy | 50.0%" in page.markdown
    (suite,) = page.suites
    assert (suite.name, suite.base_model, suite.head_model) == ("qa", "openai/stub", "openai/stub")
    statuses = {c.case_id: c.status for c in suite.cases}
    assert statuses == {
        **{f"c{i}": "both_right" for i in range(5)},
        **{f"c{i}": "fixed" for i in (5, 6, 7)},
        "c8": "both_wrong",
        "c9": "error",
    }
    c5 = next(c for c in suite.cases if c.case_id == "c5")
    assert c5.base is not None and c5.head is not None
    assert (c5.base.output, c5.head.output) == ("nope", "a5")
    assert c5.base.grades == [
        {
            "grader": "equals",
            "kind": "accuracy",
            "passed": False,
            "score": None,
            "scores": {},
            "reason": "expected 'a5'",
            "error": None,
        }
    ]
    assert c5.head.cost_usd == pytest.approx(0.0002) and c5.head.latency_s is not None
    c9 = next(c for c in suite.cases if c.case_id == "c9")
    assert c9.head is not None and "HTTP 400" in (c9.head.error or "")


def test_a_run_ended_without_results_keeps_why(store: Store) -> None:
    run_id = store.start_run(repository=REPO, trigger="eval_command", head_sha="h", started_at=1_800_000_000, pr=4)
    store.end_run(run_id, "crashed", at=1_800_000_060)
    page = run_page(store, run_id)
    assert page is not None and page.verdict == "crashed"
    assert (page.finished_at - page.started_at).total_seconds() == 60


def test_the_installation_of_a_repository_is_the_last_one_a_job_ran_with(store: Store) -> None:
    assert installation_of(store, REPO) is None
    store.note_repository(REPO, 7)
    store.note_repository(REPO, 8)
    assert installation_of(store, REPO) == 8
    assert run_page(store, 12345) is None


def test_the_latest_run_of_a_pull_request_head_is_what_later_checks_link_to(store: Store) -> None:
    start = store.start_run
    first = start(repository=REPO, trigger="pull_request", head_sha="h", started_at=1_800_000_000, pr=4)
    store.end_run(first, "pass")
    rerun = start(repository=REPO, trigger="eval_command", head_sha="h", started_at=1_800_000_100, pr=4)
    start(repository=REPO, trigger="pull_request", head_sha="h", started_at=1_800_000_200, pr=5)
    start(repository=REPO, trigger="pull_request", head_sha="other", started_at=1_800_000_300, pr=4)
    assert store.latest_run_id(REPO, 4, "h") == rerun
    assert store.latest_run_id(REPO, 4, "nothing") is None


def test_migration_0003_gives_earlier_runs_a_page_id_and_no_repository_id(database_url: str, tmp_path: Path) -> None:
    store = open_store(database_url_for(database_url, tmp_path))
    try:
        migrate(store, "0002")
        with store.engine.begin() as connection:
            for _ in range(2):
                connection.execute(
                    text(
                        "INSERT INTO runs (repository, pr_number, trigger, base_sha, head_sha, started_at, "
                        "finished_at, verdict, calls, retries, failed_calls, under_test_usd, judge_usd, passed_cases) "
                        "VALUES ('acme/a', 3, 'pull_request', 'b', 'h', :at, :at, 'pass', 0, 0, 0, 0, 0, 0)"
                    ),
                    {"at": "2026-12-01T00:00:00+00:00"},
                )
        migrate(store, "0003")
        assert revision(store) == "0003"
        first, second = store.public_id(1), store.public_id(2)
        assert first and second and first != second and len(first) == 24
        ref = run_ref(store, first)
        assert ref is not None and (ref.id, ref.repository, ref.repository_id) == (1, "acme/a", None)
        assert "web_sessions" in inspect(store.engine).get_table_names()
    finally:
        store.close()


async def test_secrets_are_redacted_before_anything_is_stored(repo: GitRepo, stub: StubLLM, tmp_path: Path) -> None:
    provider_key = "sk-" + "A1b2" * 8
    github_token = "ghp_" + "Zz9" * 12
    store = open_store(f"sqlite:///{tmp_path / 'redact.db'}")
    migrate(store)
    try:
        _priced_repo(repo)
        stub.handler = lambda body: Reply(text=f"use {provider_key} or {github_token}")
        report = await evaluate(GitSource(repo.root), "base", "head", RunOptions(api_base=stub.base_url))
        store.record_run(report, repository=REPO, trigger="cli", started_at=1_800_000_000)
        store.append_audit(REPO, "refused", "mallory", pr=2, reason=f"pasted {github_token}")
        with store.engine.connect() as connection:
            stored = " ".join(
                str(row)
                for table in ("case_outcomes", "runs", "audit_events")
                for row in connection.execute(text(f"SELECT * FROM {table}")).all()
            )
        assert provider_key not in stored and github_token not in stored
        assert stored.count("[redacted]") >= 3
    finally:
        store.close()


async def test_each_cases_origin_is_stored_with_the_run_and_shown_on_its_page(
    repo: GitRepo, stub: StubLLM, store: Store, database_url: str, tmp_path: Path
) -> None:
    config = suite_config("qa", "prompts/qa.yaml", "evals/qa.jsonl", [{"type": "equals"}])
    config["suites"][0]["lineage"] = {"source_field": "source"}
    repo.write(".evalbot.yml", config)
    rows = [{"id": "c0", "question": "q0", "expected": "a0", "source": "ticket-1"}, {"id": "c1", "question": "q1"}]
    repo.write("evals/qa.jsonl", [{**rows[0]}, {**rows[1], "expected": "a1"}])
    repo.write("prompts/qa.yaml", prompt_file("1.0.0"))
    repo.commit("base", tag="base")
    added = {"id": "c2", "question": "q2", "expected": "a2", "source": "feedback:7"}
    repo.write("evals/qa.jsonl", [rows[0], {**rows[1], "expected": "b1"}, added])
    repo.commit("head", tag="head")
    stub.handler = lambda body: Reply(text="a" + user_text(body)[-1])
    report = await evaluate(GitSource(repo.root), "base", "head", RunOptions(api_base=stub.base_url))
    run_id = store.record_run(report, repository=REPO, trigger="pull_request", started_at=1_800_000_000, pr=5)

    page = run_page(store, run_id)
    assert page is not None
    assert {c.case_id: c.origin for c in page.suites[0].cases} == {
        "c0": {"source": "ticket-1", "change": None},
        "c1": {"source": None, "change": "changed"},
        "c2": {"source": "feedback:7", "change": "added"},
    }
    context = {"request": {"url": {"path": "/runs/x"}}, "user": None, "csrf": ""}
    html = run_page_html(database_url_for(database_url, tmp_path), run_id, "", "", "", 1, context)
    assert html is not None
    assert "origin: <code>feedback:7</code> · added by this pull request (#5)" in html
    assert "origin: no source · changed by this pull request (#5)" in html
    assert "origin: <code>ticket-1</code></span>" in html
