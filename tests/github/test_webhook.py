"""The web process: signatures, parsing, routing and dedupe, with a real Redis queue behind it."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from arq import ArqRedis

from bot.github.webhook import create_app, head_record, route
from bot.settings import Settings
from tests.conftest import redis_test_url
from tests.github.conftest import SECRET, fixture, signed_headers, webhook_client


@pytest.fixture
async def client(redis: ArqRedis) -> AsyncIterator[httpx.AsyncClient]:
    async with webhook_client(Settings(WEBHOOK_SECRET=SECRET), redis) as http:
        yield http


async def queued(redis: ArqRedis) -> list[str]:
    return [job.job_id for job in await redis.queued_jobs()]


async def post(client: httpx.AsyncClient, event: str, body: bytes, **headers: str) -> httpx.Response:
    return await client.post("/api/github/webhooks", content=body, headers={**signed_headers(body, event), **headers})


async def test_signed_pull_request_is_enqueued_once(client: httpx.AsyncClient, redis: ArqRedis) -> None:
    body = json.dumps(fixture("pull_request.opened.json")).encode()
    headers = signed_headers(body, "pull_request", delivery="d-1")
    first = await client.post("/api/github/webhooks", content=body, headers=headers)
    assert first.status_code == 202
    sha = fixture("pull_request.opened.json")["pull_request"]["head"]["sha"]
    assert first.json() == {"outcome": "enqueued", "job_id": f"evalbot:eval:Codertocat/Hello-World:2:{sha}"}
    again = await client.post("/api/github/webhooks", content=body, headers=headers)
    assert (again.status_code, again.json()["outcome"]) == (200, "duplicate delivery")
    # A different delivery of the same head SHA is deduped by the job id.
    other = await post(client, "pull_request", body)
    assert other.json()["outcome"] == "already queued or done"
    assert await queued(redis) == [first.json()["job_id"]]


@pytest.mark.parametrize(
    ("headers", "status", "outcome"),
    [
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 401, "rejected: missing or wrong X-Hub-Signature-256"),
        ({"X-Hub-Signature-256": ""}, 401, "rejected: missing or wrong X-Hub-Signature-256"),
    ],
)
async def test_bad_signatures_are_refused(
    client: httpx.AsyncClient, redis: ArqRedis, headers: dict[str, str], status: int, outcome: str
) -> None:
    body = json.dumps(fixture("pull_request.opened.json")).encode()
    response = await post(client, "pull_request", body, **headers)
    assert (response.status_code, response.json()["outcome"]) == (status, outcome)
    assert await queued(redis) == []


async def test_sha1_only_signature_is_refused(client: httpx.AsyncClient, redis: ArqRedis) -> None:
    body = json.dumps(fixture("pull_request.opened.json")).encode()
    sha1 = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    headers = {"X-GitHub-Event": "pull_request", "X-Hub-Signature": sha1, "X-Hub-Signature-256": sha1}
    response = await client.post("/api/github/webhooks", content=body, headers=headers)
    assert response.status_code == 401 and await queued(redis) == []


async def test_malformed_json_and_unknown_events(client: httpx.AsyncClient, redis: ArqRedis) -> None:
    bad = await post(client, "pull_request", b"{not json")
    assert (bad.status_code, bad.json()["outcome"]) == (400, "rejected: body is not JSON")
    unknown = await post(client, "deployment", json.dumps({"action": "created"}).encode())
    assert (unknown.status_code, unknown.json()["outcome"]) == (
        202,
        "ignored: deployment.created without an installation",
    )
    ping = await post(client, "ping", json.dumps(fixture("ping.json")).encode())
    assert ping.status_code == 200 and ping.json()["outcome"] == "pong"
    assert await queued(redis) == []


def test_routing_of_real_payloads() -> None:
    closed = fixture("pull_request.closed.json")
    outcome, job = route("pull_request", closed, "d-8")
    assert (outcome, job and job.function) == ("enqueued", "publish_head")
    assert route("pull_request", fixture("pull_request.synchronize.json"))[0] == "enqueued"
    draft = fixture("pull_request.opened.json")
    draft["pull_request"]["draft"] = True
    assert route("pull_request", draft) == ("ignored: draft (evaluated when ready for review)", None)
    ready = {**draft, "action": "ready_for_review"}
    assert route("pull_request", ready)[0] == "ignored: draft (evaluated when ready for review)"
    ready["pull_request"] = {**draft["pull_request"], "draft": False}
    assert route("pull_request", ready)[0] == "enqueued"
    # A retarget plans the same head against the new base, as a run of its own.
    retarget = fixture("pull_request.edited.base-changed.DERIVED.json")
    outcome, job = route("pull_request", retarget, "d-9")
    sha = retarget["pull_request"]["head"]["sha"]
    assert (outcome, job and job.job_id) == ("enqueued", f"evalbot:eval:Codertocat/Hello-World:2:{sha}:rerun:base:d-9")
    title_only = {**retarget, "changes": {"title": {"from": "old"}}}
    assert route("pull_request", title_only)[0] == "ignored: pull_request.edited"
    assert head_record("pull_request", draft) == (
        "evalbot:head:Codertocat/Hello-World:2",
        {"sha": draft["pull_request"]["head"]["sha"], "base": draft["pull_request"]["base"]["ref"]},
    )
    # The example check_run payload is another app's check: nothing of evalbot's to re-run.
    assert route("check_run", fixture("check_run.rerequested.json")) == (
        "ignored: check_run.rerequested of 'randscape'",
        None,
    )
    assert (
        route("installation", fixture("installation.created.json"))[0] == "noted: installation.created for Codertocat"
    )


async def test_healthz_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"redis": "ok"}
    await post(client, "ping", b"{}")
    text = (await client.get("/metrics")).text
    assert 'evalbot_webhook_deliveries_total{event="ping",outcome="pong"}' in text


async def test_healthz_is_503_without_redis() -> None:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(redis_test_url()))
    app = create_app(Settings(WEBHOOK_SECRET=SECRET), redis=pool)
    async with app.router.lifespan_context(app):
        await pool.aclose()
        app.state.redis = ArqRedis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://evalbot") as http:
            response = await http.get("/healthz")
    assert response.status_code == 503


def test_serve_refuses_to_start_without_a_webhook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from bot.cli import cli

    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    result = CliRunner().invoke(cli, ["serve"])
    assert (result.exit_code, result.output) == (2, "error: set WEBHOOK_SECRET to the GitHub App's webhook secret\n")
