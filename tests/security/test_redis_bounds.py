"""Redis stays bounded: refusals rate-limited, audit fields clipped, reads from the end, a TTL on every key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq import ArqRedis

from bot.github import state
from bot.github.constants import APPROVAL_CHECK, AUDIT_SCAN_ENTRIES, AUDIT_STREAM, REFUSALS_PER_WINDOW
from bot.settings import Settings
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


async def test_refusals_are_answered_five_times_per_user_and_repository(pull: PullRequest, redis: ArqRedis) -> None:
    for i in range(REFUSALS_PER_WINDOW + 3):
        await pull.comment("mallory", f"/approve please {i}")
    await pull.comment("eve", "/approve me too")

    replies = pull.replies()
    assert len(replies) == REFUSALS_PER_WINDOW + 1
    assert sum(r.startswith("@mallory ") for r in replies) == REFUSALS_PER_WINDOW
    assert replies[-1].startswith("@eve `/approve me too`: only approvers")
    refused = [(e["actor"], e["command"]) for e in await state.audit_entries(redis, REPO, 2)]
    assert refused == [("mallory", f"/approve please {i}") for i in range(REFUSALS_PER_WINDOW)] + [
        ("eve", "/approve me too")
    ]
    assert 0 < await redis.ttl("evalbot:refusals:Codertocat/Hello-World:mallory") <= 600


async def test_a_huge_command_is_clipped_in_the_audit_stream(pull: PullRequest, redis: ArqRedis) -> None:
    await pull.comment("mallory", "/approve " + "x" * 60_000)
    ((_, fields),) = await redis.xrange(AUDIT_STREAM.format(repo=REPO))
    details = json.loads(fields[b"details"])
    assert len(details["command"]) == 1_000 and details["command"].endswith("…")
    assert len(fields[b"details"]) < 2_500
    (reply,) = pull.replies()
    assert len(reply) < 300


async def test_reads_take_the_newest_entries_not_the_whole_stream(redis: ArqRedis) -> None:
    # Pull request 3's records are older than the newest AUDIT_SCAN_ENTRIES of the repository.
    for i in range(3):
        await state.audit(redis, REPO, "refused", 3, "a" * 40, "old", reason=f"old {i}")
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(AUDIT_SCAN_ENTRIES + 10):
            record = {"kind": "verdict", "pr": "2", "sha": "b" * 40, "actor": "evalbot", "at": f"{i}.000"}
            pipe.xadd(AUDIT_STREAM.format(repo=REPO), {**record, "details": json.dumps({"n": i})})
        await pipe.execute()

    assert await state.audit_entries(redis, REPO, 3) == []
    newest = await state.audit_entries(redis, REPO, 2, last=3)
    assert [e["n"] for e in newest] == [AUDIT_SCAN_ENTRIES + 7, AUDIT_SCAN_ENTRIES + 8, AUDIT_SCAN_ENTRIES + 9]
    assert len(await state.audit_entries(redis, REPO)) == 1_000


async def test_every_key_evalbot_writes_has_a_ttl_or_is_a_capped_stream(pull: PullRequest, redis: ArqRedis) -> None:
    pull.fake.permissions["lead"] = "write"
    await pull.opened()
    await pull.comment("mallory", "/approve")
    await pull.comment("lead", "/approve numbers look right")
    assert pull.check(APPROVAL_CHECK)["conclusion"] == "success"

    keys = sorted(k.decode() for k in await redis.keys("evalbot:*"))
    # The keys README lists; a new one must be added there, with its owner and bound.
    assert {k.split(":")[1] for k in keys} <= {
        "delivery",
        "head",
        "approval",
        "audit",
        "refusals",
        "cache",
        "gate-notes",
        "verdict",
    }
    for key in keys:
        if key.startswith("evalbot:audit:"):
            assert await redis.type(key) == b"stream"  # capped by XADD MAXLEN
        else:
            assert await redis.ttl(key) > 0, key
