"""Redeliver failed webhook deliveries. The web process answers 5xx when it cannot queue a delivery
(Redis down, a deploy): GitHub records it as failed but never sends it again by itself, so a worker
cron asks GitHub for the app's deliveries and redelivers those that never got an answer below 500.

GitHub keeps deliveries three days. The first run reads them all (`REDELIVERY_LOOKBACK_S`, at most
three days); each later run reads only the attempts newer than the newest one read before (a cursor in
Redis), and the deliveries still failed are kept in Redis until an attempt succeeds, they are given
up, or GitHub no longer keeps them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import structlog
from githubkit.exception import GitHubException

from bot.github import metrics
from bot.github.api.client import app_client
from bot.github.constants import (
    DELIVERY_RETENTION_S,
    MAX_REDELIVERIES,
    REDELIVERED_KEY,
    REDELIVERY_CURSOR_KEY,
    REDELIVERY_EVERY_S,
    REDELIVERY_PENDING_KEY,
)
from bot.settings import Settings

log = structlog.get_logger(__name__)

AppClientFactory = Callable[[Settings], Any]


def _failed(attempt: dict[str, Any]) -> bool:
    # 0: no HTTP answer at all (timeout, refused). A 4xx is our own refusal (bad signature, too
    # large): sending it again would be refused again.
    code = int(attempt.get("status_code") or 0)
    return code == 0 or code >= 500


def _at(attempt: dict[str, Any]) -> float:
    return datetime.fromisoformat(attempt["delivered_at"].replace("Z", "+00:00")).timestamp()


async def _new_attempts(gh: Any, cursor: int | None, since: float) -> list[dict[str, Any]]:
    """The attempts newer than `cursor` (the newest id the last run read) and not before `since`.
    GitHub lists the newest first, a cursor page at a time: paging stops at the first one already read."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"per_page": 100}
    while True:
        response = await gh.arequest("GET", "/app/hook/deliveries", params=params)
        page = response.json()
        for attempt in page:
            if (cursor is not None and int(attempt["id"]) <= cursor) or _at(attempt) < since:
                return found
            found.append(attempt)
        after = response.raw_response.links.get("next", {}).get("url")
        if not page or not after:
            return found
        params = {"per_page": 100, "cursor": httpx.URL(after).params["cursor"]}


async def _note(redis: Any, attempts: list[dict[str, Any]]) -> None:
    """Fold the new attempts into the deliveries still failed, and move the cursor past them (one
    transaction: a run that stops half-way neither loses attempts nor counts them twice)."""
    by_guid: dict[str, list[dict[str, Any]]] = {}
    for attempt in attempts:
        by_guid.setdefault(attempt["guid"], []).append(attempt)
    known = await redis.hmget(REDELIVERY_PENDING_KEY, list(by_guid)) if by_guid else []
    pipe = redis.pipeline(transaction=True)
    for (guid, tries), raw in zip(by_guid.items(), known, strict=True):
        if not all(_failed(t) for t in tries):
            pipe.hdel(REDELIVERY_PENDING_KEY, guid)
            continue
        entry = json.loads(raw) if raw else {"id": tries[0]["id"], "tries": 0, "at": min(_at(t) for t in tries)}
        entry["tries"] += len(tries)
        pipe.hset(REDELIVERY_PENDING_KEY, guid, json.dumps(entry))
    if attempts:
        pipe.set(REDELIVERY_CURSOR_KEY, max(int(a["id"]) for a in attempts))
    await pipe.execute()


async def redeliver_failed(ctx: dict[str, Any]) -> int:
    """Ask GitHub to send again each delivery whose every attempt failed; returns how many.

    A delivery is asked again at most MAX_REDELIVERIES times, and once per REDELIVERY_EVERY_S (the
    attempt GitHub makes may not be listed yet when this runs next).
    """
    settings: Settings = ctx["settings"]
    redis = ctx["redis"]
    factory: AppClientFactory = ctx.get("app_github_factory", app_client)
    gh = factory(settings)
    since = time.time() - min(settings.REDELIVERY_LOOKBACK_S, DELIVERY_RETENTION_S)
    cursor = await redis.get(REDELIVERY_CURSOR_KEY)
    try:
        attempts = await _new_attempts(gh, int(cursor) if cursor else None, since)
    except GitHubException as exc:
        log.warning("cannot list webhook deliveries", error=str(exc))
        return 0
    await _note(redis, attempts)
    sent = 0
    for key, raw in (await redis.hgetall(REDELIVERY_PENDING_KEY)).items():
        guid = key.decode() if isinstance(key, bytes) else str(key)
        entry = json.loads(raw)
        if entry["at"] < since:  # GitHub no longer keeps it (or it is older than the setting)
            await redis.hdel(REDELIVERY_PENDING_KEY, guid)
            continue
        if entry["tries"] > MAX_REDELIVERIES:
            metrics.REDELIVERIES.labels(outcome="given_up").inc()
            await redis.hdel(REDELIVERY_PENDING_KEY, guid)
            continue
        if not await redis.set(REDELIVERED_KEY.format(guid=guid), "1", nx=True, ex=REDELIVERY_EVERY_S * 2):
            continue
        try:
            await gh.arequest("POST", f"/app/hook/deliveries/{entry['id']}/attempts")
        except GitHubException as exc:
            log.warning("redelivery refused", guid=guid, error=str(exc))
            metrics.REDELIVERIES.labels(outcome="refused").inc()
            continue
        log.info("redelivery asked", guid=guid, attempts=entry["tries"])
        metrics.REDELIVERIES.labels(outcome="asked").inc()
        sent += 1
    return sent
