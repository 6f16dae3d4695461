"""`evalbot setup`: GitHub's manifest flow against the fake GitHub, and the env file it writes starting
`evalbot serve` and `evalbot worker`."""

from __future__ import annotations

import asyncio
import html
import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from arq import ArqRedis

from bot.errors import ConfigError
from bot.github.api.setup import plan, read_env, setup_app
from tests.conftest import redis_test_url
from tests.github.conftest import APP_ID
from tests.github.fake_github import FakeGitHub
from tests.servers import ThreadedServer

ROOT = Path(__file__).resolve().parents[2]
APP_YML = ROOT / "app.yml"
# Starting a process that imports the app (and the worker, litellm) takes seconds on a loaded machine.
START_DEADLINE_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def created(fake_github: FakeGitHub, app_keys: tuple[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The app created through the local setup page and the fake GitHub's manifest flow."""
    fake_github.oauth.app_id, fake_github.oauth.app_pem = APP_ID, app_keys[0]
    local_port, serve_port = free_port(), free_port()
    env_file = tmp_path / "evalbot.env"
    setup = plan(
        APP_YML,
        f"http://127.0.0.1:{serve_port}",
        f"http://127.0.0.1:{local_port}/callback",
        env_file,
        org="acme",
        web_url=fake_github.url,
        api_url=fake_github.url,
    )
    done: list[dict[str, Any]] = []
    server = ThreadedServer(setup_app(setup, done))
    server.start(local_port)
    with httpx.Client(follow_redirects=False) as browser:
        page = browser.get(f"http://127.0.0.1:{local_port}/")
        action = html.unescape(re.search(r'action="([^"]+)"', page.text)[1])  # type: ignore[index]
        manifest = html.unescape(re.search(r'name="manifest" value="([^"]+)"', page.text)[1])  # type: ignore[index]
        assert action == f"{fake_github.url}/organizations/acme/settings/apps/new?state={setup.state}"
        forged = browser.get(f"http://127.0.0.1:{local_port}/callback", params={"code": "x", "state": "forged"})
        assert forged.status_code == 400 and not env_file.exists()
        approved = browser.post(action, data={"manifest": manifest})
        assert approved.status_code == 302
        back = browser.get(approved.headers["location"])
    server.stop()
    assert back.status_code == 200 and "installations/new" in back.text and len(done) == 1
    yield {"env_file": env_file, "serve_port": serve_port, "setup": setup}


def test_setup_creates_the_app_from_app_yml_and_writes_its_settings(
    created: dict[str, Any], fake_github: FakeGitHub
) -> None:
    (made,) = fake_github.oauth.created
    manifest = made["manifest"]
    public = f"http://127.0.0.1:{created['serve_port']}"
    assert made["organization"] == "acme"
    assert manifest["hook_attributes"] == {"url": f"{public}/api/github/webhooks", "active": True}
    assert manifest["callback_urls"] == [f"{public}/login/callback"]
    assert manifest["default_permissions"]["checks"] == "write" and "merge_group" in manifest["default_events"]
    env_file: Path = created["env_file"]
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = read_env(env_file)
    assert list(values) == [
        "APP_ID",
        "PRIVATE_KEY",
        "WEBHOOK_SECRET",
        "GITHUB_CLIENT_ID",
        "GITHUB_CLIENT_SECRET",
        "PUBLIC_URL",
        "SESSION_SECRET",
    ]
    assert values["APP_ID"] == APP_ID and values["WEBHOOK_SECRET"] == fake_github.oauth.webhook_secret
    assert values["GITHUB_CLIENT_ID"] == fake_github.oauth.client_id and "\n" not in values["PRIVATE_KEY"]
    assert len(values["SESSION_SECRET"]) >= 32 and values["PUBLIC_URL"] == public
    # The code was used once: a second conversion is refused.
    assert fake_github.oauth.manifests == {}
    with pytest.raises(ConfigError, match="exists"):
        plan(APP_YML, public, "http://127.0.0.1:1/callback", env_file)


def _process_env(values: dict[str, str], fake_github: FakeGitHub, tmp_path: Path) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if k not in values and not k.startswith(("GITHUB_", "APP_"))}
    return {
        **inherited,
        **values,
        "GITHUB_API_URL": fake_github.url,
        "GITHUB_WEB_URL": fake_github.url,
        "REDIS_URL": redis_test_url(),
        "EVALBOT_CACHE_DIR": str(tmp_path / "cache"),
        "WORKER_METRICS_PORT": str(free_port()),
    }


@pytest.mark.slow
async def test_the_written_env_file_starts_serve_and_worker(
    created: dict[str, Any], fake_github: FakeGitHub, redis: ArqRedis, tmp_path: Path
) -> None:
    env = _process_env(read_env(created["env_file"]), fake_github, tmp_path)
    port = created["serve_port"]
    serve_log = tmp_path / "serve.log"
    serve = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stderr=serve_log.open("w"),
    )
    worker = subprocess.Popen([sys.executable, "-m", "bot", "worker"], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            while True:
                try:
                    health = await http.get("/healthz")
                    break
                except httpx.TransportError:
                    started = serve.poll() is None and time.monotonic() < deadline
                    assert started, f"evalbot serve did not start: {serve_log.read_text()[-2000:]}"
                    await _next_poll()
            assert (health.status_code, health.json()) == (200, {"redis": "ok"})
            # Sign-in goes to GitHub with the created app's client id and a registered callback URL.
            start = await http.get("/login")
            location = urlsplit(start.headers["location"])
            assert parse_qs(location.query)["client_id"] == [fake_github.oauth.client_id]
        fake_github.oauth.signing_in = "octocat"
        async with httpx.AsyncClient() as github:
            assert (await github.get(start.headers["location"])).status_code == 302
        # The worker connected to Redis: arq records its health check there once it polls the queue.
        while not await redis.exists("arq:queue:health-check"):
            assert worker.poll() is None and time.monotonic() < deadline, "evalbot worker did not start"
            await _next_poll()
    finally:
        for process in (serve, worker):
            process.terminate()
        for process in (serve, worker):
            process.wait(timeout=60)


async def _next_poll() -> None:
    # Polling a child process's port and Redis key: there is no event to wait on across processes.
    await asyncio.sleep(0.2)
