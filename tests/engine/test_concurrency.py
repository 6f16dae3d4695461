from __future__ import annotations

import asyncio

import pytest

from bot.engine.concurrency import gather_or_cancel


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
