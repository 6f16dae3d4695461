"""The web pages: a run's report with every case, a suite's history, behind GitHub sign-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.settings import Settings
from bot.web.auth import SESSION_MAX_AGE_S, session_secret
from bot.web.feedback import router as feedback_router
from bot.web.routes import Web, router

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Sent with every response: scripts, styles and images from this site only (the suite chart's library
# is served from /static), no framing (clickjacking), no MIME sniffing, and no run page address (an
# unguessable id) in the Referer sent to other sites.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class SecurityHeaders:
    """Plain ASGI middleware (not BaseHTTPMiddleware): it adds headers without buffering a response or
    costing the webhook endpoint a task per request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [header for header in SECURITY_HEADERS if header[0] not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI, settings: Settings) -> None:
    """Add the pages, their static files (the chart library), the sign-in cookie and the security
    headers to `app`.

    Raises:
        ConfigError: SESSION_SECRET is too short.
    """
    secret = session_secret(settings)
    app.state.web = web = Web(settings)
    app.include_router(router)
    app.include_router(feedback_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Signed, HttpOnly (Starlette always sets it), SameSite=Lax; Secure when the site is served over HTTPS.
    # It holds the sign-in's state and PKCE verifier, then only the key of the server-side session.
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie="evalbot_session",
        max_age=SESSION_MAX_AGE_S,
        same_site="lax",
        https_only=bool(settings.PUBLIC_URL and settings.PUBLIC_URL.startswith("https://")),
    )
    app.add_middleware(SecurityHeaders)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        try:
            async with inner(app) as state:
                yield state
        finally:
            web.close()

    app.router.lifespan_context = lifespan
