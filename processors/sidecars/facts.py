"""Call facts: what the data tier learns of a call, as small typed records.

A running call is watched (never changed) by one tap that turns its frames and events
into *facts*: the call started, a participant joined, the caller said something, the
agent answered, the agent in charge changed, the call's state changed, a recording
started, an error, the call ended. Every consumer of the data tier reads these and
nothing else: the live-state side-car (Redis), the history writer (SQLite / Cosmos DB),
the event publishers (CloudEvents) and the recorder's bookkeeping.

The contract that keeps the audio path free of storage:

* :meth:`CallFacts.emit` is synchronous, O(number of sinks), and never raises;
* a :class:`FactSink`'s ``offer`` only enqueues (a bounded queue of its own) and never
  blocks or raises; the I/O happens in the sink's own task, behind the call;
* ``aclose`` flushes what a sink accepted, within its own bounded wait, when the call
  (``CallFacts.aclose``) or the worker ends.

Facts are frozen and hold JSON-like values only, so a sink may keep or serialise them as
they are. ``seq`` numbers a call's facts from 1; ``key`` (``"<call_id>:<seq>"``) is the
idempotency key every store and publisher uses, so a replay never duplicates.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

__all__ = [
    "AgentChanged",
    "AgentResponded",
    "CallEnded",
    "CallFacts",
    "CallStarted",
    "ErrorOccurred",
    "Fact",
    "FactSink",
    "ParticipantJoined",
    "RecordingStarted",
    "StateChanged",
    "TranscriptReceived",
    "fact_data",
]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound="Fact")


@dataclass(frozen=True, slots=True, kw_only=True)
class Fact:
    """What every fact carries: the call, its place in the call, and when."""

    call_id: str
    seq: int  # 1, 2, ... per call, in emission order
    at_ms: float  # on the call's clock, since the call started
    wall: float  # Unix time (seconds), for stored timestamps

    @property
    def key(self) -> str:
        """The idempotency key: unique per fact of a call, stable across replays."""
        return f"{self.call_id}:{self.seq}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStarted(Fact):
    """A call began (its graph is running)."""

    caller: str = ""  # the caller's id: a phone number (ACS), or a name given to `voicegraph call`
    callee: str = ""
    pipeline: str = ""
    scenario: str = ""
    transport: str = "local"  # "local" | "acs" | "webrtc" | "replay"
    worker: str = ""  # the worker (host:pid) running the call


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantJoined(Fact):
    """Someone joined the call: the caller, the bot, or a human agent (a transfer)."""

    participant: str
    role: str  # "caller" | "bot" | "agent"


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptReceived(Fact):
    """A final transcript of the caller's words (one per caller turn)."""

    turn: int
    text: str
    agent: str = ""  # the agent in charge when it was heard


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentResponded(Fact):
    """The bot's answer to a turn, once it is over (played out, or cut by the caller)."""

    turn: int
    text: str  # what the bot meant to say
    heard_text: str  # what the caller heard of it (shorter when interrupted)
    interrupted: bool = False
    agent: str = ""
    route: str = ""
    model: str = ""
    deployment: str = ""
    latency_ms: dict[str, float | None] = field(default_factory=dict)  # the report's per-turn latencies
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {"name", "arguments", "result"[, "error"]}


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentChanged(Fact):
    """The agent in charge changed (a handoff, or the entry agent taking the call)."""

    turn: int
    previous: str  # "" for the entry agent
    agent: str
    reason: str = ""
    announced: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged(Fact):
    """The conversation state after a turn: the agent in charge and its slots."""

    turn: int
    agent: str
    slots: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingStarted(Fact):
    """The call is being recorded (locally by the recorder tap, or by ACS)."""

    recording_id: str
    location: str = ""  # a file path, or ACS's recording id
    source: str = "local"  # "local" | "acs"


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorOccurred(Fact):
    """A node or a service failed; ``fatal`` when it ended the call."""

    source: str
    message: str
    fatal: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded(Fact):
    """The call is over. ``report`` is the call's report (``voicegraph call --json``)."""

    reason: str  # how it ended: "eos", "hangup", "transfer", "timeout", "error", ...
    duration_ms: float
    turns: int
    report: dict[str, Any] = field(default_factory=dict)


class FactSink(Protocol):
    """A consumer of facts: enqueue in ``offer`` (never block, never raise), do the I/O later."""

    def offer(self, fact: Fact) -> None:
        """Take one fact; called on the event loop, in the call's hot path."""
        ...

    async def aclose(self) -> None:
        """Flush what was offered (bounded wait) and release the call's resources."""
        ...


def fact_data(fact: Fact) -> dict[str, Any]:
    """A fact as JSON-ready data, with its type name under ``"type"``."""
    data = {f.name: getattr(fact, f.name) for f in dataclasses.fields(fact)}
    data["type"] = type(fact).__name__
    return data


class CallFacts:
    """One call's fact hub: numbers and stamps facts, hands each to every sink."""

    __slots__ = ("_now_ms", "_sinks", "call_id", "emitted", "failed", "seq")

    def __init__(self, call_id: str, sinks: Iterable[FactSink], now_ms: Callable[[], float]) -> None:
        self.call_id = call_id
        self._sinks = list(sinks)
        self._now_ms = now_ms
        self.seq = 0
        self.emitted = 0
        self.failed = 0  # sinks that raised in offer (a bug of theirs; counted and logged, never raised)

    def add_sink(self, sink: FactSink) -> None:
        """Add a consumer for the facts emitted from now on."""
        self._sinks.append(sink)

    def emit(self, kind: type[F], **fields: Any) -> F:
        """Make a fact of ``kind`` with ``fields`` and offer it to every sink."""
        self.seq += 1
        fact = kind(call_id=self.call_id, seq=self.seq, at_ms=round(self._now_ms(), 1), wall=time.time(), **fields)
        self.emitted += 1
        for sink in self._sinks:
            try:
                sink.offer(fact)
            except Exception:  # a sink must not take the call down
                self.failed += 1
                logger.exception("call %s: fact sink %s failed on %s", self.call_id, type(sink).__name__,
                                 type(fact).__name__)
        return fact

    async def aclose(self) -> None:
        """Close every sink (each flushes within its own bounded wait)."""
        for sink in self._sinks:
            try:
                await sink.aclose()
            except Exception:
                self.failed += 1
                logger.exception("call %s: fact sink %s failed to close", self.call_id, type(sink).__name__)
