"""FrameQueue: the bounded queue in front of a node that waits on I/O, and of a tap.

A deque, one getter future and a deque of putter futures, a few times cheaper than
``asyncio.Queue``. Every blocked producer keeps its own future: with fan-in into an
``io_bound`` node several producers can wait on one full queue, and each must be woken
(one shared slot lost all but the last, which hung the call). Two policies:

* ``block`` (main path): ``put`` waits while the queue is above its high-water mark and
  resumes below the low-water mark, so a slow node pushes back on its producer instead of
  buffering without limit.
* ``drop_oldest`` / ``drop_newest`` (taps): ``offer`` never waits; past the bound a data
  frame is dropped and counted. Control frames are never dropped, so a tap always sees
  the end of stream.

``purge(flushed_turn)`` implements the first phase of a flush: queued data of stale
turns is dropped, control frames and turn-less data stay in order.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Literal

from .frames import Frame, FrameClass

__all__ = ["FrameQueue", "Overflow"]

Overflow = Literal["block", "drop_oldest", "drop_newest"]


class FrameQueue:
    """A bounded FIFO of frames with high/low water marks and an overflow policy."""

    __slots__ = (
        "_getter",
        "_items",
        "_putters",
        "dropped",
        "high_mark",
        "low_water",
        "maxsize",
        "overflow",
    )

    def __init__(self, maxsize: int = 256, overflow: Overflow = "block") -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self._items: collections.deque[Frame] = collections.deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.maxsize = maxsize
        self.low_water = max(1, maxsize // 2)
        self.overflow: Overflow = overflow
        self.dropped = 0
        #: The deepest the queue has been: a cheap queue-depth metric.
        self.high_mark = 0

    def __len__(self) -> int:
        return len(self._items)

    def _wake_getter(self) -> None:
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    def _append(self, frame: Frame) -> None:
        items = self._items
        items.append(frame)
        if len(items) > self.high_mark:
            self.high_mark = len(items)
        self._wake_getter()

    async def put(self, frame: Frame) -> None:
        """Append, waiting for room first when the policy is ``block``."""
        if self.overflow != "block":
            self.offer(frame)
            return
        while len(self._items) >= self.maxsize and frame.kind is FrameClass.DATA:
            putter = asyncio.get_running_loop().create_future()
            self._putters.append(putter)
            try:
                await putter
            finally:
                if not putter.done():  # cancelled while waiting: leave no dead entry behind
                    putter.cancel()
        self._append(frame)

    def offer(self, frame: Frame) -> bool:
        """Append without ever waiting; returns False when a frame had to be dropped."""
        items = self._items
        if len(items) >= self.maxsize and frame.kind is FrameClass.DATA:
            if self.overflow == "drop_newest":
                self.dropped += 1
                return False
            for i, old in enumerate(items):  # drop the oldest *data* frame
                if old.kind is FrameClass.DATA:
                    del items[i]
                    self.dropped += 1
                    break
            else:
                self.dropped += 1
                return False
            self._append(frame)
            return False
        self._append(frame)
        return True

    async def get(self) -> Frame:
        """Remove and return the oldest frame, waiting while empty."""
        items = self._items
        while not items:
            self._getter = asyncio.get_running_loop().create_future()
            await self._getter
        frame = items.popleft()
        if self._putters and len(items) <= self.low_water:
            self._wake_putters()
        return frame

    def _wake_putters(self) -> None:
        """Below the low-water mark: wake every blocked producer (each re-checks the bound)."""
        putters = self._putters
        while putters:
            putter = putters.popleft()
            if not putter.done():
                putter.set_result(None)

    def purge(self, flushed_turn: int) -> int:
        """Drop queued data frames of turns ``1..flushed_turn``; return how many."""
        items = self._items
        keep = [f for f in items if not (f.kind is FrameClass.DATA and 0 < f.turn <= flushed_turn)]
        removed = len(items) - len(keep)
        if removed:
            items.clear()
            items.extend(keep)
            if self._putters and len(items) <= self.low_water:
                self._wake_putters()
        return removed
