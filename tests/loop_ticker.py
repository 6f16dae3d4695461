"""How long work held the event loop: a ticker beside it, timed in the loop thread's own CPU.

A wall-clock gap between ticks grows whenever the machine is busy (the process waits for a core, a
thread holds the GIL); the CPU the loop thread spent between two ticks does not: it is the time the
loop itself ran something else, which is what a stalled heartbeat would feel. Tests bound that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Ticks:
    count: int
    # The most CPU the loop thread spent between two ticks (seconds).
    longest_busy_s: float


async def ticking(work: Awaitable[T], tick_s: float = 0.005) -> tuple[T, Ticks]:
    """Run `work` beside a coroutine that ticks every `tick_s`: its result, and what the ticks saw."""
    busy: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.thread_time()
        while not done.is_set():
            await asyncio.sleep(tick_s)
            now = time.thread_time()
            busy.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(tick_s * 2)  # the ticker is running before the work starts
    try:
        result = await work
    finally:
        done.set()
        await task
    return result, Ticks(len(busy), max(busy))
