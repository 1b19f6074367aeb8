"""FactTap: turns a running call's frames and events into call facts.

The tap watches a graph without changing it, the way ``voicegraph call``'s report does:
probes on the node that *makes* each frame type (the first node, in graph order, that
produces it without consuming it, so a frame passing through several nodes is seen once),
probes on what is pushed into the transport, and the out-of-band events. Each callback
is a few dictionary operations and at most one :meth:`~processors.sidecars.facts.CallFacts.emit`;
nothing here awaits.

What it emits, and when:

* ``CallStarted`` then ``ParticipantJoined`` for the caller and for the bot, when the call
  starts (the ``Start`` event);
* ``TranscriptReceived`` for each final transcript of the caller (one per caller turn), with
  the agent in charge when it was heard;
* ``AgentChanged`` for each ``AgentSwitch`` (the entry agent taking the call included);
* ``AgentResponded`` once per turn the bot spoke in, when its answer is over: on a speech
  pipeline when the transport stopped playing it after the answer's ``ResponseEnd`` reached
  the transport (or it was cut by the caller); on a text pipeline (nothing makes audio)
  when the ``ResponseEnd`` reached the caller; any answer still open when the call ends is
  closed then. ``heard_text`` is what the caller heard (the transport's ``heard_text``);
  ``latency_ms`` the report's per-turn latencies, cumulative from the end of the caller's
  speech (VAD), else from the final transcript;
* ``ErrorOccurred`` for each ``ErrorEvent``;
* ``CallEnded`` from :meth:`FactTap.end`, with the call's report when the caller has one.

``StateChanged`` (agent and slots) is not emitted here: the slots live in the orchestrator's
state, which it saves through :class:`agents.memory.ShortTermMemory` itself.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pipeline.frames import (
    AgentSwitch,
    BotStartedSpeaking,
    BotStoppedSpeaking,
    DataFrame,
    ErrorEvent,
    EventFrame,
    FinalTranscript,
    FlushStart,
    Frame,
    LLMToken,
    ModelTurn,
    OutputAudio,
    ResponseEnd,
    Start,
    ToolCall,
    TTSText,
    UserStoppedSpeaking,
)
from pipeline.graph import Graph

from .facts import (
    AgentChanged,
    AgentResponded,
    CallEnded,
    CallFacts,
    CallStarted,
    ErrorOccurred,
    ParticipantJoined,
    TranscriptReceived,
)

__all__ = ["CallMeta", "FactTap"]

logger = logging.getLogger(__name__)

_MADE = (FinalTranscript, LLMToken, TTSText, OutputAudio)


@dataclass(frozen=True, kw_only=True)
class CallMeta:
    """Who and what a call is, as its transport knows it (``CallStarted``'s fields)."""

    caller: str = ""  # a phone number (ACS), or a name given to `voicegraph call`
    callee: str = ""
    pipeline: str = ""
    scenario: str = ""
    transport: str = "local"  # "local" | "acs" | "webrtc" | "replay"
    worker: str = ""


@dataclass(slots=True)
class _Turn:
    """What the tap keeps of one turn until its answer is over."""

    tokens: list[str] = field(default_factory=list)
    clauses: list[str] = field(default_factory=list)
    heard: str | None = None
    delivered: bool = False  # its ResponseEnd reached the transport
    speaking: bool = False
    interrupted: bool = False
    speech_end_ns: int | None = None
    stt_final_ns: int | None = None
    llm_first_ns: int | None = None
    tts_first_ns: int | None = None
    audio_out_ns: int | None = None
    route: str = ""
    model: str = ""
    deployment: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.tokens).strip() if self.tokens else " ".join(self.clauses).strip()

    def latency_ms(self) -> dict[str, float | None]:
        anchor = self.speech_end_ns if self.speech_end_ns is not None else self.stt_final_ns

        def since(mark: int | None) -> float | None:
            return None if mark is None or anchor is None else round((mark - anchor) / 1e6, 1)

        return {"stt_final": since(self.stt_final_ns), "llm_first_token": since(self.llm_first_ns),
                "tts_first_audio": since(self.tts_first_ns), "first_audio_out": since(self.audio_out_ns)}


class FactTap:
    """Watches ``graph`` (attach before the call runs) and emits its facts into ``facts``."""

    def __init__(self, graph: Graph, facts: CallFacts, meta: CallMeta) -> None:
        self.facts = facts
        self.meta = meta
        self.agent = ""
        self.turns_seen = 0  # turns the caller spoke in or the bot answered
        self._open: dict[int, _Turn] = {}
        self._done: set[int] = set()
        self._ended: CallEnded | None = None
        self._started = False
        owner: dict[type, str] = {}
        for node in graph.topological_order():
            for kind in node.produces:
                if kind not in (DataFrame, Frame) and not issubclass(kind, tuple(node.consumes)):
                    owner.setdefault(kind, node.name)
        self._speech = OutputAudio in owner
        for name in graph.nodes:
            mine = tuple(kind for kind in _MADE if any(issubclass(kind, k) and who == name
                                                       for k, who in owner.items()))
            if mine:
                graph.probe(name, partial(self._on_made, mine))
        # What reaches the transport: an answer is delivered once its ResponseEnd is pushed into it.
        feeders = {src for name, node in graph.nodes.items() if node.duplex
                   for src in graph.predecessors(name, taps=False)}
        for name in sorted(feeders):
            graph.probe(name, self._on_delivered)
        graph.watch_events(self._on_event)

    # --- facts at the edges of the call ------------------------------------------------

    def start(self) -> None:
        """Emit ``CallStarted`` and the two ``ParticipantJoined`` (once; also on ``Start``)."""
        if self._started:
            return
        self._started = True
        m = self.meta
        self.facts.emit(CallStarted, caller=m.caller, callee=m.callee, pipeline=m.pipeline, scenario=m.scenario,
                        transport=m.transport, worker=m.worker)
        self.facts.emit(ParticipantJoined, participant=m.caller or "caller", role="caller")
        self.facts.emit(ParticipantJoined, participant=m.callee or "bot", role="bot")

    def end(self, reason: str, duration_ms: float, report: dict[str, Any] | None = None) -> CallEnded:
        """Close the answers still open and emit ``CallEnded`` (once: a second call returns the first fact)."""
        if self._ended is not None:
            return self._ended
        self.start()  # a call that failed before its Start still has a beginning
        for number in sorted(self._open):
            self._respond(number)
        self._ended = self.facts.emit(CallEnded, reason=reason, duration_ms=round(duration_ms, 1),
                                      turns=self.turns_seen, report=report or {})
        return self._ended

    # --- probes and events ---------------------------------------------------------------

    def _turn(self, number: int) -> _Turn | None:
        if number in self._done or self._ended is not None:
            return None
        rec = self._open.get(number)
        if rec is None:
            rec = self._open[number] = _Turn()
            self.turns_seen += 1
        return rec

    def _on_made(self, kinds: tuple[type, ...], frame: Frame) -> None:
        if type(frame) is OutputAudio:  # most frames by far: only the first of a turn matters
            if frame.turn and OutputAudio in kinds:
                audio = self._open.get(frame.turn) or self._turn(frame.turn)
                if audio is not None and audio.tts_first_ns is None:
                    audio.tts_first_ns = frame.ts
            return
        if not isinstance(frame, kinds) or not frame.turn:
            return
        rec = self._turn(frame.turn)
        if rec is None:
            return
        if isinstance(frame, FinalTranscript):
            if rec.stt_final_ns is None:
                rec.stt_final_ns = frame.ts
                self.facts.emit(TranscriptReceived, turn=frame.turn, text=frame.text, agent=self.agent)
        elif isinstance(frame, LLMToken):
            rec.tokens.append(frame.text)
            if rec.llm_first_ns is None:
                rec.llm_first_ns = frame.ts
        elif isinstance(frame, TTSText):
            rec.clauses.append(frame.text)

    def _on_delivered(self, frame: Frame) -> None:
        if type(frame) is not ResponseEnd or not frame.turn:
            return
        rec = self._turn(frame.turn)
        if rec is None:
            return
        rec.delivered = True
        # With audio, the answer is over when the transport stops playing it (its audio is
        # queued there ahead of this frame); an answer that made no audio is over now.
        if not self._speech or rec.tts_first_ns is None:
            self._respond(frame.turn)

    def _on_event(self, event: EventFrame) -> None:
        kind = type(event)
        if kind is Start:
            self.start()
            return
        if kind is ErrorEvent:
            assert isinstance(event, ErrorEvent)
            self.facts.emit(ErrorOccurred, source=event.node, message=event.message, fatal=event.fatal)
            return
        if kind is AgentSwitch:
            assert isinstance(event, AgentSwitch)
            previous, self.agent = self.agent, event.agent_to
            self.facts.emit(AgentChanged, turn=event.turn, previous=event.agent_from or previous,
                            agent=event.agent_to, reason=event.reason, announced=event.announced)
            return
        if not event.turn:
            return
        if kind is FlushStart:
            for number in sorted(n for n in self._open if n <= event.turn):
                cut = self._open[number]
                if not cut.speaking and cut.heard is None and cut.text:
                    cut.interrupted = True  # cut before a word of it was played
                    self._respond(number)
            return
        rec = self._turn(event.turn)
        if rec is None:
            return
        if kind is UserStoppedSpeaking:
            rec.speech_end_ns = event.ts
        elif kind is BotStartedSpeaking:
            rec.speaking = True
            if rec.audio_out_ns is None:
                rec.audio_out_ns = event.ts
        elif kind is BotStoppedSpeaking:
            assert isinstance(event, BotStoppedSpeaking)
            rec.speaking = False
            rec.heard = event.heard_text if rec.heard is None else f"{rec.heard} {event.heard_text}".strip()
            rec.interrupted = rec.interrupted or event.interrupted
            if event.interrupted or rec.delivered:
                self._respond(event.turn)
        elif kind is ModelTurn:
            assert isinstance(event, ModelTurn)
            rec.route, rec.model, rec.deployment = event.route, event.model, event.deployment
        elif kind is ToolCall:
            assert isinstance(event, ToolCall)
            call: dict[str, Any] = {"name": event.name, "arguments": _json_or_text(event.arguments),
                                    "result": None if event.error else _json_or_text(event.result)}
            if event.error:
                call["error"] = event.error
            rec.tool_calls.append(call)

    def _respond(self, number: int) -> None:
        rec = self._open.pop(number)
        self._done.add(number)
        text = rec.text
        if not text:
            return  # the caller's turn had no answer (yet): nothing was said
        heard = rec.heard if rec.heard is not None else ("" if (rec.interrupted or self._speech) else text)
        self.facts.emit(AgentResponded, turn=number, text=text, heard_text=heard, interrupted=rec.interrupted,
                        agent=self.agent, route=rec.route, model=rec.model, deployment=rec.deployment,
                        latency_ms=rec.latency_ms(), tool_calls=rec.tool_calls)


def _json_or_text(text: str) -> Any:
    """A tool call's JSON text as a value (the model may write something that is not JSON)."""
    try:
        return json.loads(text)
    except ValueError:
        return text
