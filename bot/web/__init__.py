"""The web pages: a run's report with every case, a suite's history, behind GitHub sign-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from bot.settings import Settings
from bot.web.auth import SESSION_MAX_AGE_S, session_secret
from bot.web.routes import Web, router

STATIC_DIR = Path(__file__).resolve().parent / "static"


def install(app: FastAPI, settings: Settings) -> None:
    """Add the pages, their static files (the chart library) and the session cookie to `app`."""
    app.state.web = web = Web(settings)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Signed, HttpOnly (Starlette always sets it), SameSite=Lax; Secure when the site is served over HTTPS.
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie="evalbot_session",
        max_age=SESSION_MAX_AGE_S,
        same_site="lax",
        https_only=bool(settings.PUBLIC_URL and settings.PUBLIC_URL.startswith("https://")),
    )
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        try:
            async with inner(app) as state:
                yield state
        finally:
            web.close()

    app.router.lifespan_context = lifespan
