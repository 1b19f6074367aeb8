"""Clocks: the real monotonic one, and a virtual one for tests.

Everything that paces itself (audio sources, playout sinks) asks a ``Clock`` for the time
and sleeps on it, so tests drive time by hand instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock", "VirtualClock"]


class Clock(Protocol):
    """A monotonic clock in nanoseconds that can be slept on."""

    def now_ns(self) -> int:
        """Current time in nanoseconds."""
        ...

    async def sleep_until(self, deadline_ns: int) -> None:
        """Return once ``now_ns() >= deadline_ns``."""
        ...


class MonotonicClock:
    """``time.monotonic_ns`` and ``asyncio.sleep``: the clock of real calls."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    async def sleep_until(self, deadline_ns: int) -> None:
        delay = deadline_ns - time.monotonic_ns()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)


class VirtualClock:
    """A clock that moves only when a test says so.

    ``sleep_until`` parks the caller on a future; ``advance()`` moves time forward and
    wakes every sleeper whose deadline has passed, in deadline order, letting each run
    before the next one is woken.
    """

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now_ns(self) -> int:
        return self._now

    async def sleep_until(self, deadline_ns: int) -> None:
        if deadline_ns <= self._now:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline_ns, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many tasks are parked on this clock."""
        return sum(1 for *_, f in self._sleepers if not f.done())

    async def advance(self, delta_ns: int) -> None:
        """Move time forward by ``delta_ns``, waking due sleepers one deadline at a time."""
        target = self._now + delta_ns
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not fut.done():
                fut.set_result(None)
                await _settle()
        self._now = target
        await _settle()


async def _settle(rounds: int = 20) -> None:
    """Let woken tasks run until they park again (bounded, no wall-clock sleeping)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
