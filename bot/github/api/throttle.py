"""One request limiter per installation, shared by every job of every worker through Redis, as GitHub's
"Best practices for using the REST API" ask: writes (POST, PATCH, PUT, DELETE) one at a time with at
least `GITHUB_WRITE_SPACING_S` (a second) between them, and once one request is rate limited, none of
the installation's requests until GitHub's hint has passed: `retry-after`, or `x-ratelimit-reset` when
`x-ratelimit-remaining` is 0; with neither (a bare 429, a 403 that names a secondary limit) at least a
minute, doubling while the limits go on.

It is an httpx transport under the installation's githubkit client. A request made while the
installation is blocked never reaches GitHub: it is answered here, 429 with the block's `retry-after`,
so githubkit's rate-limit handling (`ratelimit.retry`) and the jobs' own (a deferred completion of the
check) treat it as GitHub's. A hint-less limit is given its back-off as `retry-after` on the way up, for
the same reason: githubkit takes a 403 or 429 without hints for a plain refusal.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import structlog
from redis.exceptions import RedisError

from bot.github.constants import (
    SECONDARY_FIRST_WAIT_S,
    SECONDARY_MAX_WAIT_S,
    THROTTLE_KEY,
    THROTTLE_TTL_S,
    WRITE_LEASE_S,
)

log = structlog.get_logger(__name__)

MUTATIVE = frozenset({"POST", "PATCH", "PUT", "DELETE"})
# Set on an answer made here for a blocked installation: no request went to GitHub (not counted).
THROTTLED_HEADER = "x-evalbot-throttled"

# Redis's clock, so workers on several machines agree on "blocked until" and "a second since".
_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6"

# ARGV: write (1/0), spacing s, token, lease s, ttl s. Returns {"blocked", s left} | {"wait", s} | {"go", 0}.
_ACQUIRE = f"""
{_NOW}
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked_until') or '0')
if blocked > now then return {{'blocked', tostring(blocked - now)}} end
if ARGV[1] == '0' then return {{'go', '0'}} end
local lease = tonumber(redis.call('HGET', KEYS[1], 'writer_until') or '0')
if lease > now then return {{'wait', tostring(math.min(lease - now, tonumber(ARGV[2]) / 4 + 0.01))}} end
local ready = tonumber(redis.call('HGET', KEYS[1], 'last_write') or '0') + tonumber(ARGV[2])
if ready > now then return {{'wait', tostring(ready - now)}} end
redis.call('HSET', KEYS[1], 'writer', ARGV[3], 'writer_until', tostring(now + tonumber(ARGV[4])))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return {{'go', '0'}}
"""

# A write has been answered: the next may go a spacing from now. ARGV: token.
_RELEASE = f"""
{_NOW}
if redis.call('HGET', KEYS[1], 'writer') == ARGV[1] then redis.call('HDEL', KEYS[1], 'writer', 'writer_until') end
redis.call('HSET', KEYS[1], 'last_write', tostring(now))
return 1
"""

# A limited answer: block the installation. ARGV: wait s ('' when GitHub gave no hint), first back-off s,
# longest back-off s, ttl s. A hint-less limit while the last one's back-off is still remembered (its
# wait again after it ended) doubles the back-off. Returns the block's seconds left.
_BLOCK = f"""
{_NOW}
local wait = tonumber(ARGV[1])
if wait == nil then
  local strikes = tonumber(redis.call('HGET', KEYS[1], 'strikes') or '0')
  if tonumber(redis.call('HGET', KEYS[1], 'strikes_until') or '0') < now then strikes = 0 end
  wait = math.min(tonumber(ARGV[2]) * 2 ^ strikes, tonumber(ARGV[3]))
  redis.call('HSET', KEYS[1], 'strikes', tostring(strikes + 1), 'strikes_until', tostring(now + 2 * wait))
end
local blocked = math.max(now + wait, tonumber(redis.call('HGET', KEYS[1], 'blocked_until') or '0'))
redis.call('HSET', KEYS[1], 'blocked_until', tostring(blocked))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]) + math.ceil(blocked - now))
return tostring(blocked - now)
"""


def limit_hint_s(response: httpx.Response) -> float | None:
    """How long GitHub asked to wait after this limited answer: `retry-after`, else the reset when no
    quota is left; None when it gave no hint."""
    if "retry-after" in response.headers:
        return float(response.headers["retry-after"])
    if response.headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in response.headers:
        return max(0.0, float(response.headers["x-ratelimit-reset"]) - time.time())
    return None


def is_rate_limited(response: httpx.Response) -> bool:
    """A rate limit as GitHub answers it: any 429; a 403 with a hint, or whose message names a rate limit
    ("You have exceeded a secondary rate limit", "API rate limit exceeded for installation ID …")."""
    if response.status_code == 429:
        return True
    if response.status_code != 403:
        return False
    if limit_hint_s(response) is not None:
        return True
    try:
        message = str(json.loads(response.content).get("message", ""))
    except (ValueError, AttributeError):
        return False
    return "rate limit" in message.lower()


class _ClosingStream(httpx.AsyncByteStream):
    """A response's body that closes the transport it came from once read."""

    def __init__(self, stream: httpx.AsyncByteStream, transport: httpx.AsyncBaseTransport):
        self._stream = stream
        self._transport = transport

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            await self._transport.aclose()


async def _send(request: httpx.Request) -> httpx.Response:
    """Send `request` on a transport of its own, closed with its response. githubkit opens an httpx
    client per request and closes the transport with it, while other requests of the same client may be
    in flight: one shared transport would be closed under them."""
    transport = httpx.AsyncHTTPTransport()
    try:
        raw = await transport.handle_async_request(request)
    except BaseException:
        await transport.aclose()
        raise
    stream = _ClosingStream(raw.stream, transport)  # type: ignore[arg-type]
    return httpx.Response(raw.status_code, headers=raw.headers, stream=stream, extensions=raw.extensions)


class InstallationThrottle(httpx.AsyncBaseTransport):
    """The transport of one installation's client: requests go to GitHub only while the installation is
    not blocked, and writes one at a time, `spacing_s` apart (from the previous write's answer)."""

    def __init__(self, redis: Any, installation_id: int, spacing_s: float):
        self._redis = redis
        self._key = THROTTLE_KEY.format(installation=installation_id)
        self._installation_id = installation_id
        self._spacing_s = spacing_s

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # The token request is the app's (its JWT and quota), not the installation's.
        if request.url.path.endswith("/access_tokens"):
            return await _send(request)
        write = request.method in MUTATIVE
        token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        try:
            blocked_s = await self._acquire(write, token)
        except RedisError as exc:
            # Redis restarting: GitHub is asked anyway (its own limits still answer); nothing is shared.
            log.warning("GitHub request not throttled", installation=self._installation_id, error=type(exc).__name__)
            return await _send(request)
        if blocked_s is not None:
            return _blocked(request, blocked_s)
        try:
            response = await _send(request)
        finally:
            if write:
                await self._redis_quietly(_RELEASE, token)
        if response.status_code in (403, 429):
            await response.aread()
            if is_rate_limited(response):
                await self._block(response)
        elif response.headers.get("x-ratelimit-remaining") == "0":
            # The quota's last request: none more until the reset.
            await self._block(response)
        return response

    async def _acquire(self, write: bool, token: str) -> float | None:
        """Wait for the installation's turn; the seconds it stays blocked, or None when the request may go."""
        args = ("1" if write else "0", self._spacing_s, token, WRITE_LEASE_S, THROTTLE_TTL_S)
        while True:
            state, seconds = await self._redis.eval(_ACQUIRE, 1, self._key, *args)
            state = state.decode() if isinstance(state, bytes) else state
            if state == "go":
                return None
            if state == "blocked":
                return float(seconds)
            await asyncio.sleep(float(seconds))

    async def _block(self, response: httpx.Response) -> None:
        hint = limit_hint_s(response)
        args = ("" if hint is None else hint, SECONDARY_FIRST_WAIT_S, SECONDARY_MAX_WAIT_S, THROTTLE_TTL_S)
        left = await self._redis_quietly(_BLOCK, *args)
        if hint is None and response.status_code in (403, 429):
            # githubkit reads `retry-after`: without it the limit would be taken for a refusal.
            wait_s = float(left) if left is not None else SECONDARY_FIRST_WAIT_S
            response.headers["retry-after"] = str(math.ceil(wait_s))
        log.warning(
            "GitHub rate limit: installation blocked",
            installation=self._installation_id,
            status=response.status_code,
            wait_s=response.headers.get("retry-after") if hint is None else hint,
        )

    async def _redis_quietly(self, script: str, *args: Any) -> Any:
        try:
            return await self._redis.eval(script, 1, self._key, *args)
        except RedisError as exc:
            log.warning("GitHub throttle not updated", installation=self._installation_id, error=type(exc).__name__)
            return None


def _blocked(request: httpx.Request, seconds: float) -> httpx.Response:
    """The answer for a request of a blocked installation, as GitHub would give it: 429 with `retry-after`."""
    retry_after = str(max(1, math.ceil(seconds)))
    body = {"message": f"evalbot: this installation is rate limited for {retry_after} s more (not sent)"}
    headers = {"retry-after": retry_after, THROTTLED_HEADER: "1", "content-type": "application/json"}
    return httpx.Response(429, headers=headers, content=json.dumps(body).encode(), request=request)
