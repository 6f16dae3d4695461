"""Who sees a repository's pages: public to anyone, private to its readers after GitHub sign-in; the
session cookie, the OAuth state, sign-out's CSRF token and the access cache."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from arq import ArqRedis

from bot.github.constants import EVALS_CHECK
from bot.github.jobs import evaluate_pull_request
from bot.settings import Settings
from bot.store import Store
from tests.conftest import GitRepo
from tests.github.conftest import build_pr_repo, webhook_client
from tests.github.fake_github import FakeGitHub
from tests.github.fake_oauth import CLIENT_ID, CLIENT_SECRET
from tests.web.fixtures import REPO


@pytest.fixture
async def web(
    settings: Settings, fake_github: FakeGitHub, redis: ArqRedis, job_store: Store
) -> AsyncIterator[httpx.AsyncClient]:
    """The web app in process (http://evalbot), with run 1 of REPO in the store."""
    settings.GITHUB_CLIENT_ID, settings.GITHUB_CLIENT_SECRET = CLIENT_ID, CLIENT_SECRET
    settings.GITHUB_WEB_URL = fake_github.url
    settings.SESSION_SECRET = "another-test-secret-another-test-secret"
    job_store.note_repository(REPO, 1)
    assert job_store.start_run(repository=REPO, trigger="pull_request", head_sha="f" * 40, started_at=1.8e9, pr=2) == 1
    async with webhook_client(settings, redis) as http:
        yield http


async def sign_in(
    web: httpx.AsyncClient, fake_github: FakeGitHub, login: str, next_path: str = "/runs/1"
) -> httpx.Response:
    """Through /login and the fake GitHub's authorize page (as a browser would follow it) to the callback."""
    fake_github.oauth.signing_in = login
    start = await web.get("/login", params={"next": next_path})
    assert start.status_code == 303
    async with httpx.AsyncClient() as github:
        approved = await github.get(start.headers["location"])
    assert approved.status_code == 302
    back = urlsplit(approved.headers["location"])
    return await web.get(back.path, params=parse_qs(back.query))


def session_payload(web: httpx.AsyncClient) -> dict[str, Any]:
    """The session cookie's payload: signed, not hidden (base64 JSON before the signature)."""
    data = web.cookies["evalbot_session"].split(".")[0]
    return dict(json.loads(base64.b64decode(data + "=" * (-len(data) % 4))))


async def test_a_public_repositorys_run_is_shown_to_anyone(web: httpx.AsyncClient) -> None:
    page = await web.get("/runs/1")
    assert page.status_code == 200 and "Run 1:" in page.text and "Sign in with GitHub" in page.text


async def test_unknown_runs_and_repositories_are_404(web: httpx.AsyncClient) -> None:
    assert (await web.get("/runs/2")).status_code == 404
    assert (await web.get("/repos/nobody/nothing/suites/qa")).status_code == 404


async def test_a_signed_out_visitor_of_a_private_repository_is_sent_to_sign_in_and_back(
    web: httpx.AsyncClient, fake_github: FakeGitHub
) -> None:
    fake_github.oauth.private = {REPO}
    fake_github.oauth.readers = {REPO: {"reader"}}
    page = await web.get("/runs/1", params={"status": "regressed"})
    assert (page.status_code, page.headers["location"]) == (303, "/login?next=%2Fruns%2F1%3Fstatus%3Dregressed")
    start = await web.get(page.headers["location"])
    location = urlsplit(start.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{fake_github.url}/login/oauth/authorize"
    query = parse_qs(location.query)
    assert query["client_id"] == [CLIENT_ID] and query["redirect_uri"] == ["http://evalbot/login/callback"]
    assert query["state"] == [session_payload(web)["oauth_state"]]
    cookie = start.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie

    back = await sign_in(web, fake_github, "reader", "/runs/1?status=regressed")
    assert (back.status_code, back.headers["location"]) == (303, "/runs/1?status=regressed")
    assert (await web.get("/runs/1")).status_code == 200
    # The token is in the cookie only encrypted.
    (token,) = fake_github.oauth.tokens
    payload = session_payload(web)
    assert (
        payload["user"] == "reader" and token not in json.dumps(payload) and token not in web.cookies["evalbot_session"]
    )
    # Read access was asked once and kept for the next pages.
    assert (await web.get("/runs/1")).status_code == 200
    assert fake_github.oauth.repo_checks == [("reader", REPO)]


async def test_a_callback_with_another_sessions_state_is_refused(
    web: httpx.AsyncClient, fake_github: FakeGitHub
) -> None:
    fake_github.oauth.private = {REPO}
    await web.get("/login")
    refused = await web.get("/login/callback", params={"code": "x", "state": "forged"})
    assert refused.status_code == 400 and "user" not in session_payload(web)
    assert (await web.get("/runs/1")).status_code == 303


async def test_sign_in_never_sends_the_browser_to_another_site(web: httpx.AsyncClient, fake_github: FakeGitHub) -> None:
    back = await sign_in(web, fake_github, "reader", "//evil.example/x")
    assert back.headers["location"] == "/"


async def test_sign_out_needs_the_sessions_csrf_token(web: httpx.AsyncClient, fake_github: FakeGitHub) -> None:
    fake_github.oauth.private = {REPO}
    fake_github.oauth.readers = {REPO: {"reader"}}
    await sign_in(web, fake_github, "reader")
    csrf = session_payload(web)["csrf"]
    forged = await web.post("/logout", data={"csrf": "guess"})
    assert forged.status_code == 403 and session_payload(web)["user"] == "reader"
    out = await web.post("/logout", data={"csrf": csrf})
    assert (out.status_code, out.headers["location"]) == (303, "/")
    assert (await web.get("/runs/1")).status_code == 303


async def test_a_run_that_ends_without_results_says_why_on_its_page(
    web: httpx.AsyncClient,
    repo: GitRepo,
    fake_github: FakeGitHub,
    settings: Settings,
    redis: ArqRedis,
    job_store: Store,
) -> None:
    base, head = build_pr_repo(repo, ["lead"])
    fake_github.pulls[2] = (base, head)
    fake_github.fork_pulls.add(2)
    settings.PUBLIC_URL = "https://evalbot.example.com"
    ctx = {"settings": settings, "redis": redis, "store": job_store}
    assert await evaluate_pull_request(ctx, repo=REPO, installation_id=1, pr_number=2, head_sha=head) == "untrusted"
    (evals,) = fake_github.runs_named(EVALS_CHECK, head)
    assert evals["details_url"] == "https://evalbot.example.com/runs/2"  # run 1 is the fixture's
    page = await web.get("/runs/2")
    assert page.status_code == 200
    assert "No result is recorded for this run: the pull request waits for a maintainer&#39;s /eval" in page.text
