"""Redis and the audit trail stay bounded: refusals rate-limited, audit fields clipped, reads of the
newest events only, a TTL on every Redis key (the trail itself is in the database)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from arq import ArqRedis
from sqlalchemy import insert

from bot.github.constants import APPROVAL_CHECK, REFUSALS_PER_WINDOW
from bot.settings import Settings
from bot.store import Store
from bot.store.tables import AuditEvent
from tests.conftest import GitRepo
from tests.github.conftest import answers, build_pr_repo, webhook_client
from tests.github.fake_github import FakeGitHub
from tests.github.test_approval import PullRequest
from tests.stub_llm import StubLLM

REPO = "Codertocat/Hello-World"


@pytest.fixture
async def pull(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, redis: ArqRedis, settings: Settings, run_worker: Any
) -> AsyncIterator[PullRequest]:
    base, head = build_pr_repo(repo, ["lead"])
    stub.handler = answers(9)
    async with webhook_client(settings, redis) as http:
        yield PullRequest(http, fake_github, run_worker, base, head)


@pytest.mark.slow
async def test_refusals_are_answered_five_times_per_user_and_repository(
    pull: PullRequest, redis: ArqRedis, job_store: Store
) -> None:
    for i in range(REFUSALS_PER_WINDOW + 3):
        await pull.comment("mallory", f"/approve please {i}")
    await pull.comment("eve", "/approve me too")

    replies = pull.replies()
    assert len(replies) == REFUSALS_PER_WINDOW + 1
    assert sum(r.startswith("@mallory ") for r in replies) == REFUSALS_PER_WINDOW
    assert replies[-1].startswith("@eve `/approve me too`: only approvers")
    refused = [(e.actor, e.get("command")) for e in job_store.audit_entries(REPO, 2)]
    assert refused == [("mallory", f"/approve please {i}") for i in range(REFUSALS_PER_WINDOW)] + [
        ("eve", "/approve me too")
    ]
    assert 0 < await redis.ttl("evalbot:refusals:Codertocat/Hello-World:mallory") <= 600


async def test_a_huge_command_is_clipped_in_the_audit_trail(pull: PullRequest, job_store: Store) -> None:
    await pull.comment("mallory", "/approve " + "x" * 60_000)
    (entry,) = job_store.audit_entries(REPO)
    assert len(entry.get("command")) == 1_000 and entry.get("command").endswith("…")
    assert len(json.dumps(entry.details)) < 2_500
    (reply,) = pull.replies()
    assert len(reply) < 300


async def test_reads_take_the_newest_events(job_store: Store) -> None:
    for i in range(3):
        job_store.append_audit(REPO, "refused", "old", pr=3, sha="a" * 40, reason=f"old {i}")
    at = datetime.now(UTC)
    rows = [
        {"repository": REPO, "pr_number": 2, "sha": "b" * 40, "kind": "verdict", "actor": "evalbot", "at": at}
        | {"details": {"n": i}}
        for i in range(1_010)
    ]
    with job_store.engine.begin() as connection:
        connection.execute(insert(AuditEvent), rows)

    # One pull request's events are found however many newer ones the repository has.
    assert [e.get("reason") for e in job_store.audit_entries(REPO, 3)] == ["old 0", "old 1", "old 2"]
    assert [e.get("n") for e in job_store.audit_entries(REPO, 2, last=3)] == [1_007, 1_008, 1_009]
    assert len(job_store.audit_entries(REPO)) == 1_000


async def test_every_key_evalbot_writes_has_a_ttl_or_is_a_capped_stream(pull: PullRequest, redis: ArqRedis) -> None:
    pull.fake.permissions["lead"] = "write"
    await pull.opened()
    await pull.comment("mallory", "/approve")
    await pull.comment("lead", "/approve numbers look right")
    assert pull.check(APPROVAL_CHECK)["conclusion"] == "success"

    keys = sorted(k.decode() for k in await redis.keys("evalbot:*"))
    # The keys docs/trust-model.md lists; a new one must be added there, with its owner and bound. Approvals and the
    # audit trail are in the database, not in Redis.
    known = {"delivery", "head", "refusals", "cache", "gate-notes", "verdict", "pr-jobs", "superseded", "sha-pulls"}
    known |= {"spend", "help", "gh-throttle"}
    assert {k.split(":")[1] for k in keys} <= known
    for key in keys:
        assert await redis.ttl(key) > 0, key
