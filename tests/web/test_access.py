"""Who sees a repository's pages: public to anyone, private to its readers after GitHub sign-in; the
session cookie, the OAuth state, sign-out's CSRF token and the access cache."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from arq import ArqRedis

from bot.github.constants import EVALS_CHECK
from bot.github.flows.evaluate import evaluate_pull_request
from bot.settings import Settings
from bot.store import Store
from bot.store.sessions import signed_in
from tests.conftest import GitRepo
from tests.github.conftest import build_pr_repo, webhook_client
from tests.github.fake_github import FakeGitHub
from tests.github.fake_oauth import CLIENT_ID, CLIENT_SECRET, USER_TOKEN_EXPIRES_S
from tests.web.fixtures import REPO


@pytest.fixture
async def web(
    settings: Settings, fake_github: FakeGitHub, redis: ArqRedis, job_store: Store
) -> AsyncIterator[httpx.AsyncClient]:
    """The web app in process (http://evalbot), with run 1 of REPO in the store."""
    settings.GITHUB_CLIENT_ID, settings.GITHUB_CLIENT_SECRET = CLIENT_ID, CLIENT_SECRET
    settings.GITHUB_WEB_URL = fake_github.url
    settings.SESSION_SECRET = "another-test-secret-another-test-secret"
    settings.PUBLIC_URL = "http://evalbot"
    fake_github.oauth.callback_urls = ["http://evalbot/login/callback"]
    job_store.note_repository(REPO, 1)
    repository_id = fake_github.oauth.repository_id(REPO)
    run = job_store.start_run(
        repository=REPO, trigger="pull_request", head_sha="f" * 40, started_at=1.8e9, pr=2, repository_id=repository_id
    )
    assert run == 1
    async with webhook_client(settings, redis) as http:
        yield http


@pytest.fixture
def run_path(web: httpx.AsyncClient, job_store: Store) -> str:
    """The page of the `web` fixture's run."""
    return f"/runs/{job_store.public_id(1)}"


async def sign_in(web: httpx.AsyncClient, fake_github: FakeGitHub, login: str, next_path: str = "/") -> httpx.Response:
    """Through /login and the fake GitHub's authorize page (as a browser would follow it) to the callback."""
    fake_github.oauth.signing_in = login
    start = await web.get("/login", params={"next": next_path})
    assert start.status_code == 303
    async with httpx.AsyncClient() as github:
        approved = await github.get(start.headers["location"])
    assert approved.status_code == 302
    back = urlsplit(approved.headers["location"])
    return await web.get(back.path, params=parse_qs(back.query))


@asynccontextmanager
async def webhook_client_like(web: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """Another browser on the same app (its own cookies)."""
    async with httpx.AsyncClient(transport=web._transport, base_url=web.base_url) as other:
        yield other


def session_payload(web: httpx.AsyncClient) -> dict[str, Any]:
    """The session cookie's payload: signed, not hidden (base64 JSON before the signature)."""
    data = web.cookies["evalbot_session"].split(".")[0]
    return dict(json.loads(base64.b64decode(data + "=" * (-len(data) % 4))))


async def test_a_public_repositorys_run_is_shown_to_anyone(web: httpx.AsyncClient, run_path: str) -> None:
    page = await web.get(run_path)
    assert page.status_code == 200 and "Run fffffff:" in page.text and "Sign in with GitHub" in page.text


async def test_run_pages_have_unguessable_ids_and_one_404_for_none_and_not_yours(
    web: httpx.AsyncClient, run_path: str, fake_github: FakeGitHub, job_store: Store
) -> None:
    # 144 random bits in the address, not the sequential id.
    assert re.fullmatch(r"/runs/[A-Za-z0-9_-]{24}", run_path)
    assert (await web.get("/runs/1")).status_code == 404
    assert (await web.get("/runs/" + "9" * 40)).status_code == 404  # was a 500 (integer overflow)
    assert (await web.get("/repos/nobody/nothing/suites/qa")).status_code == 404
    fake_github.oauth.private = {REPO}
    missing = await web.get("/runs/" + "A" * 24)
    private = await web.get(run_path)
    assert missing.status_code == private.status_code == 404

    # The same page, sign-in link and all, apart from where the link returns to.
    def unlinked(text: str, path: str) -> str:
        return text.replace(quote(path, safe=""), "X").replace(path, "X")

    assert unlinked(private.text, run_path) == unlinked(missing.text, "/runs/" + "A" * 24)


async def test_a_private_run_after_a_rename_is_not_opened_by_a_new_repository_under_the_old_name(
    web: httpx.AsyncClient, run_path: str, fake_github: FakeGitHub
) -> None:
    old_id = fake_github.oauth.repository_id(REPO)
    # The private repository is renamed; someone creates a public one under its old name.
    fake_github.oauth.repo_ids = {"Codertocat/Renamed": old_id, REPO: old_id + 1}
    fake_github.oauth.private = {"Codertocat/Renamed"}
    assert (await web.get(run_path)).status_code == 404
    fake_github.oauth.readers = {"Codertocat/Renamed": {"reader"}}
    await sign_in(web, fake_github, "reader")
    assert (await web.get(run_path)).status_code == 200  # its readers still see it, under its new name


async def test_a_signed_out_visitor_of_a_private_repository_signs_in_and_comes_back(
    web: httpx.AsyncClient, fake_github: FakeGitHub, run_path: str
) -> None:
    fake_github.oauth.private = {REPO}
    fake_github.oauth.readers = {REPO: {"reader"}}
    page = await web.get(run_path, params={"status": "regressed"})
    link = f"/login?next={quote(run_path + '?status=regressed', safe='')}"
    assert page.status_code == 404 and f'href="{link}"' in page.text
    start = await web.get(link)
    location = urlsplit(start.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{fake_github.url}/login/oauth/authorize"
    query = parse_qs(location.query)
    assert query["client_id"] == [CLIENT_ID] and query["redirect_uri"] == ["http://evalbot/login/callback"]
    payload = session_payload(web)
    assert query["state"] == [payload["oauth_state"]]
    # PKCE: the challenge is the S256 of the verifier kept in this browser's session.
    digest = hashlib.sha256(payload["pkce_verifier"].encode()).digest()
    assert query["code_challenge"] == [base64.urlsafe_b64encode(digest).rstrip(b"=").decode()]
    assert query["code_challenge_method"] == ["S256"] and len(payload["pkce_verifier"]) >= 43
    cookie = start.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie

    back = await sign_in(web, fake_github, "reader", run_path + "?status=regressed")
    assert (back.status_code, back.headers["location"]) == (303, run_path + "?status=regressed")
    assert (await web.get(run_path)).status_code == 200
    # The cookie holds a session key only: no login, no token, not even encrypted.
    (token,) = fake_github.oauth.tokens
    assert set(session_payload(web)) == {"sid"} and token not in web.cookies["evalbot_session"]
    # Read access was asked once and kept for the next pages.
    assert (await web.get(run_path)).status_code == 200
    assert fake_github.oauth.repo_checks == [("reader", REPO)]


async def test_a_callback_with_another_sessions_state_is_refused(
    web: httpx.AsyncClient, fake_github: FakeGitHub, run_path: str
) -> None:
    fake_github.oauth.private = {REPO}
    await web.get("/login")
    refused = await web.get("/login/callback", params={"code": "x", "state": "forged"})
    assert refused.status_code == 400 and "sid" not in session_payload(web)
    assert (await web.get(run_path)).status_code == 404


async def test_a_cancelled_sign_in_says_so(web: httpx.AsyncClient) -> None:
    start = await web.get("/login")
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    back = await web.get("/login/callback", params={"error": "access_denied", "state": state})
    assert back.status_code == 200 and "Sign-in cancelled" in back.text and "stale" not in back.text


async def test_github_failing_user_after_sign_in_is_a_502_page_not_a_500(
    web: httpx.AsyncClient, fake_github: FakeGitHub
) -> None:
    fake_github.oauth.user_errors = [500] * 10  # githubkit's own retries see the same
    back = await sign_in(web, fake_github, "reader")
    assert back.status_code == 502 and "GitHub did not answer" in back.text
    assert "sid" not in session_payload(web)


async def test_sign_in_needs_public_url(web: httpx.AsyncClient, settings: Settings) -> None:
    # Built from the request, the redirect_uri would be http:// behind a TLS proxy (and the Host header's).
    settings.PUBLIC_URL = None
    refused = await web.get("/login")
    assert refused.status_code == 503 and "PUBLIC_URL" in refused.text


async def test_the_code_is_exchanged_with_the_pkce_verifier(web: httpx.AsyncClient, fake_github: FakeGitHub) -> None:
    fake_github.oauth.signing_in = "reader"
    start = await web.get("/login")
    async with httpx.AsyncClient() as github:
        approved = await github.get(start.headers["location"])
    back = urlsplit(approved.headers["location"])
    params = parse_qs(back.query)
    # Someone else's browser (another session, its own verifier) cannot use the code.
    async with webhook_client_like(web) as other:
        await other.get("/login")
        refused = await other.get(back.path, params={**params, "state": session_payload(other)["oauth_state"]})
    assert refused.status_code == 400 and "code_verifier" in refused.text
    assert fake_github.oauth.tokens == {}


async def test_sign_in_never_sends_the_browser_to_another_site(web: httpx.AsyncClient, fake_github: FakeGitHub) -> None:
    back = await sign_in(web, fake_github, "reader", "//evil.example/x")
    assert back.headers["location"] == "/"


async def test_sign_out_needs_the_sessions_csrf_token_and_ends_every_copy_of_the_cookie(
    web: httpx.AsyncClient, fake_github: FakeGitHub, run_path: str
) -> None:
    fake_github.oauth.private = {REPO}
    fake_github.oauth.readers = {REPO: {"reader"}}
    await sign_in(web, fake_github, "reader")
    copied = web.cookies["evalbot_session"]
    page = await web.get("/")
    (csrf,) = re.findall(r'name="csrf" value="([^"]+)"', page.text)
    forged = await web.post("/logout", data={"csrf": "guess"})
    assert forged.status_code == 403 and (await web.get(run_path)).status_code == 200
    out = await web.post("/logout", data={"csrf": csrf})
    assert (out.status_code, out.headers["location"]) == (303, "/")
    assert (await web.get(run_path)).status_code == 404
    # The cookie as it was before signing out opens nothing either: the session is gone on the server.
    web.cookies.clear()
    web.cookies.set("evalbot_session", copied)
    assert (await web.get(run_path)).status_code == 404


async def test_access_lost_on_github_is_lost_here_within_a_minute(
    web: httpx.AsyncClient, fake_github: FakeGitHub, run_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(web._transport.app.state.web.access, "clock", lambda: now[0])  # type: ignore[attr-defined]
    fake_github.oauth.private = {REPO}
    fake_github.oauth.readers = {REPO: {"reader"}}
    await sign_in(web, fake_github, "reader")
    assert (await web.get(run_path)).status_code == 200
    fake_github.oauth.readers = {}
    now[0] += 30
    assert (await web.get(run_path)).status_code == 200  # kept for a minute
    now[0] += 31
    assert (await web.get(run_path)).status_code == 404


async def test_an_expired_user_token_ends_the_session(
    web: httpx.AsyncClient, fake_github: FakeGitHub, run_path: str, job_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(web._transport.app.state.web.access, "clock", lambda: now[0])  # type: ignore[attr-defined]
    fake_github.oauth.private = {REPO}
    fake_github.oauth.readers = {REPO: {"reader"}}
    await sign_in(web, fake_github, "reader")
    assert (await web.get(run_path)).status_code == 200
    # The session lasts as long as GitHub's token (8 hours), not longer.
    session = signed_in(job_store, session_payload(web)["sid"])
    assert session is not None
    lifetime_s = (session.expires_at - datetime.now(UTC)).total_seconds()
    assert USER_TOKEN_EXPIRES_S - 60 < lifetime_s <= USER_TOKEN_EXPIRES_S
    key = session_payload(web)["sid"]
    fake_github.oauth.advance(USER_TOKEN_EXPIRES_S + 1)
    now[0] += 61
    assert (await web.get(run_path)).status_code == 404
    assert signed_in(job_store, key) is None and "evalbot_session" not in web.cookies


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
    assert evals["details_url"] == f"https://evalbot.example.com/runs/{job_store.public_id(2)}"  # 1 is the fixture's
    page = await web.get(f"/runs/{job_store.public_id(2)}")
    assert page.status_code == 200
    assert "No result is recorded for this run: the pull request waits for a maintainer&#39;s /eval" in page.text


async def test_github_refuses_a_redirect_uri_outside_the_apps_callback_url(
    web: httpx.AsyncClient, fake_github: FakeGitHub, settings: Settings
) -> None:
    fake_github.oauth.signing_in = "reader"
    settings.PUBLIC_URL = "http://elsewhere.example"
    start = await web.get("/login")
    async with httpx.AsyncClient() as github:
        refused = await github.get(start.headers["location"])
    assert refused.status_code == 400 and "redirect_uri is not associated" in refused.text
    assert fake_github.oauth.tokens == {}
