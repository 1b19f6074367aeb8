"""The bus: messages from the graph to the application, never blocking the stream.

Nodes ``post()`` synchronously; the application reads with ``async for msg in bus`` or
``await bus.get()``. The bus is bounded: when the application does not read, the oldest
messages are dropped and counted, so a forgotten bus can never grow without limit or
stall a call (GStreamer's bus, without its threads).
"""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

__all__ = ["Bus", "Message", "MessageType"]


class MessageType(enum.Enum):
    """What a bus message is about."""

    ERROR = "error"
    WARNING = "warning"
    END_OF_STREAM = "eos"
    STATE_CHANGED = "state"
    METRICS = "metrics"
    EVENT = "event"


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One message: its type, the node it comes from, and a payload."""

    type: MessageType
    source: str
    text: str = ""
    value: float | None = None
    data: object = field(default=None, compare=False)


class Bus:
    """A bounded, non-blocking message queue with optional synchronous watchers."""

    def __init__(self, maxsize: int = 4096) -> None:
        self._messages: collections.deque[Message] = collections.deque(maxlen=maxsize)
        self._waiter: asyncio.Future[None] | None = None
        self._watchers: list[Callable[[Message], None]] = []
        self.dropped = 0

    def watch(self, callback: Callable[[Message], None]) -> None:
        """Call ``callback`` synchronously for every message posted from now on."""
        self._watchers.append(callback)

    def post(self, message: Message) -> None:
        """Post a message; never blocks, never raises."""
        if len(self._messages) == self._messages.maxlen:
            self.dropped += 1
        self._messages.append(message)
        for watcher in self._watchers:
            watcher(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pending(self) -> list[Message]:
        """Take every message posted so far without waiting."""
        out = list(self._messages)
        self._messages.clear()
        return out

    async def get(self) -> Message:
        """Wait for the next message."""
        while not self._messages:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._messages.popleft()

    async def __aiter__(self) -> AsyncIterator[Message]:
        while True:
            yield await self.get()
