"""History documents: a call's facts folded into the records the history store keeps.

Pure and synchronous: :class:`CallRecordBuilder` takes one call's facts in order and
returns *operations* (:data:`Op`, plain JSON) that the writer applies to a store, spools
to its journal when the store is down, and replays later. Every operation is idempotent:

* ``{"op": "upsert", "container": C, "doc": D}`` writes document ``D`` (its ``id`` and
  partition key field inside) whole, so writing it twice leaves one document;
* ``{"op": "remember", "caller_id": X, "profile": P, "call": S}`` merges ``P`` into the
  caller's profile and puts the call summary ``S`` in their past calls *by its
  call_id* (:func:`merge_profile`), so a replay changes nothing.

The containers (the same names in SQLite and Cosmos DB), their partition keys and
retention (the architecture's: call records and transcripts 7 years, agent performance
2 years, profiles indefinite):

* ``calls``: one document per call (``id`` from the call id, partition ``/call_id``):
  metadata, participants, agents and handoffs, recordings, errors, the final state,
  the outcome; written when the call starts (``status: "active"``) and when it ends.
* ``transcripts``: one document per caller transcript or bot answer (``id`` from the
  fact's key, partition ``/call_id``): turn, role, text (and for the bot: what was
  heard, interrupted, agent, route/model/deployment, per-turn latencies, tool calls),
  ``at_ms`` on the call's clock and ``wall`` (Unix seconds). Written as the call goes,
  so a worker that dies mid-call leaves the transcript up to that point.
* ``agent_performance``: one document per agent per call (partition ``/agent``).
* ``profiles``: one document per caller (partition ``/caller_id``): ``profile`` and
  ``calls`` (summaries, oldest first, the last :data:`MAX_PAST_CALLS`).

Texts longer than :data:`MAX_TEXT` characters are cut (``"truncated": <original
length>`` on the document), and so are tool arguments and results longer than that as
JSON (``{"truncated": <length>}`` in their place), so a runaway transcript or tool never
makes a document the store refuses; the builder counts them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import statistics
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

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
)

__all__ = ["CONTAINERS", "MAX_PAST_CALLS", "MAX_TEXT", "CallRecordBuilder", "Container", "Op", "doc_id",
           "merge_profile"]

Op = dict[str, Any]

DAY_S = 86_400
MAX_TEXT = 16_000  # characters of one utterance; far above any real turn, far below Cosmos's 2 MB item
MAX_PAST_CALLS = 100  # summaries kept in a profile: enough for an agent to say "last time..."
MAX_ERRORS = 50  # errors kept in a call record (the rest are counted)
_MAX_ID = 200  # Cosmos ids are at most 255 characters


@dataclass(frozen=True, slots=True)
class Container:
    """A container of the history store: its partition key field and default TTL (None: forever)."""

    name: str
    partition_key: str  # a field of every document, e.g. "call_id"
    ttl_s: int | None


CONTAINERS: dict[str, Container] = {c.name: c for c in (
    Container("calls", "call_id", 7 * 365 * DAY_S),
    Container("transcripts", "call_id", 7 * 365 * DAY_S),
    Container("agent_performance", "agent", 2 * 365 * DAY_S),
    Container("profiles", "caller_id", None),
)}


def doc_id(*parts: str) -> str:
    """A document id from ``parts``, safe in every store.

    Cosmos DB refuses ``/ \\ ? #`` in ids and ids over 255 characters; call ids come from
    outside (an ACS correlation id, a name on the command line), so they are
    percent-encoded, and a very long one is shortened to a prefix plus its SHA-256.
    """
    text = ":".join(quote(part, safe="@+-_.~=,;!$&'()*") for part in parts)
    if len(text) <= _MAX_ID:
        return text
    return f"{text[:120]}~{hashlib.sha256(text.encode()).hexdigest()}"


def merge_profile(doc: dict[str, Any] | None, caller_id: str, profile: dict[str, Any],
                  call: dict[str, Any], wall: float) -> dict[str, Any]:
    """The caller's profile document after ``remember(caller_id, profile, call)``.

    ``profile`` is merged key by key; ``call`` (a summary) replaces the past call of the
    same ``call_id`` or is appended; the last :data:`MAX_PAST_CALLS` are kept. Applying
    the same arguments twice gives the same document (replays are idempotent).
    """
    merged: dict[str, Any] = {"id": doc_id(caller_id), "caller_id": caller_id, "profile": {}, "calls": []}
    if doc:
        merged["profile"] = dict(doc.get("profile") or {})
        merged["calls"] = list(doc.get("calls") or [])
    merged["profile"].update(profile)
    if call:
        key = call.get("call_id")
        calls: list[dict[str, Any]] = merged["calls"]
        for index, past in enumerate(calls):
            if key is not None and past.get("call_id") == key:
                calls[index] = {**past, **call}
                break
        else:
            calls.append(dict(call))
        merged["calls"] = calls[-MAX_PAST_CALLS:]
    merged["updated"] = max(wall, float(doc.get("updated", 0.0)) if doc else 0.0)
    return merged


def _upsert(container: str, doc: dict[str, Any]) -> Op:
    return {"op": "upsert", "container": container, "doc": doc}


@dataclass(slots=True)
class _AgentStats:
    turns: int = 0
    interrupted: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    handoffs_in: int = 0
    handoffs_out: int = 0
    first_audio_ms: list[float] = field(default_factory=list)


class CallRecordBuilder:
    """Folds one call's facts, in order, into history operations (see module docstring)."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.truncated = 0  # texts cut to MAX_TEXT
        self._call: dict[str, Any] = {"id": doc_id(call_id), "call_id": call_id, "status": "active",
                                      "participants": [], "agents": [], "handoffs": [], "recordings": [],
                                      "errors": [], "errors_dropped": 0, "turns": 0, "state": {}}
        self._stats: dict[str, _AgentStats] = {}
        self._caller = ""

    def feed(self, fact: Fact) -> list[Op]:
        """The operations ``fact`` calls for (often none: it only changes the call's document)."""
        call = self._call
        if isinstance(fact, CallStarted):
            self._caller = fact.caller
            call.update(caller=fact.caller, callee=fact.callee, pipeline=fact.pipeline, scenario=fact.scenario,
                        transport=fact.transport, worker=fact.worker, started=fact.wall)
            return [_upsert("calls", copy.deepcopy(call))]
        if isinstance(fact, ParticipantJoined):
            call["participants"].append({"participant": fact.participant, "role": fact.role, "at_ms": fact.at_ms})
        elif isinstance(fact, TranscriptReceived):
            return [_upsert("transcripts", self._line(fact, "caller", fact.text, turn=fact.turn, agent=fact.agent))]
        elif isinstance(fact, AgentResponded):
            self._count_turn(fact)
            return [_upsert("transcripts", self._line(
                fact, "bot", fact.text, turn=fact.turn, agent=fact.agent, heard_text=self._cut(fact.heard_text)[0],
                interrupted=fact.interrupted, route=fact.route, model=fact.model, deployment=fact.deployment,
                latency_ms=dict(fact.latency_ms), tool_calls=self._tools(fact.tool_calls)))]
        elif isinstance(fact, AgentChanged):
            if fact.agent not in call["agents"]:
                call["agents"].append(fact.agent)
            if fact.previous:
                call["handoffs"].append({"turn": fact.turn, "from": fact.previous, "to": fact.agent,
                                         "reason": fact.reason, "announced": fact.announced})
                self._agent(fact.previous).handoffs_out += 1
                self._agent(fact.agent).handoffs_in += 1
        elif isinstance(fact, StateChanged):
            call["state"] = {"turn": fact.turn, "agent": fact.agent, "slots": dict(fact.slots)}
        elif isinstance(fact, RecordingStarted):
            call["recordings"].append({"recording_id": fact.recording_id, "location": fact.location,
                                       "source": fact.source})
        elif isinstance(fact, ErrorOccurred):
            if len(call["errors"]) < MAX_ERRORS:
                call["errors"].append({"source": fact.source, "message": self._cut(fact.message)[0],
                                       "fatal": fact.fatal, "at_ms": fact.at_ms})
            else:
                call["errors_dropped"] += 1
        elif isinstance(fact, CallEnded):
            return self._end(fact)
        return []

    def abandon(self) -> list[Op]:
        """The call's document as it stands, for a call that ended without ``CallEnded``."""
        self._call["status"] = "incomplete"
        return [_upsert("calls", copy.deepcopy(self._call))]

    def _line(self, fact: Fact, role: str, text: str, **fields: Any) -> dict[str, Any]:
        cut, length = self._cut(text)
        line = {"id": doc_id(self.call_id, str(fact.seq)), "call_id": self.call_id, "seq": fact.seq, "role": role,
                "text": cut, "at_ms": fact.at_ms, "wall": fact.wall, **fields}
        if length is not None:
            line["truncated"] = length
        return line

    def _cut(self, text: str) -> tuple[str, int | None]:
        if len(text) <= MAX_TEXT:
            return text, None
        self.truncated += 1
        return text[:MAX_TEXT], len(text)

    def _tools(self, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The tool calls, each argument set or result over MAX_TEXT characters of JSON replaced
        by ``{"truncated": <length>}`` (a tool may return a whole document)."""
        out = []
        for call in calls:
            call = dict(call)
            for key in ("arguments", "result"):
                if key in call:
                    size = len(json.dumps(call[key], default=str))
                    if size > MAX_TEXT:
                        self.truncated += 1
                        call[key] = {"truncated": size}
            out.append(call)
        return out

    def _agent(self, name: str) -> _AgentStats:
        return self._stats.setdefault(name, _AgentStats())

    def _count_turn(self, fact: AgentResponded) -> None:
        stats = self._agent(fact.agent)
        stats.turns += 1
        stats.interrupted += fact.interrupted
        stats.tool_calls += len(fact.tool_calls)
        stats.tool_errors += sum(1 for c in fact.tool_calls if "error" in c)
        first = fact.latency_ms.get("first_audio_out")
        if first is not None:
            stats.first_audio_ms.append(float(first))

    def _end(self, fact: CallEnded) -> list[Op]:
        call = self._call
        call.update(status="ended", reason=fact.reason, duration_ms=fact.duration_ms, turns=fact.turns,
                    ended=fact.wall, outcome=_outcome(fact, call))
        ops = [_upsert("calls", copy.deepcopy(call))]
        for agent, stats in self._stats.items():
            if not agent:  # a brain without agents (the rules brain): nothing to rate
                continue
            latencies = stats.first_audio_ms
            ops.append(_upsert("agent_performance", {
                "id": doc_id(agent, self.call_id), "agent": agent, "call_id": self.call_id, "ended": fact.wall,
                "turns": stats.turns, "interrupted": stats.interrupted, "tool_calls": stats.tool_calls,
                "tool_errors": stats.tool_errors, "handoffs_in": stats.handoffs_in,
                "handoffs_out": stats.handoffs_out, "outcome": call["outcome"],
                "first_audio_ms": {"mean": round(statistics.fmean(latencies), 1) if latencies else None,
                                   "max": max(latencies) if latencies else None, "n": len(latencies)}}))
        if self._caller:
            ops.append({"op": "remember", "caller_id": self._caller, "profile": {}, "wall": fact.wall,
                        "call": {"call_id": self.call_id, "started": call.get("started"), "ended": fact.wall,
                                 "duration_ms": fact.duration_ms, "turns": fact.turns,
                                 "agents": list(call["agents"]), "outcome": call["outcome"]}})
        return ops


def _outcome(fact: CallEnded, call: dict[str, Any]) -> str:
    """How the call went, in one word: "error" (a fatal error), else the way it ended."""
    if any(e["fatal"] for e in call["errors"]):
        return "error"
    return fact.reason or "ended"
