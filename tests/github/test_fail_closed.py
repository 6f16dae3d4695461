"""Fail closed where a record is missing; a delivery is recorded for dedupe only once it is queued (issue 22)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from arq import ArqRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.github.constants import DELIVERY_CLAIM_TTL_S, DELIVERY_KEY_PREFIX, EVALS_CHECK
from bot.github.state import aborts
from bot.settings import Settings
from tests.conftest import GitRepo
from tests.github.conftest import answers, build_pr_repo, fixture, signed_headers, webhook_client
from tests.github.fake_github import FakeGitHub
from tests.github.test_approval import PullRequest
from tests.stub_llm import StubLLM


def opened(base: str, head: str) -> bytes:
    payload = fixture("pull_request.opened.json")
    payload["pull_request"].update(draft=False)
    payload["pull_request"]["base"].update(sha=base, ref="main")
    payload["pull_request"]["head"].update(sha=head, ref="feature")
    return json.dumps(payload).encode()


async def test_a_delivery_answered_503_after_its_id_was_claimed_is_taken_when_redelivered(
    repo: GitRepo,
    fake_github: FakeGitHub,
    stub: StubLLM,
    redis: ArqRedis,
    settings: Settings,
    run_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, head = build_pr_repo(repo, ["lead"])
    fake_github.pulls[2] = (base, head)
    stub.handler = answers(9)
    track = aborts.track

    async def redis_gone(*args: Any) -> None:
        raise RedisConnectionError("Connection reset by peer")

    body = opened(base, head)
    async with webhook_client(settings, redis) as http:
        # Redis fails after the id is claimed, while the job is being noted: nothing is queued.
        monkeypatch.setattr(aborts, "track", redis_gone)
        first = await http.post(
            "/api/github/webhooks", content=body, headers=signed_headers(body, "pull_request", "d-9")
        )
        assert first.status_code == 503
        assert await redis.queued_jobs() == []
        assert await redis.exists(DELIVERY_KEY_PREFIX + "d-9") == 0

        monkeypatch.setattr(aborts, "track", track)
        again = await http.post(
            "/api/github/webhooks", content=body, headers=signed_headers(body, "pull_request", "d-9")
        )
        assert (again.status_code, again.json()["outcome"]) == (202, "enqueued")
        # Recorded now that it is queued: a third delivery of the id is a duplicate.
        third = await http.post(
            "/api/github/webhooks", content=body, headers=signed_headers(body, "pull_request", "d-9")
        )
        assert (third.status_code, third.json()["outcome"]) == (200, "duplicate delivery")
    await run_worker()
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert (evals["status"], evals["conclusion"]) == ("completed", "success")
    assert len(stub.requests) == 20


async def test_a_claim_that_cannot_be_released_expires_on_its_own(
    redis: ArqRedis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def redis_gone(*args: Any, **kwargs: Any) -> None:
        raise RedisConnectionError("Connection refused")

    body = opened("a" * 40, "b" * 40)
    async with webhook_client(settings, redis) as http:
        # Redis goes away after the claim: neither the job nor the release reaches it.
        monkeypatch.setattr(aborts, "track", redis_gone)
        monkeypatch.setattr(redis, "delete", redis_gone)
        response = await http.post(
            "/api/github/webhooks", content=body, headers=signed_headers(body, "pull_request", "d-7")
        )
    assert response.status_code == 503
    assert 0 < await redis.ttl(DELIVERY_KEY_PREFIX + "d-7") <= DELIVERY_CLAIM_TTL_S


async def test_a_command_on_a_head_with_no_record_is_refused_then_taken(
    repo: GitRepo, fake_github: FakeGitHub, stub: StubLLM, redis: ArqRedis, settings: Settings, run_worker: Any
) -> None:
    # The pull request's deliveries never arrived (or their record expired): when its head came is unknown.
    fake_github.permissions["lead"] = "write"
    base, head = build_pr_repo(repo, ["lead"])
    stub.handler = answers(9)
    async with webhook_client(settings, redis) as http:
        pull = PullRequest(http, fake_github, run_worker, base, head)
        await pull.comment("lead", "/eval")
        assert stub.requests == []
        assert pull.replies() == [
            f"@lead `/eval`: evalbot has no record of when `{head[:7]}` arrived, so it cannot tell whether this "
            "comment saw it: comment `/eval` again to evaluate the current head\n"
        ]
        # Noted when refused: a command written after that is taken.
        await pull.comment("lead", "/eval")
    assert fake_github.runs_named(EVALS_CHECK, head)[-1]["conclusion"] == "success"
