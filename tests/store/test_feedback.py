"""Feedback records and tokens in the store, and `evalbot feedback token` / `evalbot feedback export`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from bot.cli import cli
from bot.store import Store, database_url, migrate, open_store
from bot.store.feedback import (
    add_feedback,
    is_feedback_pull,
    mark_proposed,
    pending_feedback,
    proposed_case_ids,
    repository_of_token,
    token_hash,
)
from bot.store.tables import FeedbackToken

REPO = "acme/shop"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = open_store(database_url_for(database_url))
    migrate(opened)
    yield opened
    opened.close()


def database_url_for(url: str) -> str:
    return database_url(url, Path("unused"))


def test_pending_feedback_is_the_confirmed_feedback_no_pull_request_proposed(store: Store) -> None:
    right = add_feedback(store, REPO, "qa", {"question": "q1"}, "a1", True, None)
    wrong = add_feedback(store, REPO, "qa", {"question": "q2"}, "nope", False, None)
    fixed = add_feedback(store, REPO, "qa", {"question": "q3"}, "nope", False, "a3")
    add_feedback(store, "acme/other", "qa", {"question": "q4"}, "a4", True, None)
    assert [(f.id, f.answer) for f in pending_feedback(store, REPO)] == [(right, "a1"), (fixed, "a3")]
    assert [f.id for f in pending_feedback(store, REPO, confirmed_only=False)] == [right, wrong, fixed]

    mark_proposed(store, [right, fixed], 7, "c" * 40)
    assert pending_feedback(store, REPO) == []
    assert proposed_case_ids(store, REPO, "qa") == {f"feedback-{right}", f"feedback-{fixed}"}
    assert is_feedback_pull(store, REPO, 7, "c" * 40)
    assert not is_feedback_pull(store, REPO, 7, "d" * 40)  # pushed to since: not the app's commit
    assert not is_feedback_pull(store, REPO, 8, "c" * 40)
    mark_proposed(store, [right], 9, "e" * 40)  # never proposed twice
    assert not is_feedback_pull(store, REPO, 9, "e" * 40)


def test_evalbot_feedback_token_prints_a_token_once_and_keeps_its_hash(
    store: Store, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    first = CliRunner().invoke(cli, ["feedback", "token", REPO])
    assert first.exit_code == 0, first.output
    token = first.stdout.strip()
    assert token.startswith("evfb_") and repository_of_token(store, token) == REPO
    with store._session() as session:
        assert session.scalars(select(FeedbackToken.token_hash)).all() == [token_hash(token)]
    rotated = CliRunner().invoke(cli, ["feedback", "token", REPO]).stdout.strip()
    assert repository_of_token(store, rotated) == REPO and repository_of_token(store, token) is None
    assert CliRunner().invoke(cli, ["feedback", "token", "not-a-repo"]).exit_code == 2


def test_evalbot_feedback_export_writes_the_pending_rows_with_their_lineage(
    store: Store, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    first = add_feedback(store, REPO, "qa", {"question": "q1", "tier": "gold"}, "a1", True, None)
    second = add_feedback(store, REPO, "qa", {"question": "q2"}, "nope", False, "a2")
    add_feedback(store, REPO, "other", {"question": "q3"}, "a3", True, None)
    lines = CliRunner().invoke(cli, ["feedback", "export", "--repo", REPO, "--suite", "qa", "--config", "none.yml"])
    assert lines.exit_code == 0, lines.output
    assert [json.loads(line) for line in lines.stdout.splitlines()] == [
        {"id": f"feedback-{first}", "question": "q1", "tier": "gold", "expected": "a1", "source": f"feedback:{first}"}
        | {"feedback_id": first},
        {"id": f"feedback-{second}", "question": "q2", "expected": "a2", "source": f"feedback:{second}"}
        | {"feedback_id": second},
    ]

    # The suite's own field names, from the .evalbot.yml given.
    config = tmp_path / ".evalbot.yml"
    suite = {"name": "qa", "dataset": "evals/qa.csv", "model": "openai/x", "expected_field": "ideal"}
    config.write_text(json.dumps({"suites": [{**suite, "id_field": "key", "lineage": {"source_field": "origin"}}]}))
    args = ["feedback", "export", "--repo", REPO, "--suite", "qa", "--format", "csv", "--config", str(config)]
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    assert list(csv.reader(io.StringIO(table.stdout))) == [
        ["key", "question", "tier", "ideal", "origin", "feedback_id"],
        [f"feedback-{first}", "q1", "gold", "a1", f"feedback:{first}", str(first)],
        [f"feedback-{second}", "q2", "", "a2", f"feedback:{second}", str(second)],
    ]
    unknown = CliRunner().invoke(cli, [*args[:5], "nope", "--config", str(config)])
    assert unknown.exit_code == 2 and "has no suite named 'nope'" in unknown.output
