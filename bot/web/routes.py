"""Run and suite pages behind GitHub sign-in, and the sign-in itself (OAuth web flow with PKCE).

Nothing is read or rendered on the event loop: the process also answers GitHub's webhooks, which must
not wait behind a large run's page. Run pages are built in worker processes (bot/web/render.py).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bot.github.state.records import store_url
from bot.settings import Settings
from bot.store import Store, open_store
from bot.store.pages import STATUSES, installation_of, run_ref
from bot.store.sessions import SignedIn, create_session, end_session, signed_in
from bot.web.auth import (
    SESSION_MAX_AGE_S,
    Access,
    GitHubUnavailable,
    RepositoryInfo,
    SignInError,
    TokenBox,
    TokenRejected,
    authorize_url,
    exchange_code,
    new_state,
    new_verifier,
    redirect_uri,
    safe_next,
    same,
    session_secret,
    user_login,
)
from bot.web.render import page_builders, render, run_page_html

# Evaluations on the default branch a suite page charts.
SUITE_POINTS = 200
# Small reads and pages in threads at once (session lookups, messages): more would only contend for
# the interpreter lock with the webhook endpoint.
THREADS = 2
# What a run page's id looks like (bot/store/store.py's new_public_id); anything else is not looked up.
PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# Characters of GitHub's error_description a failed sign-in's page repeats.
MAX_ERROR_CHARS = 200


class Web:
    """What the pages share: settings, the store (opened on first use), access checks, the token box."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.access = Access(settings)
        self.tokens = TokenBox(session_secret(settings))
        self.threads = asyncio.Semaphore(THREADS)
        self._builders: Executor | None = None
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(store_url(self.settings))
        return self._store

    async def build(self, work: Callable[[], Any]) -> Any:
        """`work` (a small database read, a small page) in a thread, at most THREADS at once."""
        async with self.threads:
            return await asyncio.to_thread(work)

    def start(self) -> Executor:
        """The run page builders, all started at the first run page (not at the app's start: most web
        processes of tests and small deployments never build one)."""
        if self._builders is None:
            self._builders = page_builders(self.settings.WEB_PAGE_PROCESSES)
        return self._builders

    async def run_page(
        self, run_id: int, status: str, category: str, q: str, page: int, context: dict[str, Any]
    ) -> str | None:
        """The run page's HTML, built in a worker process."""
        work = partial(run_page_html, store_url(self.settings), run_id, status, category, q, page, context)
        html: str | None = await asyncio.get_running_loop().run_in_executor(self.start(), work)
        return html

    def close(self) -> None:
        if self._builders is not None:
            self._builders.shutdown(cancel_futures=True)
            self._builders = None
        if self._store is not None:
            self._store.close()
            self._store = None


def _web(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


async def _visitor(request: Request) -> SignedIn | None:
    """The signed-in session of this request's cookie, read once per request."""
    if not hasattr(request.state, "visitor"):
        web = _web(request)
        key = request.session.get("sid")
        request.state.visitor = await web.build(lambda: signed_in(web.store, key)) if key else None
    visitor: SignedIn | None = request.state.visitor
    return visitor


async def _context(request: Request) -> dict[str, Any]:
    """What every page's frame shows, as plain values (a run page's crosses a process boundary)."""
    visitor = await _visitor(request)
    return {
        "request": {"url": {"path": request.url.path}},
        "user": visitor.login if visitor else None,
        "csrf": visitor.csrf if visitor else "",
    }


async def _page(request: Request, name: str, status_code: int = 200, **data: Any) -> HTMLResponse:
    context = {**await _context(request), **data}
    html = await _web(request).build(lambda: render(name, context))
    return HTMLResponse(html, status_code=status_code)


async def _message(request: Request, status_code: int, title: str, text: str) -> HTMLResponse:
    return await _page(request, "message.html", status_code, title=title, text=text)


async def _not_found(request: Request) -> HTMLResponse:
    # The same page for "no such run" and "not yours to see": a private repository's existence is not told.
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return await _page(request, "not_found.html", status_code=404, sign_in=f"/login?next={quote(here, safe='')}")


async def _sign_out(request: Request) -> None:
    web = _web(request)
    key = request.session.get("sid")
    await web.build(lambda: end_session(web.store, key))
    request.session.clear()
    request.state.visitor = None


async def _gate(request: Request, repository: str, repository_id: int | None) -> tuple[Response | None, Any]:
    """(a response that ends the request, or None when the visitor may see the repository with GitHub
    id `repository_id`; its info). A run recorded without the id is shown to no one: its repository
    cannot be told from a name that a rename or transfer may have handed on."""
    web = _web(request)
    installation = await web.build(lambda: installation_of(web.store, repository))
    if installation is None or repository_id is None:
        return await _not_found(request), None
    info = await web.access.repository(repository_id, installation)
    if info is None:
        return await _not_found(request), None
    if not info.private:
        return None, info
    # Signed out (or the token expired), a private repository's page is the same 404 as no page at all,
    # with its link to sign in and come back: its existence is not told.
    visitor = await _visitor(request)
    token = web.tokens.open(visitor.sealed_token) if visitor else None
    if visitor is None or token is None:
        return await _not_found(request), info
    try:
        allowed = await web.access.can_read(visitor.login, token, repository_id)
    except TokenRejected:
        await _sign_out(request)
        return await _not_found(request), info
    return (None if allowed else await _not_found(request)), info


router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> HTMLResponse:
    return await _page(request, "home.html")


@router.get("/login")
async def login(request: Request, next: str = "/") -> Response:
    settings = _web(request).settings
    if not settings.GITHUB_CLIENT_ID or not settings.GITHUB_CLIENT_SECRET:
        return await _message(request, 503, "Sign-in is not set up", "Set GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET.")
    back = redirect_uri(settings)
    if back is None:
        return await _message(
            request, 503, "Sign-in is not set up", "Set PUBLIC_URL to the address this site is served at."
        )
    state, verifier = new_state(), new_verifier()
    # Both bound to this browser's session: a callback carrying another state is refused (CSRF), and a
    # code stolen on its way back is useless without the verifier (PKCE).
    request.session.update(oauth_state=state, pkce_verifier=verifier, next=safe_next(next))
    return RedirectResponse(authorize_url(settings, back, state, verifier), status_code=303)


@router.get("/login/callback", name="login_callback")
async def login_callback(
    request: Request, code: str = "", state: str = "", error: str = "", error_description: str = ""
) -> Response:
    web = _web(request)
    expected = request.session.pop("oauth_state", None)
    verifier = request.session.pop("pkce_verifier", None)
    if error == "access_denied":
        return await _message(
            request, 200, "Sign-in cancelled", "You did not authorize evalbot on GitHub; nothing was changed."
        )
    if error:
        said = (error_description or error)[:MAX_ERROR_CHARS]
        return await _message(request, 400, "Sign-in failed", f"GitHub refused the sign-in: {said}")
    back = redirect_uri(web.settings)
    if not code or not verifier or back is None or not same(expected, state):
        return await _message(request, 400, "Sign-in failed", "The sign-in link is stale or not yours: start again.")
    try:
        token = await exchange_code(web.settings, code, back, verifier)
        user = await user_login(web.settings, token.token)
    except SignInError as exc:
        return await _message(request, 400, "Sign-in failed", f"GitHub refused the sign-in: {exc}")
    except GitHubUnavailable:
        return await _message(request, 502, "Sign-in failed", "GitHub did not answer as expected: try again shortly.")
    target = safe_next(request.session.get("next"))
    # The session ends when GitHub's token does (eight hours by default), or after SESSION_MAX_AGE_S.
    lifetime = min(SESSION_MAX_AGE_S, token.expires_in_s or SESSION_MAX_AGE_S)
    sealed = web.tokens.seal(token.token)
    key = await web.build(lambda: create_session(web.store, user, sealed, new_state(), lifetime))
    # A new cookie on sign-in: nothing set before it (by anyone) carries over.
    request.session.clear()
    request.session["sid"] = key
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = parse_qs((await request.body()).decode(errors="replace"))
    visitor = await _visitor(request)
    if visitor is not None and not same(visitor.csrf, (form.get("csrf") or [""])[0]):
        return await _message(request, 403, "Not signed out", "The form was stale: sign out again.")
    await _sign_out(request)
    return RedirectResponse("/", status_code=303)


@router.get("/runs/{public_id}", response_class=HTMLResponse)
async def run(
    request: Request, public_id: str, status: str = "", category: str = "", q: str = "", page: str = "1"
) -> Response:
    web = _web(request)
    ref = await web.build(lambda: run_ref(web.store, public_id)) if PUBLIC_ID.fullmatch(public_id) else None
    if ref is None:
        return await _not_found(request)
    stop, _info = await _gate(request, ref.repository, ref.repository_id)
    if stop is not None:
        return stop
    status = status if status in STATUSES else ""
    number = int(page) if page.isdigit() and len(page) < 7 else 1
    html = await web.run_page(ref.id, status, category[:255], q[:255], number, await _context(request))
    if html is None:
        return await _not_found(request)
    return HTMLResponse(html)


@router.get("/repos/{owner}/{repo}/suites/{name}", response_class=HTMLResponse)
async def suite(request: Request, owner: str, repo: str, name: str) -> Response:
    repository = f"{owner}/{repo}"
    web = _web(request)
    installation = await web.build(lambda: installation_of(web.store, repository))
    # The name is resolved to GitHub's id once, now: the history shown is of runs recorded with that id.
    repository_id = await web.access.repository_id(repository, installation) if installation else None
    stop, info = await _gate(request, repository, repository_id)
    if stop is not None:
        return stop
    known: RepositoryInfo = info
    history = await web.build(
        lambda: web.store.suite_history(repository, name, known.default_branch, SUITE_POINTS, known.id)
    )
    points = [
        {
            "run": p.public_id,
            "sha": p.sha[:7],
            "at": p.at.strftime("%Y-%m-%d %H:%M"),
            "trigger": p.trigger,
            "accuracy_pct": None if p.accuracy is None else round(p.accuracy * 100, 2),
            "latency_p95_s": p.latency_p95_s,
            "cost_per_1k_usd": p.cost_per_1k_usd,
            "hallucination_pct": None if p.hallucination_rate is None else round(p.hallucination_rate * 100, 2),
        }
        for p in history
    ]
    return await _page(
        request, "suite.html", repository=repository, suite=name, branch=known.default_branch, points=points
    )
