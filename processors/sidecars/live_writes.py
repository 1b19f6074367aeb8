"""What each fact and each saved agent state writes to the live state, as commands.

Pure translation (no I/O): :class:`LiveWrites` turns a :class:`~processors.sidecars.facts.Fact`
or an agent state (:class:`AgentStateLike`: the agents' ``AgentState``) into the few
:class:`~processors.sidecars.live_kv.Cmd` s it changes, comparing with this worker's copy so
that only changed fields are written: field updates and appends, each followed by the
``EXPIRE`` of its key (the retention of :class:`~processors.sidecars.live_kv.Retention`),
never a rewrite of the session. :class:`~processors.sidecars.live.LiveState` applies them
to its copy and queues them for Redis.

Stream entries (the transcript, the turns) carry explicit ids (``<wall ms>-<seq>``, kept
increasing per call by a :class:`CallTrack`), so a write Redis receives twice is refused the
second time rather than added again; a worker that takes a call over writes later ids.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .facts import (
    AgentChanged,
    AgentResponded,
    CallEnded,
    CallStarted,
    ErrorOccurred,
    Fact,
    ParticipantJoined,
    RecordingStarted,
    StateChanged,
    TranscriptReceived,
    fact_data,
)
from .live_kv import Cmd, LiveKeys, MemoryKV, Retention, StreamId, newer_id

__all__ = ["MAX_TEXT", "MAX_TRANSCRIPT", "AgentStateLike", "CallTrack", "LiveWrites", "to_json"]

logger = logging.getLogger(__name__)

#: Longest transcript line kept (characters); longer ones are cut, counted and logged.
MAX_TEXT = 8000
#: Transcript entries kept per call (approximately: Redis trims by whole nodes).
MAX_TRANSCRIPT = 2000


_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def to_json(value: Any) -> str:
    """``value`` as compact JSON (keys sorted: the same value is always the same text)."""
    return _ENCODER.encode(value)


class AgentStateLike(Protocol):
    """What the store reads of an agent state: ``agents.engine.AgentState`` (this layer does not
    import the agents; ``agents.memory.StoreShortTerm`` adapts the store to their memory)."""

    agent: str
    slots: dict[str, Any]
    memory: dict[str, Any]
    caller: dict[str, Any]
    failures: dict[str, int]


@dataclass(slots=True)
class CallTrack:
    """What the store remembers of a call it writes: the last fact and stream ids it used, and
    whether it took the call over from another worker."""

    seq: int = 0  # the last fact written (a fact offered again is not written again)
    transcript: StreamId | None = None
    turns: StreamId | None = None
    turn_count: int = 0
    adopted: bool = False


class LiveWrites:
    """The commands of facts and saved states (see module docstring)."""

    def __init__(self, keys: LiveKeys, retention: Retention, worker: str, copy: MemoryKV) -> None:
        self.keys = keys
        self.retention = retention
        self.worker = worker
        self.copy = copy
        self.truncated = 0  # transcript lines cut to MAX_TEXT

    def state(self, call_id: str, state: AgentStateLike, turn: dict[str, Any] | None,
              track: CallTrack) -> list[Cmd]:
        """What saving ``state`` (and ``turn``) writes: the context's and slots' changed fields,
        the turn appended, the session's agent if it changed."""
        keys, life = self.keys, self.retention.context_live_s
        context_key = keys.context(call_id)
        current = self.copy.hgetall(context_key)
        agents: list[str] = json.loads(current.get("agents", "[]"))
        if not agents or agents[-1] != state.agent:
            agents.append(state.agent)
        # Serialised straight from the state: the JSON is the copy (no deepcopy on the hot path).
        fields = {"agent": state.agent, "memory": to_json(state.memory), "caller": to_json(state.caller),
                  "failures": to_json(state.failures), "agents": to_json(agents)}
        changed = {k: v for k, v in fields.items() if current.get(k) != v}
        cmds: list[Cmd] = []
        if changed:
            cmds += [Cmd("HSET", context_key, changed), Cmd("EXPIRE", context_key, life)]
        cmds += self.slots(call_id, state.slots)
        if turn is not None:
            track.turn_count += 1
            track.turns = newer_id(track.turns, int(time.time() * 1000), track.turn_count)
            turns_key = keys.turns(call_id)
            cmds += [Cmd("XADD", turns_key, (track.turns, {"turn": to_json(turn)}, 0)), Cmd("EXPIRE", turns_key, life)]
        session_key = keys.session(call_id)
        if self.copy.hgetall(session_key).get("agent") != state.agent:
            cmds += [Cmd("HSET", session_key, {"agent": state.agent}), Cmd("EXPIRE", session_key,
                                                                              self.retention.session_s)]
        return cmds

    def fact(self, fact: Fact, track: CallTrack) -> list[Cmd]:
        """What ``fact`` writes: field updates of the session, an append to the transcript,
        the slots' changes, or the end; and its message to the live views."""
        keys, keep = self.keys, self.retention
        call_id = fact.call_id
        session_key = keys.session(call_id)
        fields: dict[str, Any] = {"updated_at": f"{fact.wall:.3f}"}
        cmds: list[Cmd] = []
        if isinstance(fact, CallStarted):
            fields.update(call_id=call_id, caller=fact.caller, callee=fact.callee, pipeline=fact.pipeline,
                          scenario=fact.scenario, transport=fact.transport, worker=self.worker, state="live")
            fields["resumed_at" if track.adopted else "started_at"] = f"{fact.wall:.3f}"
            # The index forgets calls started more than a session's life ago as new ones come
            # (their sessions have expired): it never grows past a day of calls.
            cmds += [Cmd("ZADD", keys.index, {call_id: fact.wall}),
                     Cmd("ZREMRANGEBYSCORE", keys.index, fact.wall - keep.session_s),
                     Cmd("EXPIRE", keys.index, keep.session_s)]
        elif isinstance(fact, TranscriptReceived | AgentResponded):
            line = self.line(fact)
            track.transcript = newer_id(track.transcript, int(fact.wall * 1000), fact.seq)
            key = keys.transcript(call_id)
            cmds += [Cmd("XADD", key, (track.transcript, line, MAX_TRANSCRIPT)), Cmd("EXPIRE", key, keep.transcript_s)]
            fields["turn"] = str(fact.turn)
        elif isinstance(fact, AgentChanged):
            fields["agent"] = fact.agent
        elif isinstance(fact, StateChanged):
            fields["agent"] = fact.agent
            cmds += self.slots(call_id, fact.slots)
        elif isinstance(fact, ParticipantJoined):
            fields[f"participant.{fact.role}"] = fact.participant
        elif isinstance(fact, RecordingStarted):
            fields["recording"] = fact.location or fact.recording_id
        elif isinstance(fact, ErrorOccurred):
            fields["last_error"] = f"{fact.source}: {fact.message}"[:500]
        if isinstance(fact, CallEnded):
            others = (keys.context(call_id), keys.slots(call_id), keys.turns(call_id))
            cmds.append(Cmd("END", session_key, (self.worker, f"{fact.wall:.3f}", fact.reason,
                                                 keep.context_after_end_s, *others)))
        else:
            cmds = [Cmd("HSET", session_key, fields), Cmd("EXPIRE", session_key, keep.session_s), *cmds]
        data = fact_data(fact)
        data.pop("report", None)  # a view wants to know the call ended, not its whole report
        cmds.append(Cmd("PUBLISH", keys.channel(call_id), to_json(data)))
        return cmds

    def line(self, fact: TranscriptReceived | AgentResponded) -> dict[str, str]:
        """The transcript entry of a caller's or the bot's words (cut to ``MAX_TEXT``, counted)."""
        text = fact.text if isinstance(fact, TranscriptReceived) else fact.heard_text
        if len(text) > MAX_TEXT:
            self.truncated += 1
            logger.warning("call %s turn %d: a transcript line of %d characters, kept the first %d",
                           fact.call_id, fact.turn, len(text), MAX_TEXT)
            text = text[:MAX_TEXT]
        line = {"role": "caller" if isinstance(fact, TranscriptReceived) else "bot", "turn": str(fact.turn),
                "text": text, "agent": fact.agent, "at_ms": f"{fact.at_ms:.1f}", "seq": str(fact.seq)}
        if isinstance(fact, AgentResponded) and fact.interrupted:
            line["interrupted"] = "1"
        return line

    def slots(self, call_id: str, slots: Mapping[str, Any]) -> list[Cmd]:
        """The slots' changes against this worker's copy: changed fields set, gone ones deleted."""
        key = self.keys.slots(call_id)
        current = self.copy.hgetall(key)
        wanted = {name: to_json(value) for name, value in slots.items()}
        changed = {k: v for k, v in wanted.items() if current.get(k) != v}
        gone = tuple(k for k in current if k not in wanted)
        cmds: list[Cmd] = []
        if changed:
            cmds.append(Cmd("HSET", key, changed))
        if gone:
            cmds.append(Cmd("HDEL", key, gone))
        if cmds:
            cmds.append(Cmd("EXPIRE", key, self.retention.context_live_s))
        return cmds

