"""Running coroutines together: one failure stops the rest; a shared, fair limit on calls in flight."""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

A = TypeVar("A")
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


async def map_bounded(fn: Callable[[A], Awaitable[T]], items: Sequence[A], limit: int) -> list[T]:
    """`fn` over `items`, at most `limit` running at once; results in order; one failure cancels the rest.

    A run of thousands of cases then holds `limit` coroutines, not one per case (a few KB each) while
    the provider's slots let a few dozen calls through: a worker runs several such runs at once.
    """
    results: list[Any] = [None] * len(items)
    pending = iter(enumerate(items))

    async def work() -> None:
        for index, item in pending:  # shared: each worker takes the next item as it frees up
            results[index] = await fn(item)

    await gather_or_cancel(*(work() for _ in range(min(limit, len(items)))))
    return results


class FairLimiter:
    """At most `limit` holders at once; waiting callers are served round-robin between owners, in
    order within one owner.

    One evaluation queues all its calls at once: a plain FIFO semaphore would run the first job's
    thousands of calls before the second job's first, so the second would starve for minutes.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._active = 0
        # Owners with callers waiting, in turn order; the owner served last moves to the end.
        self._waiting: dict[object, deque[asyncio.Future[None]]] = {}

    @asynccontextmanager
    async def slot(self, owner: object) -> AsyncIterator[None]:
        """Hold one of the `limit` slots while the block runs; `owner` (a job) is whose turn it is."""
        await self._acquire(owner)
        try:
            yield
        finally:
            self._active -= 1
            self._wake()

    async def _acquire(self, owner: object) -> None:
        if self._active < self.limit and not self._waiting:
            self._active += 1
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(owner, deque()).append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                # Cancelled just after being granted a slot: give it on.
                self._active -= 1
                self._wake()
            raise

    def _wake(self) -> None:
        while self._active < self.limit and self._waiting:
            owner = next(iter(self._waiting))
            queue = self._waiting.pop(owner)
            granted = queue.popleft()
            if queue:
                self._waiting[owner] = queue
            if not granted.done():  # a cancelled waiter is skipped
                self._active += 1
                granted.set_result(None)


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], FairLimiter]] = (
    weakref.WeakKeyDictionary()
)


def shared_limiter(provider: str, limit: int) -> FairLimiter:
    """The process's one limiter for `provider` at `limit` calls in flight (per event loop).

    Every evaluation in a worker shares it, so that jobs running together stay within the provider's
    budget instead of each taking `limit` calls of its own.
    """
    per_loop = _limiters.setdefault(asyncio.get_running_loop(), {})
    key = (provider, limit)
    if key not in per_loop:
        per_loop[key] = FairLimiter(limit)
    return per_loop[key]
