"""`POST /api/feedback`: production feedback on one case of a suite, posted with the repository's
feedback token (`evalbot feedback token`), rate-limited per token, checked against the suite as the
default branch defines it (its row schema included), and kept until the feedback schedule proposes it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from githubkit.exception import GitHubException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.github.api.client import installation_client
from bot.github.flows.feedback import FeedbackRefused, feedback_suite
from bot.store.feedback import Feedback, add_feedback, repository_of_token, token_hash
from bot.store.pages import installation_of
from bot.web.routes import Web

# A feedback record is one case: larger bodies are refused before they are read whole.
MAX_BODY_BYTES = 256 * 1024
RATE_KEY_PREFIX = "evalbot:feedback-rate:"
RATE_WINDOW_S = 60


class FeedbackBody(BaseModel):
    """One case seen in production: the row's input fields, the answer given, and the verdict on it."""

    model_config = ConfigDict(extra="forbid")

    suite: str = Field(min_length=1, max_length=255)
    inputs: dict[str, Any] = Field(min_length=1)
    output: str
    correct: bool
    # The right answer, when the output was wrong (or could be better).
    corrected: str | None = None


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def _body(request: Request) -> bytes | None:
    """The body, or None past MAX_BODY_BYTES (by its Content-Length, or counted as it streams)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _over_rate(request: Request, token: str, limit: int) -> int | None:
    """Seconds until the token may post again when it posted `limit` records in its current window of
    RATE_WINDOW_S (started by its first record); else None. The count is in Redis: every web process
    counts against the same limit."""
    key = RATE_KEY_PREFIX + token_hash(token)
    redis = request.app.state.redis
    # The window and its expiry are set in one command, before the count: a count never outlives it.
    await redis.set(key, 0, ex=RATE_WINDOW_S, nx=True)
    if int(await redis.incr(key)) <= limit:
        return None
    return max(1, int(await redis.ttl(key)))


router = APIRouter()


@router.post("/api/feedback")
async def post_feedback(request: Request) -> JSONResponse:
    web: Web = request.app.state.web
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    token = token.strip()
    repository = await web.build(lambda: repository_of_token(web.store, token)) if scheme.lower() == "bearer" else None
    if repository is None:
        return _error(401, "Authorization: Bearer <feedback token> required (`evalbot feedback token <owner/repo>`)")
    wait = await _over_rate(request, token, web.settings.FEEDBACK_RATE_PER_MINUTE)
    if wait is not None:
        limit = web.settings.FEEDBACK_RATE_PER_MINUTE
        answer = _error(429, f"rate limited: at most {limit} feedback records a minute per token", retry_after_s=wait)
        answer.headers["Retry-After"] = str(wait)
        return answer
    raw = await _body(request)
    if raw is None:
        return _error(413, f"body over {MAX_BODY_BYTES} bytes: post one case per request")
    try:
        body = FeedbackBody.model_validate_json(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors()]
        return _error(422, "invalid feedback", problems=problems)
    installation = await web.build(lambda: installation_of(web.store, repository))
    if installation is None:
        return _error(409, f"evalbot has not run on {repository} yet: install the app there and open a pull request")
    try:
        gh = installation_client(web.settings, installation)
        suite = await feedback_suite(gh, repository, body.suite)
    except FeedbackRefused as exc:
        return _error(exc.status, str(exc))
    except GitHubException:
        return _error(502, "GitHub did not answer while reading the default branch's .evalbot.yml: try again")
    record = Feedback(0, body.suite, body.inputs, body.output, body.correct, body.corrected)
    problems = suite.problems(record)
    if problems:
        return _error(422, f"the feedback does not fit suite {body.suite!r}", problems=problems)
    args = (repository, body.suite, body.inputs, body.output, body.correct, body.corrected)
    feedback_id = await web.build(lambda: add_feedback(web.store, *args))
    confirmed = record.answer is not None
    return JSONResponse({"id": feedback_id, "suite": body.suite, "confirmed": confirmed}, status_code=201)
