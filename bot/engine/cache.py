"""Content-addressed response cache: Redis when it answers, a local disk cache otherwise."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

import structlog

log = structlog.get_logger(__name__)

KEY_PREFIX = "evalbot:cache:v1:"
# A cached answer is kept a month: long enough for a pull request's re-runs, short enough to age out.
TTL_S = 30 * 24 * 3600


class ResponseCache(Protocol):
    name: str

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def set(self, key: str, value: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


def cache_key(kind: str, model: str, payload: dict[str, Any]) -> str:
    """The content address of a request: same model, messages and parameters, same key."""
    canonical = json.dumps({"kind": kind, "model": model, **payload}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class RedisCache:
    """Redis as the cache. A cache that does not answer (a restart, a timeout under load) is a miss, never
    a failed evaluation: the run goes on calling models and stores answers again once Redis is back."""

    name = "redis"

    def __init__(self, client: Any):
        self._client = client

    async def get(self, key: str) -> dict[str, Any] | None:
        from redis.exceptions import RedisError

        try:
            raw = await self._client.get(KEY_PREFIX + key)
        except (RedisError, OSError) as exc:
            log.warning("response cache unavailable, calling the model", error=type(exc).__name__)
            return None
        return None if raw is None else dict(json.loads(raw))

    async def set(self, key: str, value: dict[str, Any]) -> None:
        from redis.exceptions import RedisError

        try:
            await self._client.set(KEY_PREFIX + key, json.dumps(value), ex=TTL_S)
        except (RedisError, OSError) as exc:
            log.warning("response cache unavailable, answer not kept", error=type(exc).__name__)

    async def close(self) -> None:
        await self._client.aclose()


class DiskCache:
    name = "disk"

    def __init__(self, directory: Path):
        import diskcache

        directory.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(str(directory))

    async def get(self, key: str) -> dict[str, Any] | None:
        # SQLite reads of a few KB take microseconds: not worth a thread hop per call.
        value = self._cache.get(key)
        return None if value is None else dict(value)

    async def set(self, key: str, value: dict[str, Any]) -> None:
        self._cache.set(key, value, expire=TTL_S)

    async def close(self) -> None:
        self._cache.close()


async def open_cache(redis_url: str | None, directory: Path) -> ResponseCache:
    """Redis at `redis_url` when it answers a PING within a second, else the disk cache in `directory`."""
    if redis_url:
        import redis.asyncio as redis

        client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=5)
        try:
            await client.ping()
        except (redis.RedisError, OSError) as exc:
            log.info("redis unavailable, using the disk cache", redis_url=redis_url, error=str(exc))
            await client.aclose()
        else:
            return RedisCache(client)
    return DiskCache(directory)
