"""Run and suite pages behind GitHub sign-in, and the sign-in itself (OAuth web flow)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from bot.github.records import store_url
from bot.pipeline.render import pct, seconds, usd
from bot.settings import Settings
from bot.store import Store, open_store
from bot.store.pages import STATUSES, installation_of, run_page
from bot.web.auth import (
    Access,
    SignInError,
    TokenBox,
    TokenRejected,
    authorize_url,
    exchange_code,
    new_state,
    safe_next,
    same,
    session_secret,
    user_login,
)
from bot.web.markdown import report_html

TEMPLATES = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
TEMPLATES.env.filters.update(pct=pct, seconds=seconds, usd=usd)
# Evaluations on the default branch a suite page charts.
SUITE_POINTS = 200
STATUS_LABELS = {
    "regressed": "Regressed (passed on base, fails on head)",
    "fixed": "Fixed (failed on base, passes on head)",
    "both_wrong": "Both wrong",
    "error": "Errors",
    "both_right": "Both right",
    "one_side": "On one side only",
}


# Verdicts of runs without results, as the run page explains them.
ENDED = {
    "running": "it is still running, or its worker stopped (the check run says why)",
    "untrusted": "the pull request waits for a maintainer's /eval (a fork, or an author without write access)",
    "no-policy": "the base branch's .evalbot.yml cannot be read (the check run says why)",
    "github-error": "GitHub refused a request the run needed",
    "retried": "GitHub failed; the job was run again as a new run",
    "crashed": "the evaluation could not finish (the check run says why)",
    "cancelled": "a newer push or the pull request's close stopped it (the check run says why)",
    "rate-limited": "GitHub's rate limit for the installation stopped it (the check run says until when)",
}


class Web:
    """What the pages share: settings, the store (opened on first use), access checks, the token box."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.access = Access(settings)
        self.tokens = TokenBox(session_secret(settings))
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(store_url(self.settings))
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _web(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def _user(request: Request) -> str | None:
    return request.session.get("user")


def _page(request: Request, name: str, status_code: int = 200, **data: Any) -> HTMLResponse:
    session = request.session
    if "csrf" not in session:
        session["csrf"] = new_state()
    context = {"user": _user(request), "csrf": session["csrf"], **data}
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status_code)


def _not_found(request: Request) -> HTMLResponse:
    # The same page for "no such run" and "not yours to see": a private repository's existence is not told.
    return _page(request, "not_found.html", status_code=404)


def _redirect_uri(request: Request, settings: Settings) -> str:
    if settings.PUBLIC_URL:
        return f"{settings.PUBLIC_URL.rstrip('/')}/login/callback"
    return str(request.url_for("login_callback"))


def _sign_in(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(here, safe='')}", status_code=303)


async def _gate(request: Request, repository: str) -> tuple[Response | None, Any]:
    """(a response that ends the request, or None when the visitor may see `repository`; its info)."""
    web = _web(request)
    installation = await asyncio.to_thread(installation_of, web.store, repository)
    if installation is None:
        return _not_found(request), None
    info = await web.access.repository(repository, installation)
    if info is None:
        return _not_found(request), None
    if not info.private:
        return None, info
    login, token = _user(request), web.tokens.open(request.session.get("token"))
    if not login or not token:
        return _sign_in(request), info
    try:
        allowed = await web.access.can_read(login, token, repository)
    except TokenRejected:
        request.session.clear()
        return _sign_in(request), info
    return (None if allowed else _not_found(request)), info


router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> HTMLResponse:
    return _page(request, "home.html")


@router.get("/login")
async def login(request: Request, next: str = "/") -> Response:
    settings = _web(request).settings
    if not settings.GITHUB_CLIENT_ID or not settings.GITHUB_CLIENT_SECRET:
        return _page(
            request,
            "message.html",
            503,
            title="Sign-in is not set up",
            text="Set GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET.",
        )
    state = new_state()
    # The state is bound to this browser's session: a callback carrying another one is refused (CSRF).
    request.session["oauth_state"] = state
    request.session["next"] = safe_next(next)
    return RedirectResponse(authorize_url(settings, _redirect_uri(request, settings), state), status_code=303)


@router.get("/login/callback", name="login_callback")
async def login_callback(request: Request, code: str = "", state: str = "") -> Response:
    web = _web(request)
    expected = request.session.pop("oauth_state", None)
    if not code or not same(expected, state):
        return _page(
            request,
            "message.html",
            400,
            title="Sign-in failed",
            text="The sign-in link is stale or not yours: start again.",
        )
    try:
        token = await exchange_code(web.settings, code, _redirect_uri(request, web.settings))
        user = await user_login(web.settings, token)
    except SignInError as exc:
        return _page(request, "message.html", 400, title="Sign-in failed", text=f"GitHub refused the sign-in: {exc}")
    target = safe_next(request.session.get("next"))
    # A new session on sign-in: nothing set before it (by anyone) carries over.
    request.session.clear()
    request.session.update(user=user, token=web.tokens.seal(token), csrf=new_state())
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = parse_qs((await request.body()).decode(errors="replace"))
    if not same(request.session.get("csrf"), (form.get("csrf") or [""])[0]):
        return _page(request, "message.html", 403, title="Not signed out", text="The form was stale: sign out again.")
    request.session.clear()
    return RedirectResponse("/", status_code=303)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run(request: Request, run_id: int, status: str = "", category: str = "", q: str = "") -> Response:
    web = _web(request)
    page = await asyncio.to_thread(run_page, web.store, run_id)
    if page is None:
        return _not_found(request)
    stop, _info = await _gate(request, page.repository)
    if stop is not None:
        return stop
    audit = await asyncio.to_thread(web.store.audit_entries, page.repository, page.pr, 200) if page.pr else []
    status = status if status in STATUSES else ""
    shown = {
        suite.name: [
            case
            for case in suite.cases
            if (not status or case.status == status)
            and (not category or case.category == category)
            and (not q or q.casefold() in case.case_id.casefold())
        ]
        for suite in page.suites
    }
    categories = sorted({c.category for s in page.suites for c in s.cases if c.category})
    return _page(
        request,
        "run.html",
        run=page,
        report=report_html(page.markdown) if page.markdown else "",
        shown=shown,
        audit=audit,
        status=status,
        category=category,
        q=q,
        categories=categories,
        statuses=STATUS_LABELS,
        ended=ENDED,
    )


@router.get("/repos/{owner}/{repo}/suites/{name}", response_class=HTMLResponse)
async def suite(request: Request, owner: str, repo: str, name: str) -> Response:
    repository = f"{owner}/{repo}"
    stop, info = await _gate(request, repository)
    if stop is not None:
        return stop
    web = _web(request)
    history = await asyncio.to_thread(web.store.suite_history, repository, name, info.default_branch, SUITE_POINTS)
    points = [
        {
            "run": p.run_id,
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
    return _page(request, "suite.html", repository=repository, suite=name, branch=info.default_branch, points=points)
