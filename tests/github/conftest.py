"""Fixtures for the GitHub App: app keys, the fake GitHub API, real Redis and a burst arq worker."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from arq.worker import Worker
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.github.jobs import evaluate_pull_request, handle_command
from bot.github.webhook import create_app
from bot.settings import Settings
from tests.conftest import redis_available
from tests.github.fake_github import FakeGitHub

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "github-webhooks"
SECRET = "webhook-secret"
APP_ID = "4242"
REDIS_URL = "redis://127.0.0.1:6379/14"


def fixture(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


def signed_headers(body: bytes, event: str, delivery: str | None = None, secret: str = SECRET) -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
        "Content-Type": "application/json",
    }


@asynccontextmanager
async def webhook_client(settings: Settings, redis: ArqRedis) -> AsyncIterator[httpx.AsyncClient]:
    """The web app, with its lifespan, behind an in-process httpx client."""
    app = create_app(settings, redis=redis)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://evalbot") as http,
    ):
        yield http


@pytest.fixture(scope="session")
def app_keys() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture
def fake_github(repo: Any, app_keys: tuple[str, str]) -> Iterator[FakeGitHub]:
    server = FakeGitHub(repo.root, app_keys[1], APP_ID).start()
    yield server
    server.stop()


@pytest.fixture
def settings(fake_github: FakeGitHub, app_keys: tuple[str, str], stub: Any) -> Settings:
    return Settings(
        APP_ID=APP_ID,
        PRIVATE_KEY=app_keys[0].replace("\n", "\\n"),  # as a PaaS secret store keeps it
        WEBHOOK_SECRET=SECRET,
        GITHUB_API_URL=fake_github.url,
        REDIS_URL=REDIS_URL,
        EVALBOT_API_BASE=stub.base_url,
    )


@pytest.fixture
async def redis() -> AsyncIterator[ArqRedis]:
    if not redis_available():
        pytest.skip("the GitHub App tests need a real Redis on 127.0.0.1:6379")
    pool = await create_pool(RedisSettings.from_dsn(REDIS_URL))
    await pool.flushdb()
    yield pool
    await pool.aclose()


@pytest.fixture
def run_worker(redis: ArqRedis, settings: Settings) -> Any:
    """Run queued jobs to completion (arq burst mode), as `evalbot worker` would."""

    async def run() -> int:
        worker = Worker(
            functions=[evaluate_pull_request, handle_command],
            redis_pool=redis,
            burst=True,
            poll_delay=0,
            ctx={"settings": settings},
            handle_signals=False,
        )
        try:
            await worker.main()
        finally:
            await worker.close()
        return int(worker.jobs_complete)

    return run
