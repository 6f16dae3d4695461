"""The web process: verify, dedupe and route GitHub deliveries to arq in milliseconds; health; metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from githubkit.webhooks import verify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.github import metrics
from bot.github.constants import DELIVERY_KEY_PREFIX, DELIVERY_TTL_S, eval_job_id
from bot.settings import Settings, get_settings

log = structlog.get_logger(__name__)

PR_ACTIONS = {"opened", "synchronize", "reopened", "ready_for_review"}


def _answer(status: int, outcome: str, event: str, **extra: Any) -> JSONResponse:
    metrics.DELIVERIES.labels(event=event, outcome=outcome).inc()
    return JSONResponse({"outcome": outcome, **extra}, status_code=status)


def signature_ok(secret: str, body: bytes, signature: str | None) -> bool:
    """Only `X-Hub-Signature-256` counts: a missing one, or a SHA-1 one alone, is refused."""
    if not signature or not signature.startswith("sha256="):
        return False
    return bool(verify(secret, body, signature))


def _pr_job(payload: dict[str, Any], pr: dict[str, Any]) -> dict[str, Any]:
    return {
        "repo": payload["repository"]["full_name"],
        "installation_id": int(payload["installation"]["id"]),
        "pr_number": int(pr["number"]),
        "base_sha": pr["base"]["sha"],
        "head_sha": pr["head"]["sha"],
    }


def route(event: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """What a delivery asks for: (outcome, job arguments or None). Pure, so it is tested on fixtures.

    Payloads are read as plain JSON, not githubkit's strict models: real deliveries lack fields the
    models require (DESIGN.md §8).
    """
    action = payload.get("action")
    if event == "pull_request":
        pr = payload.get("pull_request") or {}
        if action not in PR_ACTIONS:
            return f"ignored: pull_request.{action}", None
        if pr.get("draft"):
            return "ignored: draft (evaluated when ready for review)", None
        if "installation" not in payload:
            return "ignored: no installation", None
        return "enqueued", _pr_job(payload, pr)
    if event in ("check_run", "check_suite") and action == "rerequested":
        item = payload.get(event) or {}
        prs = item.get("pull_requests") or []
        if not prs or "installation" not in payload:
            return f"ignored: {event}.rerequested without a pull request", None
        pr = prs[0]
        head_sha = item.get("head_sha") or pr["head"]["sha"]
        return "enqueued", _pr_job(payload, {**pr, "head": {"sha": head_sha}})
    if event.startswith("installation"):
        account = (payload.get("installation") or {}).get("account") or {}
        return f"noted: {event}.{action} for {account.get('login', '?')}", None
    return f"ignored: {event}.{action}" if action else f"ignored: {event}", None


def create_app(settings: Settings | None = None, redis: ArqRedis | None = None) -> FastAPI:
    """The FastAPI app of `evalbot serve`; pass `redis` to share a pool (tests)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = redis or await create_pool(RedisSettings.from_dsn(settings.REDIS_URL))
        app.state.redis = pool
        yield
        if redis is None:
            await pool.aclose()

    app = FastAPI(title="evalbot", lifespan=lifespan)

    @app.post("/api/github/webhooks")
    async def webhook(request: Request) -> JSONResponse:
        event = request.headers.get("X-GitHub-Event", "unknown")
        body = await request.body()
        if not settings.WEBHOOK_SECRET:
            return _answer(500, "error: WEBHOOK_SECRET is not set", event)
        if not signature_ok(settings.WEBHOOK_SECRET, body, request.headers.get("X-Hub-Signature-256")):
            return _answer(401, "rejected: missing or wrong X-Hub-Signature-256", event)
        try:
            payload = json.loads(body)
        except ValueError:
            return _answer(400, "rejected: body is not JSON", event)
        if not isinstance(payload, dict):
            return _answer(400, "rejected: body is not a JSON object", event)
        if event == "ping":
            return _answer(200, "pong", event, zen=payload.get("zen"))

        pool: ArqRedis = request.app.state.redis
        delivery = request.headers.get("X-GitHub-Delivery")
        if delivery and not await pool.set(DELIVERY_KEY_PREFIX + delivery, "1", nx=True, ex=DELIVERY_TTL_S):
            return _answer(200, "duplicate delivery", event)
        try:
            outcome, job = route(event, payload)
        except (KeyError, TypeError, ValueError) as exc:
            return _answer(400, f"rejected: payload lacks {exc}", event)
        if job is None:
            return _answer(202, outcome, event)
        job_id = eval_job_id(job["repo"], job["pr_number"], job["head_sha"])
        if payload.get("action") == "rerequested" and delivery:
            job_id += f":rerun:{delivery}"  # a re-run must not be deduped against the first run
        enqueued = await pool.enqueue_job("evaluate_pull_request", _job_id=job_id, **job)
        if enqueued is None:
            return _answer(202, "already queued or done for this head SHA", event, job_id=job_id)
        metrics.JOBS_ENQUEUED.inc()
        log.info("enqueued", job_id=job_id, github_event=event)
        return _answer(202, outcome, event, job_id=job_id)

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        try:
            await request.app.state.redis.ping()
        except Exception as exc:  # any failure to reach Redis means "not ready"
            return JSONResponse({"redis": f"unavailable: {exc}"}, status_code=503)
        return JSONResponse({"redis": "ok"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
