from __future__ import annotations

import asyncio

import pytest

from bot.engine.concurrency import FairLimiter, gather_or_cancel, map_bounded, shared_limiter


async def test_results_in_order() -> None:
    async def value(x: int) -> int:
        await asyncio.sleep(0.01 * (3 - x))
        return x

    assert await gather_or_cancel(value(1), value(2), value(3)) == [1, 2, 3]


async def test_a_failure_cancels_the_others_before_it_is_raised() -> None:
    finished: list[str] = []
    cancelled: list[str] = []

    async def slow() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise
        finished.append("slow")
        return "slow"

    async def broken() -> str:
        await asyncio.sleep(0.01)
        raise RuntimeError("grader crashed")

    with pytest.raises(RuntimeError, match="grader crashed"):
        await gather_or_cancel(slow(), broken())
    assert cancelled == ["slow"] and finished == []


async def test_fair_limiter_alternates_between_owners_and_keeps_order_within_one() -> None:
    limiter = FairLimiter(1)
    granted: list[str] = []
    release = asyncio.Event()

    async def call(owner: str, i: int) -> None:
        async with limiter.slot(owner):
            granted.append(f"{owner}{i}")
            await release.wait()
            release.clear()

    tasks = [asyncio.create_task(call("a", i)) for i in range(4)]
    tasks += [asyncio.create_task(call("b", i)) for i in range(3)]
    await asyncio.sleep(0)
    while len(granted) < 7 or not all(t.done() for t in tasks):
        release.set()
        await asyncio.sleep(0.001)
    assert granted == ["a0", "a1", "b0", "a2", "b1", "a3", "b2"]


async def test_fair_limiter_gives_on_a_slot_whose_waiter_was_cancelled() -> None:
    limiter = FairLimiter(1)
    holder_may_go = asyncio.Event()
    order: list[str] = []

    async def hold() -> None:
        async with limiter.slot("a"):
            await holder_may_go.wait()

    async def wait(name: str) -> None:
        async with limiter.slot(name):
            order.append(name)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(wait("b"))
    later = asyncio.create_task(wait("c"))
    await asyncio.sleep(0)
    cancelled.cancel()
    holder_may_go.set()
    await asyncio.gather(holder, later)
    assert cancelled.cancelled() and order == ["c"]


async def test_shared_limiter_is_one_per_provider_and_limit() -> None:
    assert shared_limiter("openai", 4) is shared_limiter("openai", 4)
    assert shared_limiter("openai", 4) is not shared_limiter("anthropic", 4)
    assert shared_limiter("openai", 4).limit == 4 and shared_limiter("openai", 8).limit == 8


async def test_map_bounded_keeps_order_and_never_runs_more_than_the_limit() -> None:
    running = peak = 0

    async def double(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (x % 3))
        running -= 1
        return 2 * x

    assert await map_bounded(double, list(range(20)), 4) == [2 * x for x in range(20)]
    assert peak == 4


async def test_map_bounded_cancels_the_rest_when_one_fails() -> None:
    started: list[int] = []

    async def work(x: int) -> int:
        started.append(x)
        if x == 1:
            raise ValueError("boom")
        await asyncio.sleep(1)
        return x

    with pytest.raises(ValueError, match="boom"):
        await map_bounded(work, list(range(10)), 2)
    assert started == [0, 1]  # the failure stopped the items not yet started
