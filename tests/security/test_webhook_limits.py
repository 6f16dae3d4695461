"""The web process cannot be made to read a huge body, and `/metrics` can require a bearer token."""

from __future__ import annotations

from collections.abc import AsyncIterator

from arq import ArqRedis

from bot.github.constants import MAX_WEBHOOK_BODY_BYTES
from bot.settings import Settings
from tests.github.conftest import webhook_client

CHUNK = b"x" * (1024 * 1024)


class Body:
    """A 64 MiB request body streamed a MiB at a time, counting what the server pulled."""

    def __init__(self, total: int = 64 * len(CHUNK)):
        self.total, self.consumed = total, 0

    async def stream(self) -> AsyncIterator[bytes]:
        while self.consumed < self.total:
            self.consumed += len(CHUNK)
            yield CHUNK


HEADERS = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}


async def test_a_declared_length_over_25_mb_is_refused_before_reading(redis: ArqRedis, settings: Settings) -> None:
    body = Body()
    async with webhook_client(settings, redis) as http:
        headers = {**HEADERS, "Content-Length": str(body.total)}
        response = await http.post("/api/github/webhooks", content=body.stream(), headers=headers)
    assert response.status_code == 413
    assert response.json() == {"outcome": "rejected: body over 26214400 bytes (GitHub's cap is 25 MB)"}
    assert body.consumed <= len(CHUNK)  # at most what the transport pulled ahead


async def test_a_chunked_body_is_cut_off_at_25_mb(redis: ArqRedis, settings: Settings) -> None:
    body = Body()
    async with webhook_client(settings, redis) as http:
        # A generator without a length: httpx sends it chunked, with no Content-Length.
        response = await http.post("/api/github/webhooks", content=body.stream(), headers=HEADERS)
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 413
    assert MAX_WEBHOOK_BODY_BYTES < body.consumed <= MAX_WEBHOOK_BODY_BYTES + 2 * len(CHUNK)


async def test_a_body_within_the_cap_still_gets_its_signature_checked(redis: ArqRedis, settings: Settings) -> None:
    async with webhook_client(settings, redis) as http:
        response = await http.post("/api/github/webhooks", content=b"{}" + b" " * 1000, headers=HEADERS)
    assert response.status_code == 401


async def test_metrics_need_the_bearer_token_when_one_is_set(redis: ArqRedis, settings: Settings) -> None:
    guarded = settings.model_copy(update={"METRICS_TOKEN": "metrics-token-1234"})
    async with webhook_client(guarded, redis) as http:
        assert (await http.get("/metrics")).status_code == 401
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer metrics-token-12345"})
        assert (wrong.status_code, wrong.headers["WWW-Authenticate"]) == (401, "Bearer")
        assert (await http.get("/metrics", headers={"Authorization": "Basic metrics-token-1234"})).status_code == 401
        ok = await http.get("/metrics", headers={"Authorization": "Bearer metrics-token-1234"})
        assert ok.status_code == 200 and "evalbot_webhook_deliveries_total" in ok.text
    async with webhook_client(settings, redis) as http:
        assert (await http.get("/metrics")).status_code == 200  # no token set: open, as before
