"""Running coroutines together so that one failure stops the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def gather_or_cancel(*awaitables: Awaitable[T]) -> list[T]:
    """Like `asyncio.gather`, but when one fails the others are cancelled before the error goes on.

    Plain gather leaves them running: a crashed evaluation would go on spending on model calls (and
    reporting progress) after its failure was reported. asyncio.TaskGroup would also cancel them, but
    wraps the error in an ExceptionGroup that the callers' messages would then have to unwrap.
    """
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
