"""githubkit clients: the app (JWT) and an installation (token), metered and retried per ratelimit.py."""

from __future__ import annotations

import hashlib
from typing import Any

from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import GitHubException

from bot.errors import EvalbotError
from bot.github.api import permissions, ratelimit
from bot.github.api.throttle import InstallationThrottle
from bot.github.constants import JOB_MAX_TRIES
from bot.settings import Settings


def _private_key(settings: Settings) -> str:
    if settings.PRIVATE_KEY:
        return settings.PRIVATE_KEY
    if settings.PRIVATE_KEY_PATH:
        return settings.PRIVATE_KEY_PATH.read_text()
    raise EvalbotError("set PRIVATE_KEY or PRIVATE_KEY_PATH to the GitHub App's private key")


# githubkit keeps JWTs by app id, and installation tokens by app id and installation, in one process-wide
# cache: a rotated private key, or another GitHub with the same app id (an Enterprise server, a test's
# fake), would be sent credentials made for the other. One cache per API URL and key.
_caches: dict[tuple[str, str], MemCacheStrategy] = {}


def _cache(settings: Settings) -> MemCacheStrategy:
    key = (settings.GITHUB_API_URL, hashlib.sha256(_private_key(settings).encode()).hexdigest())
    return _caches.setdefault(key, MemCacheStrategy())


def app_auth(settings: Settings) -> AppAuthStrategy:
    if not settings.APP_ID:
        raise EvalbotError("set APP_ID to the GitHub App's id")
    return AppAuthStrategy(settings.APP_ID, _private_key(settings))


def app_client(settings: Settings) -> GitHub[AppAuthStrategy]:
    """A client acting as the app itself (JWT): its webhook deliveries, its installations."""
    return GitHub(
        app_auth(settings),
        base_url=settings.GITHUB_API_URL,
        timeout=30.0,
        auto_retry=True,
        cache_strategy=_cache(settings),
    )


def installation_client(
    settings: Settings, installation_id: int, redis: Any = None
) -> GitHub[AppInstallationAuthStrategy]:
    """A client acting as one installation. githubkit retries 5xx (3 times) and waits out a rate limit
    only while the job has time for it (`ratelimit.retry`); it renews the installation token a minute
    before it expires. Every answer feeds the installation's quota tracker and the request counts; the
    token's answer tells which permissions the installation granted (`permissions.missing_permissions`).
    With `redis` (a worker's), its requests go through the installation's limiter, shared by every job
    of every worker (`throttle.InstallationThrottle`)."""
    transport = None
    if redis is not None:
        transport = InstallationThrottle(redis, installation_id, settings.GITHUB_WRITE_SPACING_S)
    return GitHub(
        app_auth(settings).as_installation(installation_id),
        base_url=settings.GITHUB_API_URL,
        timeout=30.0,
        auto_retry=ratelimit.retry,
        async_transport=transport,
        async_event_hooks={"response": [ratelimit.response_hook(installation_id), permissions.remember_granted]},
        cache_strategy=_cache(settings),
    )


def status_of(exc: GitHubException) -> int:
    """GitHub's HTTP status for a failed request; 500 when there was no answer (a timeout, a refused
    connection)."""
    return int(getattr(getattr(exc, "response", None), "status_code", 500))


def retry_later(exc: GitHubException, ctx: dict[str, Any]) -> bool:
    """Whether arq should run the job again later: GitHub still failing (5xx, or no answer) after
    githubkit's own retries, and tries left. A refusal (4xx) or the last try: a retry cannot help."""
    return status_of(exc) >= 500 and ctx.get("job_try", 1) < JOB_MAX_TRIES
