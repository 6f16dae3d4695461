"""GitHub's rate limits: each installation's quota as its responses report it, the requests a run
costs, githubkit's retries bounded by the time a run has left, and the reason a run stopped gives (its
check run is closed by bot/github/flows/rate_limited.py). No job code: the worker wraps the evaluation
in `counting` (bot/github/worker/liveness.py, `metered`).

GitHub counts every request an installation token makes against the installation's hourly quota
(5,000, up to 12,500) and reports it in `x-ratelimit-limit`, `-remaining` and `-reset` on each answer;
past it, or past a secondary limit, it answers 403 or 429 ("Rate limits for the REST API").
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import structlog
from githubkit.exception import GitHubException, RateLimitExceeded
from githubkit.retry import RETRY_SERVER_ERROR
from githubkit.typing import RetryOption

from bot.github import metrics
from bot.github.api.throttle import THROTTLED_HEADER, is_rate_limited
from bot.github.constants import (
    PROGRESS_MAX_UPDATES,
    RATE_LIMIT_INLINE_WAIT_S,
    RATE_LIMIT_MARGIN_S,
    RATE_LIMIT_RETRIES,
    UNCAPPED_WAIT_S,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Quota:
    """An installation's primary quota as GitHub last reported it."""

    limit: int
    remaining: int
    reset_at: float  # epoch seconds


# Per installation, for this process: jobs of one installation share its quota.
_QUOTAS: dict[int, Quota] = {}


def observe(installation_id: int, headers: httpx.Headers) -> None:
    """Keep the quota an answer reports (answers without the headers change nothing)."""
    try:
        quota = Quota(
            int(headers["x-ratelimit-limit"]),
            int(headers["x-ratelimit-remaining"]),
            float(headers["x-ratelimit-reset"]),
        )
    except (KeyError, ValueError):
        return
    _QUOTAS[installation_id] = quota


def forget_quotas() -> None:
    """Forget every installation's quota (tests: each fake GitHub starts full)."""
    _QUOTAS.clear()


def quota(installation_id: int) -> Quota | None:
    """The installation's quota now; None when unknown or its window has reset since (a full quota)."""
    known = _QUOTAS.get(installation_id)
    return known if known is not None and known.reset_at > time.time() else None


def progress_budget(installation_id: int) -> int:
    """How many progress updates a run may post now: all of PROGRESS_MAX_UPDATES while half the quota
    is left, one down to a fifth, none below (the final result needs the rest)."""
    known = quota(installation_id)
    if known is None or known.remaining >= known.limit / 2:
        return PROGRESS_MAX_UPDATES
    return 1 if known.remaining >= known.limit / 5 else 0


@dataclass
class RunRequests:
    """The GitHub requests one job made, by kind."""

    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


# The running job's count and its time left (None: a job without a time cap). Context variables, so
# the tasks a job starts (progress updates) count towards it.
_RUN: contextvars.ContextVar[RunRequests | None] = contextvars.ContextVar("evalbot_github_run", default=None)
_TIME_LEFT: contextvars.ContextVar[Callable[[], float] | None] = contextvars.ContextVar(
    "evalbot_time_left", default=None
)


def response_hook(installation_id: int) -> Callable[[httpx.Response], Awaitable[None]]:
    """An httpx response hook for an installation's client: every answer (retries and token requests
    too) is counted, and its rate-limit headers kept."""

    async def seen(response: httpx.Response) -> None:
        if THROTTLED_HEADER in response.headers:
            # Answered by the installation's limiter: nothing went to GitHub.
            return
        token = response.request.url.path.endswith("/access_tokens")
        kind = "token" if token else response.request.method.lower()
        metrics.GITHUB_REQUESTS.labels(kind=kind).inc()
        run = _RUN.get()
        if run is not None:
            run.by_kind[kind] = run.by_kind.get(kind, 0) + 1
        if token:
            # Made with the app's JWT: the app's quota, not the installation's.
            return
        observe(installation_id, response.headers)
        if response.status_code in (403, 429):
            await response.aread()
            if is_rate_limited(response):
                metrics.GITHUB_RATE_LIMITED.inc()

    return seen


def retry(exc: GitHubException, retry_count: int) -> RetryOption:
    """githubkit's retry decision: 5xx as githubkit retries them; a rate limit waited out only while
    the wait leaves the job time to finish, so a job never sleeps past its time cap, and an evaluation
    at most RATE_LIMIT_INLINE_WAIT_S (a longer wait ends it, its check completed later)."""
    if isinstance(exc, RateLimitExceeded):
        left = _TIME_LEFT.get()
        allowed_s = UNCAPPED_WAIT_S if left is None else min(RATE_LIMIT_INLINE_WAIT_S, left() - RATE_LIMIT_MARGIN_S)
        if retry_count < RATE_LIMIT_RETRIES and exc.retry_after.total_seconds() <= allowed_s:
            log.warning("GitHub rate limit: waiting", wait_s=exc.retry_after.total_seconds())
            return RetryOption(True, exc.retry_after)
        return RetryOption(False)
    return RETRY_SERVER_ERROR(exc, retry_count)


@contextlib.contextmanager
def counting(time_left: Callable[[], float] | None) -> Iterator[RunRequests]:
    """Count the GitHub requests made inside (tasks started inside too) and bound githubkit's rate-limit
    waits by `time_left` (None: no cap); the count goes to `evalbot_github_requests_per_run` at the end."""
    requests = RunRequests()
    counted, bounded = _RUN.set(requests), _TIME_LEFT.set(time_left)
    try:
        yield requests
    finally:
        _RUN.reset(counted)
        _TIME_LEFT.reset(bounded)
        metrics.GITHUB_REQUESTS_PER_RUN.observe(requests.total)


def reset_at(exc: RateLimitExceeded) -> datetime:
    """When GitHub takes requests again: `x-ratelimit-reset` or `retry-after`, as githubkit read them."""
    return datetime.now(UTC) + exc.retry_after


def reason(exc: RateLimitExceeded, left_s: float | None) -> str:
    """Why a run with `left_s` seconds to its time cap (None: no cap) stopped at a rate limit."""
    at = reset_at(exc).strftime("%H:%M")
    capped = left_s is not None and exc.retry_after.total_seconds() > left_s - RATE_LIMIT_MARGIN_S
    after = ", after this run's time cap" if capped else ""
    return f"GitHub's rate limit for this installation resets at {at} UTC{after}"
