"""Redeliver failed webhook deliveries. The web process answers 5xx when it cannot queue a delivery
(Redis down, a deploy): GitHub records it as failed but never sends it again by itself, so a worker
cron asks GitHub for the app's recent deliveries and redelivers those that never got an answer below 500.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import structlog
from githubkit.exception import GitHubException

from bot.github import metrics
from bot.github.client import app_client
from bot.github.constants import MAX_REDELIVERIES, REDELIVERED_KEY, REDELIVERY_EVERY_S
from bot.settings import Settings

log = structlog.get_logger(__name__)

AppClientFactory = Callable[[Settings], Any]


def _failed(attempt: dict[str, Any]) -> bool:
    # 0: no HTTP answer at all (timeout, refused). A 4xx is our own refusal (bad signature, too
    # large): sending it again would be refused again.
    code = int(attempt.get("status_code") or 0)
    return code == 0 or code >= 500


async def _recent_attempts(gh: Any, since: float) -> dict[str, list[dict[str, Any]]]:
    """Every attempt since `since`, by delivery GUID (a redelivery keeps its GUID). GitHub lists the
    newest first, a cursor page at a time."""
    attempts: dict[str, list[dict[str, Any]]] = {}
    params: dict[str, Any] = {"per_page": 100}
    while True:
        response = await gh.arequest("GET", "/app/hook/deliveries", params=params)
        page = response.json()
        for attempt in page:
            if datetime.fromisoformat(attempt["delivered_at"].replace("Z", "+00:00")).timestamp() < since:
                return attempts
            attempts.setdefault(attempt["guid"], []).append(attempt)
        after = response.raw_response.links.get("next", {}).get("url")
        if not page or not after:
            return attempts
        params = {"per_page": 100, "cursor": httpx.URL(after).params["cursor"]}


async def redeliver_failed(ctx: dict[str, Any]) -> int:
    """Ask GitHub to send again each recent delivery whose every attempt failed; returns how many.

    A delivery is asked again at most MAX_REDELIVERIES times, and once per REDELIVERY_EVERY_S (the
    attempt GitHub makes may not be listed yet when this runs next).
    """
    settings: Settings = ctx["settings"]
    factory: AppClientFactory = ctx.get("app_github_factory", app_client)
    gh = factory(settings)
    try:
        attempts = await _recent_attempts(gh, time.time() - settings.REDELIVERY_LOOKBACK_S)
    except GitHubException as exc:
        log.warning("cannot list webhook deliveries", error=str(exc))
        return 0
    sent = 0
    for guid, tries in attempts.items():
        if not all(_failed(t) for t in tries):
            continue
        if len(tries) > MAX_REDELIVERIES:
            metrics.REDELIVERIES.labels(outcome="given_up").inc()
            continue
        if not await ctx["redis"].set(REDELIVERED_KEY.format(guid=guid), "1", nx=True, ex=REDELIVERY_EVERY_S * 2):
            continue
        try:
            await gh.arequest("POST", f"/app/hook/deliveries/{tries[0]['id']}/attempts")
        except GitHubException as exc:
            log.warning("redelivery refused", guid=guid, error=str(exc))
            metrics.REDELIVERIES.labels(outcome="refused").inc()
            continue
        log.info("redelivery asked", guid=guid, github_event=tries[0].get("event"), attempts=len(tries))
        metrics.REDELIVERIES.labels(outcome="asked").inc()
        sent += 1
    return sent
