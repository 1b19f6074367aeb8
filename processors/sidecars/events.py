"""The seven call events as CloudEvents 1.0, and the worker's event bus that publishes them.

**Events.** Seven of the call facts are published; each becomes a CloudEvent 1.0 (the
``cloudevents`` package's :class:`~cloudevents.core.v1.event.CloudEvent`) whose ``type`` is:

=========================  ==============================================  ======================
event                      CloudEvent ``type``                             from the fact
=========================  ==============================================  ======================
CALL_STARTED               ``com.voicegraph.call.started``                 ``CallStarted``
PARTICIPANT_JOINED         ``com.voicegraph.participant.joined``           ``ParticipantJoined``
TRANSCRIPTION_RECEIVED     ``com.voicegraph.transcription.received``       ``TranscriptReceived``
AGENT_RESPONSE_GENERATED   ``com.voicegraph.agent.response.generated``     ``AgentResponded``
RECORDING_STARTED          ``com.voicegraph.recording.started``            ``RecordingStarted``
ERROR_OCCURRED             ``com.voicegraph.error.occurred``               ``ErrorOccurred``
CALL_ENDED                 ``com.voicegraph.call.ended``                   ``CallEnded``
=========================  ==============================================  ======================

The other facts (``AgentChanged``, ``StateChanged``) stay inside the data tier. Attributes:
``id`` is the fact's idempotency key (``<call_id>:<seq>``: the same fact published twice
has the same ``id``, so a consumer drops the copy), ``source`` the worker's event source
(``/voicegraph`` by default), ``subject`` the call id, ``time`` the fact's wall time,
``datacontenttype`` ``application/json``, and ``data`` the fact's fields (:func:`fact_data`
without ``type``: ``call_id``, ``seq``, ``at_ms``, ``wall`` and the fact's own). On the
wire an event is the JSON structured format (:func:`encode` / :func:`decode`).

**The bus.** One :class:`EventBus` per worker, started with the worker. Each call gets a
:class:`~processors.sidecars.facts.FactSink` from :meth:`EventBus.sink`: its ``offer``
turns the fact into an event and appends it to the bus's bounded queue (microseconds; never
waits, never raises). The bus's own task sends the queue in batches, in order, through one
:class:`EventTransport` (in-process, Redis Streams, Event Grid). A batch the transport
fails to send is kept and sent again (backoff 0.1 s doubling to ``max_backoff_s``), so an
accepted event is delivered at least once (but a batch the service refuses for what it is,
:class:`RejectedEvents`, is dropped, counted in ``rejected`` and logged: it would never go);
while the transport is down the queue fills, and
past ``maxsize`` new events are dropped, counted (``dropped``) and logged, never the ones
already accepted. ``aclose`` sends what is queued within ``close_timeout_s``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from .facts import (
    AgentResponded,
    CallEnded,
    CallStarted,
    ErrorOccurred,
    Fact,
    ParticipantJoined,
    RecordingStarted,
    TranscriptReceived,
    fact_data,
)

__all__ = [
    "AGENT_RESPONSE_GENERATED",
    "CALL_ENDED",
    "CALL_STARTED",
    "ERROR_OCCURRED",
    "EVENT_TYPES",
    "PARTICIPANT_JOINED",
    "RECORDING_STARTED",
    "TRANSCRIPTION_RECEIVED",
    "EventBus",
    "EventTransport",
    "InProcessTransport",
    "RejectedEvents",
    "Subscriber",
    "decode",
    "encode",
    "log_event",
    "to_cloudevent",
]

logger = logging.getLogger(__name__)

CALL_STARTED = "com.voicegraph.call.started"
PARTICIPANT_JOINED = "com.voicegraph.participant.joined"
TRANSCRIPTION_RECEIVED = "com.voicegraph.transcription.received"
AGENT_RESPONSE_GENERATED = "com.voicegraph.agent.response.generated"
RECORDING_STARTED = "com.voicegraph.recording.started"
ERROR_OCCURRED = "com.voicegraph.error.occurred"
CALL_ENDED = "com.voicegraph.call.ended"

#: The fact each event is made from.
EVENT_TYPES: dict[type[Fact], str] = {
    CallStarted: CALL_STARTED,
    ParticipantJoined: PARTICIPANT_JOINED,
    TranscriptReceived: TRANSCRIPTION_RECEIVED,
    AgentResponded: AGENT_RESPONSE_GENERATED,
    RecordingStarted: RECORDING_STARTED,
    ErrorOccurred: ERROR_OCCURRED,
    CallEnded: CALL_ENDED,
}

_FORMAT = JSONFormat()


def to_cloudevent(fact: Fact, source: str = "/voicegraph") -> CloudEvent | None:
    """``fact`` as its CloudEvent, or None for a fact that is not one of the seven events."""
    kind = EVENT_TYPES.get(type(fact))
    if kind is None:
        return None
    data = fact_data(fact)
    del data["type"]
    return CloudEvent({"id": fact.key, "source": source, "type": kind, "subject": fact.call_id,
                       "time": datetime.fromtimestamp(fact.wall, UTC), "datacontenttype": "application/json"},
                      data)


def encode(event: CloudEvent) -> bytes:
    """The event in the CloudEvents JSON structured format."""
    return _FORMAT.write(event)


def decode(body: bytes | str) -> CloudEvent:
    """An event from the JSON structured format (``CloudEventValidationError`` / ``ValueError`` if invalid)."""
    event = _FORMAT.read(None, body)
    assert isinstance(event, CloudEvent)
    return event


class RejectedEvents(Exception):
    """Raised by a transport for a batch the service refused for what it *is* (too large,
    malformed): sending it again would fail again, so the bus drops it, counted and logged."""


class EventTransport(Protocol):
    """Where a worker's events go: one batch at a time, in order; raise to have it sent again
    (:class:`RejectedEvents`: to have it dropped)."""

    async def send(self, events: Sequence[CloudEvent]) -> None:
        """Deliver ``events`` (raise if they may not have been delivered)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


#: An in-process subscriber: called with each event of the types it asked for.
Subscriber = Callable[[CloudEvent], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class _Subscription:
    name: str
    handler: Subscriber
    types: frozenset[str]  # empty: every type


class InProcessTransport:
    """The embedded default: events go to subscribers in this worker (a failing one is logged, skipped)."""

    def __init__(self) -> None:
        self._subs: list[_Subscription] = []
        self.failures = 0

    def subscribe(self, name: str, handler: Subscriber, types: Sequence[str] = ()) -> None:
        """Call ``handler`` with every event whose type is in ``types`` (all when empty)."""
        unknown = set(types) - set(EVENT_TYPES.values())
        if unknown:
            raise ValueError(f"subscriber {name!r}: unknown event types {sorted(unknown)} "
                             f"(known: {sorted(EVENT_TYPES.values())})")
        self._subs.append(_Subscription(name, handler, frozenset(types)))

    async def send(self, events: Sequence[CloudEvent]) -> None:
        for event in events:
            kind = event.get_type()
            for sub in self._subs:
                if sub.types and kind not in sub.types:
                    continue
                try:
                    result = sub.handler(event)
                    if result is not None:
                        await result
                except Exception:  # one subscriber's bug must not stop the others, nor retry forever
                    self.failures += 1
                    logger.exception("event subscriber %s failed on %s %s", sub.name, kind, event.get_id())

    async def aclose(self) -> None:
        return None


def log_event(event: CloudEvent) -> None:
    """A subscriber for config: one log line per event (type, id, subject)."""
    logger.info("event %s %s (call %s)", event.get_type(), event.get_id(), event.get_subject())


class _CallSink:
    """One call's view of the bus (a FactSink): offer converts and queues; aclose waits for its events."""

    __slots__ = ("_bus", "_last")

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._last = 0  # the bus position of this call's last queued event

    def offer(self, fact: Fact) -> None:
        position = self._bus.offer(fact)
        if position:
            self._last = position

    async def aclose(self) -> None:
        await self._bus.wait_sent(self._last)


class EventBus:
    """The worker's event publisher: a bounded queue, one task, one transport (see module docstring)."""

    def __init__(self, transport: EventTransport, *, source: str = "/voicegraph", maxsize: int = 10_000,
                 batch: int = 100, max_backoff_s: float = 5.0, close_timeout_s: float = 5.0) -> None:
        if maxsize < 1 or batch < 1:
            raise ValueError(f"event bus: maxsize and batch must be >= 1 (got {maxsize}, {batch})")
        self.transport = transport
        self.source = source
        self.maxsize = maxsize
        self.batch = batch
        self.max_backoff_s = max_backoff_s
        self.close_timeout_s = close_timeout_s
        self.queued = 0  # events accepted (the position of the last one)
        self.sent = 0  # events the transport took
        self.done = 0  # events sent or rejected: every one before this position has left the queue
        self.dropped = 0  # events refused because the queue was full
        self.send_failures = 0  # failed send attempts (each retried)
        self.rejected = 0  # events the service refused for good (RejectedEvents): dropped
        self._queue: collections.deque[CloudEvent] = collections.deque()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def sink(self) -> _CallSink:
        """A FactSink for one call."""
        return _CallSink(self)

    def offer(self, fact: Fact) -> int:
        """Queue ``fact``'s event (never blocks); its position, or 0 if it is no event or was dropped."""
        event = to_cloudevent(fact, self.source)
        if event is None:
            return 0
        if self._closed:  # the worker is shutting down: nothing would send it
            self.dropped += 1
            logger.warning("event bus closed: %s %s dropped", event.get_type(), event.get_id())
            return 0
        if len(self._queue) >= self.maxsize:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.error("event bus full (%d queued, transport %s): %d events dropped so far",
                             len(self._queue), type(self.transport).__name__, self.dropped)
            return 0
        self._queue.append(event)
        self.queued += 1
        self._wake.set()
        return self.queued

    async def start(self) -> None:
        """Start the sending task (owned here; :meth:`aclose` ends it)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pump(), name="voicegraph:event-bus")

    async def wait_sent(self, position: int, timeout: float | None = None) -> bool:
        """Wait until every event up to ``position`` was sent (False after ``timeout``, default ``close_timeout_s``)."""
        try:
            async with asyncio.timeout(self.close_timeout_s if timeout is None else timeout):
                while self.done < position:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            logger.warning("event bus: %d events still unsent after the close wait", position - self.done)
            return False
        return True

    async def aclose(self) -> None:
        """Send what is queued (bounded wait), stop the task, close the transport; later offers are dropped."""
        self._closed = True
        if self._task is not None:
            await self.wait_sent(self.queued)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue:
            logger.error("event bus closed with %d events unsent", len(self._queue))
        await self.transport.aclose()

    async def _pump(self) -> None:
        backoff = 0.1
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue[i] for i in range(min(self.batch, len(self._queue)))]
            try:
                await self.transport.send(batch)
                self.sent += len(batch)
            except asyncio.CancelledError:
                raise
            except RejectedEvents as exc:
                self.rejected += len(batch)
                logger.error("event bus: %s refused %d events for good (%s); dropped: %s",
                             type(self.transport).__name__, len(batch), exc,
                             ", ".join(e.get_id() for e in batch[:5]) + (" ..." if len(batch) > 5 else ""))
            except Exception as exc:
                self.send_failures += 1
                if self.send_failures == 1 or backoff >= self.max_backoff_s:
                    logger.error("event bus: %s failed to send %d events (%s: %s); retrying in %.1f s",
                                 type(self.transport).__name__, len(batch), type(exc).__name__, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = 0.1
            for _ in batch:
                self._queue.popleft()
            self.done += len(batch)
            self._progress.set()
