"""The worker's durable store: opened and migrated at start, shared by every job of the worker."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from bot.settings import Settings
from bot.store import Store, database_url, head_revision, migrate, open_store, revision

log = structlog.get_logger(__name__)


def page_url(settings: Settings, path: str = "") -> str | None:
    """A page of evalbot's web app (check runs' "Details": its front page, `runs/<id>`), when PUBLIC_URL
    says where it is."""
    return f"{settings.PUBLIC_URL.rstrip('/')}/{path}" if settings.PUBLIC_URL else None


def run_page_url(settings: Settings, public_id: str | None) -> str | None:
    """The run's page, by its unguessable id (`Store.public_id`)."""
    return page_url(settings, f"runs/{public_id}") if public_id else None


def store_url(settings: Settings) -> str:
    return database_url(settings.DATABASE_URL, settings.EVALBOT_CACHE_DIR)


async def start_store(ctx: dict[str, Any]) -> Store:
    """Open the store and run pending migrations (the worker's start-up)."""
    store = job_store(ctx)
    before = await asyncio.to_thread(revision, store)
    await asyncio.to_thread(migrate, store)
    log.info("database migrated", dialect=store.engine.dialect.name, before=before, now=head_revision())
    return store


def job_store(ctx: dict[str, Any]) -> Store:
    """The worker's store (opened on first use when the worker's start-up did not run, as in tests)."""
    store = ctx.get("store")
    if store is None:
        store = ctx["store"] = open_store(store_url(ctx["settings"]))
    return store


async def stop_store(ctx: dict[str, Any]) -> None:
    store = ctx.pop("store", None)
    if store is not None:
        await asyncio.to_thread(store.close)
