"""The web process: verify, dedupe and route GitHub deliveries to arq in milliseconds; health; metrics."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import structlog
from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from githubkit.webhooks import verify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from bot.github import metrics
from bot.github.api.publish import RERUN_ACTION
from bot.github.constants import (
    APPROVAL_CHECK,
    COMMIT_SHA,
    DELIVERY_CLAIM_TTL_S,
    DELIVERY_KEY_PREFIX,
    DELIVERY_TTL_S,
    EVALS_CHECK,
    EVALUATE_JOB,
    HANDLE_COMMAND_JOB,
    HEAD_KEY,
    HEAD_TTL_S,
    MAX_WEBHOOK_BODY_BYTES,
    MERGE_GROUP_JOB,
    MERGE_QUEUE_BRANCH,
    PUBLISH_HEAD_JOB,
    RERUN_HEAD_JOB,
    eval_job_id,
    merge_group_job_id,
)
from bot.github.flows import cancelled, pending
from bot.github.flows.command_line import RERUN_RAW, Command, Refusal, parse_command
from bot.github.state import aborts, approvals
from bot.settings import Settings, get_settings
from bot.web import install as install_web

log = structlog.get_logger(__name__)

PR_ACTIONS = {"opened", "synchronize", "reopened", "ready_for_review"}


def _answer(status: int, outcome: str, event: str, **extra: Any) -> JSONResponse:
    metrics.DELIVERIES.labels(event=event, outcome=outcome).inc()
    return JSONResponse({"outcome": outcome, **extra}, status_code=status)


class BodyTooLarge(Exception):
    """A delivery bigger than GitHub ever sends."""


async def read_body(request: Request, limit: int = MAX_WEBHOOK_BODY_BYTES) -> bytes:
    """The request body, refused past `limit` bytes before it is read whole: by its Content-Length
    when it gives one, and by a running count while it streams (a chunked body has no length).

    Raises:
        BodyTooLarge: the body is, or says it is, longer than `limit`.
    """
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def bearer_ok(expected: str, authorization: str | None) -> bool:
    """`Authorization: Bearer <expected>`, compared in constant time."""
    scheme, _, token = (authorization or "").partition(" ")
    # An empty expected token matches nothing (an unset METRICS_TOKEN is no open door).
    return (
        bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())
    )


def signature_ok(secret: str, body: bytes, signature: str | None) -> bool:
    """Only `X-Hub-Signature-256` counts: a missing one, or a SHA-1 one alone, is refused."""
    if not signature or not signature.startswith("sha256="):
        return False
    return bool(verify(secret, body, signature))


@dataclass(frozen=True)
class Job:
    """An arq job a delivery asks for."""

    function: str
    job_id: str
    kwargs: dict[str, Any]


def _eval_job(payload: dict[str, Any], pr: dict[str, Any], rerun_of: str | None = None) -> Job:
    # No base SHA: the job reads the base branch as it is when it runs.
    kwargs = {
        "repo": payload["repository"]["full_name"],
        "installation_id": int(payload["installation"]["id"]),
        "pr_number": int(pr["number"]),
        "head_sha": pr["head"]["sha"],
    }
    job_id = eval_job_id(kwargs["repo"], kwargs["pr_number"], kwargs["head_sha"])
    # A re-run or a retarget must not be deduped against the first run of the same head SHA.
    return Job(EVALUATE_JOB, job_id + (f":rerun:{rerun_of}" if rerun_of else ""), kwargs)


def _publish_head_job(payload: dict[str, Any], sha: str, key: str) -> Job:
    repo = payload["repository"]["full_name"]
    kwargs = {"repo": repo, "installation_id": int(payload["installation"]["id"]), "head_sha": sha}
    return Job(PUBLISH_HEAD_JOB, f"evalbot:publish:{repo}:{sha}:{key}", kwargs)


def _pull_number(item: dict[str, Any]) -> int | None:
    """The pull request a check run (or suite) belongs to: GitHub's list, empty for a fork's head, else
    the number evalbot put in the check run's `external_id` when it created it."""
    prs = item.get("pull_requests") or []
    if prs:
        return int(prs[0]["number"])
    external = str(item.get("external_id") or "")
    return int(external) if external.isdigit() else None


def _rerun_job(event: str, payload: dict[str, Any], delivery: str | None) -> tuple[str, Job | None]:
    """A "Re-run" in the Checks tab: the clicker's `/eval` of the commit (write access needed, as for a
    comment), or on evalbot/approval its state published again (no evaluation)."""
    item = payload.get(event) or {}
    sha, actor = str(item["head_sha"]), payload["sender"]["login"]
    key = f"rerun:{delivery or item.get('id')}"
    suite = (item.get("check_suite") or {}) if event == "check_run" else item
    queued = MERGE_QUEUE_BRANCH.fullmatch(str(suite.get("head_branch") or ""))
    if queued is not None and (event == "check_suite" or item.get("name") in (EVALS_CHECK, APPROVAL_CHECK)):
        # A merge group's commit (GitHub lists no pull request for it): judged again, both checks
        # published again; its branch names the queue's branch and the group's parent.
        group = {
            "head_sha": sha,
            "base_sha": queued["parent"],
            "base_ref": f"refs/heads/{queued['base']}",
            "head_ref": f"refs/heads/{queued[0]}",
        }
        job = _merge_group_job({**payload, "merge_group": group})
        return "enqueued", Job(job.function, f"{job.job_id}:{key}", job.kwargs)
    if event == "check_run" and item.get("name") == APPROVAL_CHECK:
        return "enqueued", _publish_head_job(payload, sha, key)
    if event == "check_run" and item.get("name") != EVALS_CHECK:
        return f"ignored: check_run.rerequested of {item.get('name')!r}", None
    number = _pull_number(item)
    if number is None and event == "check_suite":
        # The web process does not call GitHub: the job finds the pull request by its head.
        repo = payload["repository"]["full_name"]
        kwargs = {"repo": repo, "installation_id": int(payload["installation"]["id"]), "head_sha": sha, "actor": actor}
        return "enqueued", Job(RERUN_HEAD_JOB, f"evalbot:rerun:{repo}:{sha}:{key}", kwargs)
    if number is None:
        return f"ignored: {event}.rerequested without a pull request", None
    job = _command_job(payload, number, actor, Command("eval", raw=RERUN_RAW), key, None)
    job.kwargs["head_sha"] = sha
    return "enqueued", job


def _retargeted(payload: dict[str, Any]) -> bool:
    return payload.get("action") == "edited" and "base" in (payload.get("changes") or {})


def head_record(event: str, payload: dict[str, Any]) -> tuple[str, dict[str, str]] | None:
    """(key, head and base) a pull request delivery sets, drafts included: a command written before it
    must not act on it."""
    pr = payload.get("pull_request") or {}
    if event != "pull_request" or "installation" not in payload:
        return None
    if payload.get("action") not in PR_ACTIONS and not _retargeted(payload):
        return None
    key = HEAD_KEY.format(repo=payload["repository"]["full_name"], pr=int(pr["number"]))
    return key, {"sha": pr["head"]["sha"], "base": pr["base"]["ref"]}


def _command_job(
    payload: dict[str, Any],
    pr_number: int,
    actor: str,
    parsed: Command | Refusal,
    key: str,
    comment_id: int | None,
    created_at: str | None = None,
) -> Job:
    repo = payload["repository"]["full_name"]
    kwargs: dict[str, Any] = {
        "repo": repo,
        "installation_id": int(payload["installation"]["id"]),
        "pr_number": pr_number,
        "actor": actor,
        "raw": parsed.raw,
        "comment_id": comment_id,
        "created_at": created_at,
    }
    if isinstance(parsed, Refusal):
        kwargs["refusal"] = parsed.reason
    else:
        kwargs["command"] = {k: v for k, v in asdict(parsed).items() if k != "raw"}
    digest = hashlib.sha256(parsed.raw.encode()).hexdigest()[:12]
    return Job(HANDLE_COMMAND_JOB, f"evalbot:cmd:{repo}:{key}:{digest}", kwargs)


def _merge_group_job(payload: dict[str, Any]) -> Job:
    group = payload["merge_group"]
    kwargs = {
        "repo": payload["repository"]["full_name"],
        "installation_id": int(payload["installation"]["id"]),
        "head_sha": str(group["head_sha"]),
        "base_sha": str(group["base_sha"]),
        "base_ref": str(group["base_ref"]),
        "head_ref": str(group["head_ref"]),
    }
    # The SHAs go into API paths: commit SHAs, or the delivery is refused (400).
    for key in ("head_sha", "base_sha"):
        if not COMMIT_SHA.fullmatch(kwargs[key]):
            raise ValueError(f"merge_group.{key} as a commit SHA")
    return Job(MERGE_GROUP_JOB, merge_group_job_id(kwargs["repo"], kwargs["head_sha"]), kwargs)


def _is_bot(user: dict[str, Any]) -> bool:
    return user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]")


def route(event: str, payload: dict[str, Any], delivery: str | None = None) -> tuple[str, Job | None]:
    """What a delivery asks for: (outcome, job or None). Pure, so it is tested on fixtures.

    Payloads are read as plain JSON, not githubkit's strict models: real deliveries lack fields the
    models require (DESIGN.md §8).
    """
    action = payload.get("action")
    if event != "ping" and "installation" not in payload and not event.startswith("installation"):
        return f"ignored: {event}.{action} without an installation", None
    if event == "pull_request":
        pr = payload.get("pull_request") or {}
        retarget = _retargeted(payload)
        if action == "closed":
            # The closed pull request's verdict no longer counts on its head: the others with it may pass now.
            return "enqueued", _publish_head_job(payload, pr["head"]["sha"], delivery or str(pr["number"]))
        if action not in PR_ACTIONS and not retarget:
            return f"ignored: pull_request.{action}", None
        if pr.get("draft"):
            return "ignored: draft (evaluated when ready for review)", None
        # A retarget compares the same head with another base: planned again, as a new run.
        rerun_of = f"base:{delivery or pr['base']['ref']}" if retarget else None
        return "enqueued", _eval_job(payload, pr, rerun_of)
    if event in ("check_run", "check_suite") and action == "rerequested":
        return _rerun_job(event, payload, delivery)
    if event == "check_run" and action == "requested_action":
        run = payload.get("check_run") or {}
        identifier = (payload.get("requested_action") or {}).get("identifier")
        number = _pull_number(run)
        if run.get("name") != EVALS_CHECK or identifier != RERUN_ACTION["identifier"] or number is None:
            return f"ignored: requested action {identifier!r} on {run.get('name')!r}", None
        command = Command("eval", raw="Re-run evals (button)")
        key = f"button:{delivery or run.get('id')}"
        job = _command_job(payload, number, payload["sender"]["login"], command, key, None)
        # The button belongs to its check run's commit: it runs only while that is the head.
        job.kwargs["head_sha"] = run["head_sha"]
        return "enqueued", job
    if event == "issue_comment" and action in ("created", "edited"):
        issue, comment = payload.get("issue") or {}, payload.get("comment") or {}
        if "pull_request" not in issue:
            return "ignored: comment on an issue, not a pull request", None
        if _is_bot(comment.get("user") or {}):
            return "ignored: comment by a bot", None
        parsed = parse_command(comment.get("body") or "")
        if parsed is None:
            return "ignored: no command", None
        if action == "edited":
            before = parse_command(((payload.get("changes") or {}).get("body") or {}).get("from") or "")
            if before is not None and before.raw == parsed.raw:
                return "ignored: the edit left the command as it was", None
        # Who acts is who sent the event: a writer can edit another person's comment, and an approver's
        # old comment edited into `/approve` by someone else must not approve as them.
        actor = (payload.get("sender") or comment.get("user") or {}).get("login", "")
        if action == "edited" and actor != (comment.get("user") or {}).get("login"):
            return "ignored: comment edited by someone other than its author", None
        key = f"comment:{comment['id']}"
        # An edit is a new request: what it saw is the pull request as of the edit.
        when = comment.get("updated_at") if action == "edited" else comment.get("created_at")
        return "enqueued", _command_job(payload, int(issue["number"]), actor, parsed, key, int(comment["id"]), when)
    if event == "merge_group":
        # `destroyed` (merged, dequeued, invalidated) needs no answer: its checks no longer count.
        if action != "checks_requested":
            return f"ignored: merge_group.{action}", None
        return "enqueued", _merge_group_job(payload)
    if event.startswith("installation"):
        account = (payload.get("installation") or {}).get("account") or {}
        return f"noted: {event}.{action} for {account.get('login', '?')}", None
    return f"ignored: {event}.{action}" if action else f"ignored: {event}", None


async def _supersede(pool: ArqRedis, superseded: aborts.Supersede, delivery: str | None) -> None:
    """Abort the pull request's evaluations of older heads; a job closes the check runs they leave open."""
    aborted = await aborts.supersede(pool, superseded)
    if not aborted:
        return
    log.info("evaluations aborted", jobs=sorted(aborted), reason=superseded.reason.title)
    await pool.enqueue_job(
        cancelled.cancel_checks.__name__,
        _job_id=f"evalbot:cancel:{superseded.repo}:{superseded.pr}:{delivery or time.time_ns()}",
        repo=superseded.repo,
        installation_id=superseded.installation_id,
        pr_number=superseded.pr,
        shas=sorted(set(aborted.values())),
        by=superseded.reason.by,
    )


async def _record_head(pool: ArqRedis, key: str, head: dict[str, str]) -> None:
    """When this head and base arrived; a redelivery or a ready-for-review of the same ones keeps the
    first time, so that it does not refuse commands written after the push."""
    raw = await pool.get(key)
    previous = json.loads(raw) if raw else {}
    at = previous["at"] if {k: previous.get(k) for k in head} == head else time.time()
    await pool.set(key, json.dumps({**head, "at": at}), ex=HEAD_TTL_S)


async def _handle(
    pool: ArqRedis, settings: Settings, event: str, payload: dict[str, Any], delivery: str | None
) -> JSONResponse:
    """Route a verified delivery and queue its job; the answer to give GitHub."""
    try:
        outcome, job = route(event, payload, delivery)
        superseded = aborts.superseding(event, payload)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # A signed payload of the wrong shape (a list where an object belongs): refused, not a 500.
        return _answer(400, f"rejected: payload lacks {exc}", event)
    record = head_record(event, payload)
    if record is not None:
        await _record_head(pool, *record)
        pr = payload["pull_request"]
        repo = payload["repository"]["full_name"]
        await approvals.note_pull(pool, repo, record[1]["sha"], int(pr["number"]), record[1]["base"])
        # Before the job is queued, so that its own publication always comes after.
        await pending.hold_checks(pool, settings, payload)
    if superseded is not None:
        await _supersede(pool, superseded, delivery)
    if job is None:
        return _answer(202, outcome, event)
    if job.function == EVALUATE_JOB:
        job = replace(job, job_id=await aborts.fresh_id(pool, job.job_id, delivery or str(time.time_ns())))
        kwargs = job.kwargs
        await aborts.track(pool, kwargs["repo"], kwargs["pr_number"], job.job_id, kwargs["head_sha"])
    enqueued = await pool.enqueue_job(job.function, _job_id=job.job_id, **job.kwargs)
    if enqueued is None:
        return _answer(202, "already queued or done", event, job_id=job.job_id)
    metrics.JOBS_ENQUEUED.inc()
    log.info("enqueued", job_id=job.job_id, github_event=event)
    return _answer(202, outcome, event, job_id=job.job_id)


def create_app(settings: Settings | None = None, redis: ArqRedis | None = None) -> FastAPI:
    """The FastAPI app of `evalbot serve`; pass `redis` to share a pool (tests)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = redis or await create_pool(RedisSettings.from_dsn(settings.REDIS_URL))
        app.state.redis = pool
        await pending.warm_up(settings)
        yield
        if redis is None:
            await pool.aclose()

    app = FastAPI(title="evalbot", lifespan=lifespan)
    # The run and suite pages (bot/web), behind GitHub sign-in.
    install_web(app, settings)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
        # Nothing was queued: a 5xx marks the delivery failed, and its redelivery goes through.
        event = request.headers.get("X-GitHub-Event", "unknown")
        return _answer(503, f"unavailable: Redis does not answer ({type(exc).__name__})", event)

    @app.post("/api/github/webhooks")
    async def webhook(request: Request) -> JSONResponse:
        event = request.headers.get("X-GitHub-Event", "unknown")
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return _answer(413, f"rejected: body over {MAX_WEBHOOK_BODY_BYTES} bytes (GitHub's cap is 25 MB)", event)
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
        # The id is claimed for a short while only, and recorded as seen once the delivery is queued: a
        # delivery answered 5xx half-way (Redis gone after the claim) must not be dropped as a duplicate
        # when GitHub redelivers it.
        key = DELIVERY_KEY_PREFIX + delivery if delivery else None
        if key and not await pool.set(key, "queuing", nx=True, ex=DELIVERY_CLAIM_TTL_S):
            return _answer(200, "duplicate delivery", event)
        try:
            answer = await _handle(pool, settings, event, payload, delivery)
        except BaseException:
            if key:
                with contextlib.suppress(RedisError):
                    await pool.delete(key)
            raise
        if key and answer.status_code < 300:
            await pool.set(key, "queued", ex=DELIVERY_TTL_S)
        elif key:
            await pool.delete(key)
        return answer

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        try:
            await request.app.state.redis.ping()
        except Exception:  # any failure to reach Redis means "not ready"
            # What is down, not why: an exception's text may name hosts, users or paths.
            return JSONResponse({"redis": "unavailable"}, status_code=503)
        return JSONResponse({"redis": "ok"})

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        # Open only on a deployment without a public address (a private network); with PUBLIC_URL set, a
        # token is required, and without METRICS_TOKEN nothing matches it.
        needs_token = bool(settings.METRICS_TOKEN or settings.PUBLIC_URL)
        if needs_token and not bearer_ok(settings.METRICS_TOKEN or "", request.headers.get("Authorization")):
            return JSONResponse(
                {"error": "Authorization: Bearer <METRICS_TOKEN> required"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
