from __future__ import annotations

import time

import pytest

from bot.engine.cache import DiskCache, RedisCache, open_cache
from bot.engine.models import ModelClient, RetryPolicy
from bot.errors import ModelCallError
from tests.conftest import redis_test_url
from tests.stub_llm import Reply, StubLLM

MESSAGES = [{"role": "user", "content": "hello"}]


async def test_429_waits_for_retry_after_then_succeeds(stub: StubLLM) -> None:
    stub.handler = lambda body: Reply(text="hi", prompt_tokens=7, completion_tokens=3)
    stub.fail_next(2, 429, retry_after_s=0.3)
    client = ModelClient(api_base=stub.base_url, retry=RetryPolicy(base_delay_s=0.001), prices={"openai/m": (1.0, 2.0)})
    started = time.perf_counter()
    answer = await client.complete("openai/m", MESSAGES)
    elapsed = time.perf_counter() - started
    assert answer.text == "hi" and (answer.prompt_tokens, answer.completion_tokens) == (7, 3)
    assert answer.cost_usd == pytest.approx((7 * 1.0 + 3 * 2.0) / 1000)
    assert elapsed >= 0.6  # two Retry-After waits of 0.3 s, not the 1 ms backoff
    assert (client.stats.http_requests, client.stats.retries) == (3, 2)
    assert len(stub.requests) == 3


async def test_5xx_is_retried_and_client_errors_are_not(stub: StubLLM) -> None:
    client = ModelClient(api_base=stub.base_url, retry=RetryPolicy(max_attempts=4, base_delay_s=0.001))
    stub.fail_next(3, 503)
    assert (await client.complete("openai/m", MESSAGES)).text == "ok"
    assert len(stub.requests) == 4

    stub.handler = lambda body: Reply(status=400)
    with pytest.raises(ModelCallError, match=r"^openai/m2: HTTP 400: "):
        await client.complete("openai/m2", MESSAGES)
    assert len(stub.requests) == 5  # a bad request is not worth repeating


async def test_timeout_is_retried(stub: StubLLM) -> None:
    calls = []

    def slow_then_fast(body: dict[str, object]) -> Reply:
        calls.append(1)
        return Reply(text="late" if len(calls) == 1 else "fast", delay_s=2.0 if len(calls) == 1 else 0)

    stub.handler = slow_then_fast
    client = ModelClient(api_base=stub.base_url, retry=RetryPolicy(base_delay_s=0.001, timeout_s=0.5))
    assert (await client.complete("openai/m", MESSAGES)).text == "fast"
    assert client.stats.retries == 1


async def test_unknown_price_is_none_not_zero(stub: StubLLM) -> None:
    client = ModelClient(api_base=stub.base_url)
    answer = await client.complete("openai/not-a-priced-model", MESSAGES)
    assert answer.cost_usd is None
    assert client.stats.unpriced == 1 and client.stats.spend_usd == 0
    assert client.cost_usd("gpt-4o-mini", 1000, 1000) == pytest.approx(0.00075)  # litellm's bundled map


async def test_identical_concurrent_requests_share_one_call(stub: StubLLM) -> None:
    import asyncio

    stub.handler = lambda body: Reply(text="shared", delay_s=0.1)
    client = ModelClient(api_base=stub.base_url)
    answers = await asyncio.gather(*(client.complete("openai/m", MESSAGES) for _ in range(5)))
    assert [a.text for a in answers] == ["shared"] * 5
    assert len(stub.requests) == 1 and client.stats.cached == 4


@pytest.mark.parametrize("backend", ["disk", "redis"])
async def test_cached_answer_keeps_measured_latency_and_cost(stub: StubLLM, tmp_path: object, backend: str) -> None:
    if backend == "redis":
        import redis

        redis.Redis.from_url(redis_test_url()).flushdb()
        cache = await open_cache(redis_test_url(), tmp_path / "unused")  # type: ignore[operator]
        assert isinstance(cache, RedisCache)
    else:
        cache = await open_cache("redis://127.0.0.1:1/0", tmp_path / "c")  # type: ignore[operator]
        assert isinstance(cache, DiskCache)
    stub.handler = lambda body: Reply(text="x", delay_s=0.05, prompt_tokens=10, completion_tokens=10)
    prices = {"openai/m": (0.5, 0.5)}
    first = await ModelClient(cache, prices, api_base=stub.base_url).complete("openai/m", MESSAGES, temperature=0)
    second_client = ModelClient(cache, prices, api_base=stub.base_url)
    second = await second_client.complete("openai/m", MESSAGES, temperature=0)
    assert (second.latency_s, second.cost_usd, second.cached) == (first.latency_s, first.cost_usd, True)
    assert second_client.stats.http_requests == 0 and second_client.stats.spend_usd == 0
    # Different parameters are a different request.
    await second_client.complete("openai/m", MESSAGES, temperature=0.5)
    assert len(stub.requests) == 2
    await cache.close()


async def test_a_redis_cache_that_does_not_answer_is_a_miss_not_a_failed_call(stub: StubLLM) -> None:
    import redis.asyncio as redis

    # Nothing listens on port 1: every cache read and write fails as during a Redis restart.
    cache = RedisCache(redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2))
    stub.handler = lambda body: Reply(text="x")
    client = ModelClient(cache, api_base=stub.base_url)
    answers = [await client.complete("openai/m", MESSAGES, sample=i) for i in range(2)]
    assert [(a.text, a.cached) for a in answers] == [("x", False), ("x", False)]
    assert len(stub.requests) == 2 and client.stats.errors == 0
    await cache.close()
