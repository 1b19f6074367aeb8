"""Running CPU-heavy work off the event loop, in one bounded executor per process.

Many calls share one loop; a 200 ms model call on it would make every other call miss
its 20 ms audio deadline. So decoding and synthesis run in ``blocking_executor()``,
bounded to the core count so that many calls queue for CPU instead of thrashing it.

``iterate_blocking(factory)`` turns a blocking generator (a TTS engine yielding audio
chunks) into an async iterator. Items cross to the loop as they are made, so the first
chunk is not held back by the rest. Closing the async iterator (a barge-in) stops the
thread at its next chunk boundary and closes the generator there.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["blocking_executor", "iterate_blocking", "shared"]

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_DONE = object()
_shared: dict[object, object] = {}
_shared_lock = threading.Lock()


def shared(key: object, factory: Callable[[], T]) -> T:
    """The process-wide instance for ``key``, made by ``factory()`` on first use.

    For heavy resources every call shares: speech models, voices. Blocking (a model
    load takes up to a second): call it off the loop, through ``run_blocking``. A
    factory that raises caches nothing, so the next call tries again.
    """
    with _shared_lock:
        if key not in _shared:
            _shared[key] = factory()
        return _shared[key]  # type: ignore[return-value]


def blocking_executor() -> ThreadPoolExecutor:
    """The process-wide bounded executor for CPU-heavy work (decoding, synthesis)."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="vg-blocking")
    return _executor


async def iterate_blocking(factory: Callable[[], Iterator[T] | Generator[T, None, None]]) -> AsyncIterator[T]:
    """Yield the items of ``factory()`` run in the blocking executor, as they come."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()

    def produce() -> None:
        iterator = factory()
        try:
            for item in iterator:
                if stop.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, item)
                if stop.is_set():
                    break
        except BaseException as exc:  # handed to the consumer, raised there
            loop.call_soon_threadsafe(queue.put_nowait, _Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    future = loop.run_in_executor(blocking_executor(), produce)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        # The thread notices at its next item; do not wait for it (it may be mid-synthesis).
        future.add_done_callback(_consume_result)


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _consume_result(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
