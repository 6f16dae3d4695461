"""The web process's defences: security headers, a bounded and paginated run page, a strong
SESSION_SECRET, `/metrics` closed on a public deployment, `/healthz` without exception text."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from arq import ArqRedis
from click.testing import CliRunner

from bot.cli import cli
from bot.errors import ConfigError
from bot.github.webhook import create_app
from bot.settings import Settings
from bot.store import Store
from tests.github.conftest import webhook_client
from tests.github.fake_github import FakeGitHub
from tests.web.fixtures import REPO, seed_run

SECRET = "a-session-secret-of-at-least-32-bytes!"


@pytest.fixture
async def web(
    settings: Settings, fake_github: FakeGitHub, redis: ArqRedis, job_store: Store
) -> AsyncIterator[httpx.AsyncClient]:
    settings.SESSION_SECRET = SECRET
    job_store.note_repository(REPO, 1)
    async with webhook_client(settings, redis) as http:
        yield http


def cases_on(page: httpx.Response) -> list[str]:
    return re.findall(r'data-case="([^"]+)"', page.text)


async def test_every_response_carries_the_security_headers(web: httpx.AsyncClient) -> None:
    for path in ("/", "/runs/" + "A" * 24, "/healthz"):
        headers = (await web.get(path)).headers
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy and "default-src 'none'" in policy
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["x-frame-options"] == "DENY"


async def test_a_run_page_shows_200_cases_a_page_filtered_and_searched_on_the_server(
    web: httpx.AsyncClient, fake_github: FakeGitHub, job_store: Store
) -> None:
    run = f"/runs/{seed_run(job_store, REPO, fake_github.oauth.repository_id(REPO), 450)}"
    first = await web.get(run)
    assert first.status_code == 200 and len(cases_on(first)) == 200 and "Page 1 of 3" in first.text
    assert cases_on(first)[:2] == ["c0", "c1"]
    last = await web.get(run, params={"page": 3})
    assert cases_on(last) == [f"c{i}" for i in range(400, 450)]
    # Past the end: the last page; nonsense: the first.
    assert cases_on(await web.get(run, params={"page": 99})) == cases_on(last)
    assert cases_on(await web.get(run, params={"page": "9" * 30})) == cases_on(first)
    # Regressed: passed on base (i % 3 != 0), failed on head (odd i): 150 of 450.
    regressed = await web.get(run, params={"status": "regressed"})
    assert "150 of 450 cases match" in regressed.text and len(cases_on(regressed)) == 150
    assert all(int(c[1:]) % 2 == 1 and int(c[1:]) % 3 != 0 for c in cases_on(regressed))
    searched = await web.get(run, params={"q": "C44"})
    assert cases_on(searched) == ["c44", *(f"c{i}" for i in range(440, 450))]
    even = await web.get(run, params={"category": "even", "page": 2})
    assert cases_on(even) == [f"c{i}" for i in range(400, 450, 2)]


async def test_a_run_page_is_bounded_however_long_the_answers(
    web: httpx.AsyncClient, fake_github: FakeGitHub, job_store: Store
) -> None:
    run = f"/runs/{seed_run(job_store, REPO, fake_github.oauth.repository_id(REPO), 300, answer_chars=20_000)}"
    page = await web.get(run)
    # 300 cases x 2 answers x 20,000 characters is 12 MB of answers; a page shows 200 cases, each clipped.
    assert page.status_code == 200 and len(page.content) < 1_500_000
    assert "(18,000 more characters)" in page.text


def test_a_short_session_secret_is_refused_at_start(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.SESSION_SECRET = "x" * 31
    with pytest.raises(ConfigError, match="SESSION_SECRET is 31 bytes"):
        create_app(settings)
    monkeypatch.setenv("WEBHOOK_SECRET", "w" * 20)
    monkeypatch.setenv("SESSION_SECRET", "short")
    result = CliRunner().invoke(cli, ["serve", "--port", "1"])
    assert result.exit_code == 2 and "SESSION_SECRET is 5 bytes" in result.output


async def test_metrics_need_a_token_on_a_public_deployment(settings: Settings, redis: ArqRedis) -> None:
    settings.PUBLIC_URL, settings.METRICS_TOKEN = "https://evalbot.example.com", None
    async with webhook_client(settings, redis) as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers={"Authorization": "Bearer "})).status_code == 401
    settings.METRICS_TOKEN = "m" * 32
    async with webhook_client(settings, redis) as http:
        assert (await http.get("/metrics", headers={"Authorization": "Bearer " + "m" * 32})).status_code == 200


async def test_healthz_says_what_is_down_without_the_exceptions_text(settings: Settings, redis: ArqRedis) -> None:
    app = create_app(settings, redis=redis)
    async with app.router.lifespan_context(app):
        app.state.redis = ArqRedis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://evalbot") as http:
            response = await http.get("/healthz")
        await app.state.redis.aclose()
    assert (response.status_code, response.json()) == (503, {"redis": "unavailable"})
