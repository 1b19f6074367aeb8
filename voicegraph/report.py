"""CallRecorder: what was said and heard in a call, turn by turn, with latencies.

It watches a graph without changing it: probes on each node for the frame types that
node *produces* (so a frame passing through several nodes is counted once, where it was
made) and the out-of-band events. The JSON shape is the one ``voicegraph call --json``
prints and the perf suite reads::

    {"call_id": ..., "turns": [{"turn", "caller_text", "heard_text", "bot_text",
      "bot_audio_ms", "bot_heard_text", "interrupted", "barge_in_ms",
      "end_of_turn_ms", "end_reason", "preemptive": {"started", "used"},
      "latency_ms": {"stt_final", "llm_first_token", "tts_first_audio", "first_audio_out"},
      "route", "model", "deployment", "failovers", "tool_calls",
      "agent", "handoffs", "action", "safety"}]}

``route``, ``model`` and ``deployment`` say which model answered the turn (from the LLM
brain's ``ModelTurn`` events; null for brains without a model), ``failovers`` the
deployments passed over on the way (``"name: reason"``), and ``tool_calls`` each tool run
as ``{"name", "arguments", "result"}`` (plus ``"error"`` when it failed).

With the orchestrator for a brain, ``agent`` is the agent in charge at the end of the
turn (from ``AgentSwitch`` events; null for other brains), ``handoffs`` the switches of
the turn (``{"from", "to", "reason", "announced"}``), ``action`` a call action it asked
for (``{"action", "reason", "agent"}``) and ``safety`` what was screened out
(``{"flag", "matched", "source"}``).

``end_of_turn_ms`` is how long the endpointing took to decide the turn was over: from
the end of the caller's last speech to the turn's end, on the call's audio clock (null
when the turn was cut at its maximum length while the caller still spoke, and on text
calls); ``end_reason`` is why it ended (``silence``: the silence window ran out;
``model``: the end-of-turn model judged it complete and cut the wait short;
``text``: the caller's words read complete and cut the wait short
(:mod:`processors.audio.text_turn`); ``max_duration``: the longest turn).
``preemptive`` says whether the brain started an answer on the interim transcript as the
caller stopped (``started``) and whether that answer was the one said (``used``; otherwise it was dropped unheard).

Latencies are cumulative from the turn's anchor: the end of the caller's speech when a
VAD reported it, else (text calls) the moment the final transcript was made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pipeline.frames import (
    AgentSwitch,
    AudioFormat,
    BotStartedSpeaking,
    BotStoppedSpeaking,
    CallAction,
    DataFrame,
    EventFrame,
    FinalTranscript,
    FlushStart,
    Frame,
    LLMToken,
    MetricsEvent,
    ModelTurn,
    OutputAudio,
    SafetyFlag,
    ToolCall,
    TTSText,
    TurnEnd,
    UserStartedSpeaking,
    UserStoppedSpeaking,
)
from pipeline.graph import Graph
from processors.audio.vad_node import VADProcessor
from processors.llm.brain import PREEMPTIVE_STARTED, PREEMPTIVE_USED

__all__ = ["CallRecorder", "TurnRecord", "format_report"]


@dataclass(slots=True)
class TurnRecord:
    """Everything recorded about one user turn and the bot's answer to it."""

    turn: int
    caller_text: str = ""
    heard_text: str = ""
    bot_tokens: list[str] = field(default_factory=list)
    bot_clauses: list[str] = field(default_factory=list)
    bot_audio_ms: float = 0.0
    played_ms: float | None = None
    heard_by_caller: str | None = None
    interrupted: bool = False
    speech_end_ns: int | None = None
    stt_final_ns: int | None = None
    llm_first_ns: int | None = None
    tts_first_ns: int | None = None
    audio_out_ns: int | None = None
    barge_in_ms: float | None = None
    speech_end_ms: float | None = None  # audio clock: the end of the caller's last speech
    turn_end_ms: float | None = None  # audio clock: the endpointing's decision
    end_reason: str | None = None
    preemptive_started: bool = False
    preemptive_used: bool = False
    route: str | None = None
    model: str | None = None
    deployment: str | None = None
    failovers: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    agent: str | None = None
    handoffs: list[dict[str, Any]] = field(default_factory=list)
    action: dict[str, str] | None = None
    safety: list[dict[str, str]] = field(default_factory=list)

    @property
    def bot_text(self) -> str:
        if self.bot_tokens:
            return "".join(self.bot_tokens).strip()
        return " ".join(self.bot_clauses).strip()

    def latency_ms(self) -> dict[str, float | None]:
        anchor = self.speech_end_ns if self.speech_end_ns is not None else self.stt_final_ns

        def since(mark: int | None) -> float | None:
            if mark is None or anchor is None:
                return None
            return round((mark - anchor) / 1e6, 1)

        return {
            "stt_final": since(self.stt_final_ns),
            "llm_first_token": since(self.llm_first_ns),
            "tts_first_audio": since(self.tts_first_ns),
            "first_audio_out": since(self.audio_out_ns),
        }

    def end_of_turn_ms(self) -> float | None:
        """End of the caller's speech -> turn decided (audio clock), or None."""
        if self.speech_end_ms is None or self.turn_end_ms is None:
            return None
        return round(self.turn_end_ms - self.speech_end_ms, 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "caller_text": self.caller_text,
            "heard_text": self.heard_text,
            "bot_text": self.bot_text,
            "bot_audio_ms": round(self.played_ms if self.played_ms is not None else self.bot_audio_ms, 1),
            "bot_heard_text": self.bot_text if self.heard_by_caller is None else self.heard_by_caller,
            "interrupted": self.interrupted,
            "latency_ms": self.latency_ms(),
            "barge_in_ms": None if self.barge_in_ms is None else round(self.barge_in_ms, 1),
            "end_of_turn_ms": self.end_of_turn_ms(),
            "end_reason": self.end_reason,
            "preemptive": {"started": self.preemptive_started, "used": self.preemptive_used},
            "route": self.route,
            "model": self.model,
            "deployment": self.deployment,
            "failovers": list(self.failovers),
            "tool_calls": list(self.tool_calls),
            "agent": self.agent,
            "handoffs": list(self.handoffs),
            "action": self.action,
            "safety": list(self.safety),
        }


class CallRecorder:
    """Builds ``TurnRecord``s from a graph's frames and events (attach before running)."""

    def __init__(self, graph: Graph) -> None:
        self.call_id = ""
        self.turns: dict[int, TurnRecord] = {}
        self._out_bytes_per_ms = 0.0
        self._switches: list[tuple[int, str]] = []  # (turn, agent in charge from then on)
        # Each frame type is counted at one node: the first, in graph order, that makes
        # it: produces it without consuming it. A node that consumes and produces a type
        # (a resampler, the TTS re-pushing its clause text, a pass-through) transforms
        # or forwards it, and counting there too would count it twice.
        owner: dict[type, str] = {}
        for node in graph.topological_order():
            for kind in node.produces:
                if kind not in (DataFrame, Frame) and not issubclass(kind, tuple(node.consumes)):
                    owner.setdefault(kind, node.name)
        for name, node in graph.nodes.items():
            mine = tuple(kind for kind, who in owner.items() if who == name)
            if mine:
                graph.probe(name, partial(self._on_frame, mine, node.duplex))
        for node in graph.nodes.values():
            if isinstance(node, VADProcessor):
                graph.probe(node.name, self._on_turn_end)
        graph.watch_events(self._on_event)

    def turn(self, turn: int) -> TurnRecord:
        rec = self.turns.get(turn)
        if rec is None:
            rec = self.turns[turn] = TurnRecord(turn)
        return rec

    def _on_turn_end(self, frame: Frame) -> None:
        if type(frame) is TurnEnd and frame.turn:
            rec = self.turn(frame.turn)
            rec.turn_end_ms = frame.at_ms
            rec.end_reason = frame.reason

    def _on_frame(self, produced: tuple[type, ...], from_caller: bool, frame: Frame) -> None:
        if type(frame) is AudioFormat:
            if frame.stream == "out" and OutputAudio in produced:
                self._out_bytes_per_ms = frame.bytes_per_ms
            return
        if not isinstance(frame, produced) or not frame.turn:
            return
        rec = self.turn(frame.turn)
        if isinstance(frame, FinalTranscript):
            rec.heard_text = frame.text
            rec.stt_final_ns = frame.ts
            if from_caller and not rec.caller_text:
                rec.caller_text = frame.text
        elif isinstance(frame, LLMToken):
            rec.bot_tokens.append(frame.text)
            if rec.llm_first_ns is None:
                rec.llm_first_ns = frame.ts
        elif isinstance(frame, TTSText):
            rec.bot_clauses.append(frame.text)
        elif isinstance(frame, OutputAudio):
            if rec.tts_first_ns is None:
                rec.tts_first_ns = frame.ts
            if self._out_bytes_per_ms:
                rec.bot_audio_ms += len(frame.pcm) / self._out_bytes_per_ms

    def _on_event(self, event: EventFrame) -> None:
        kind = type(event)
        if kind is UserStoppedSpeaking and event.turn:
            assert isinstance(event, UserStoppedSpeaking)
            rec = self.turn(event.turn)
            rec.speech_end_ns = event.ts
            rec.speech_end_ms = event.at_ms
        elif kind is UserStartedSpeaking and event.turn:
            self.turn(event.turn).speech_end_ms = None  # resumed: that stop did not end the turn
        elif kind is MetricsEvent and event.turn:
            assert isinstance(event, MetricsEvent)
            if event.name == PREEMPTIVE_STARTED:
                self.turn(event.turn).preemptive_started = True
            elif event.name == PREEMPTIVE_USED:
                self.turn(event.turn).preemptive_used = bool(event.value)
        elif kind is FlushStart and event.turn in self.turns:
            rec = self.turns[event.turn]
            # A flush decided as the answer ended (the caller had talked over its last
            # words) cuts nothing: an answer already played out stays whole.
            if rec.heard_by_caller is None:
                rec.interrupted = True
        elif kind is BotStartedSpeaking and event.turn:
            rec = self.turn(event.turn)
            if rec.audio_out_ns is None:
                rec.audio_out_ns = event.ts
        elif kind is ModelTurn and event.turn:
            assert isinstance(event, ModelTurn)
            rec = self.turn(event.turn)
            rec.route, rec.model, rec.deployment = event.route, event.model or None, event.deployment or None
            rec.failovers += event.failovers
        elif kind is ToolCall and event.turn:
            assert isinstance(event, ToolCall)
            call: dict[str, Any] = {"name": event.name, "arguments": _json_or_text(event.arguments),
                                    "result": _json_or_text(event.result) if not event.error else None}
            if event.error:
                call["error"] = event.error
            self.turn(event.turn).tool_calls.append(call)
        elif kind is AgentSwitch:
            assert isinstance(event, AgentSwitch)
            self._switches.append((event.turn, event.agent_to))
            if event.turn and event.agent_from:
                self.turn(event.turn).handoffs.append({"from": event.agent_from, "to": event.agent_to,
                                                       "reason": event.reason, "announced": event.announced})
        elif kind is CallAction and event.turn:
            assert isinstance(event, CallAction)
            self.turn(event.turn).action = {"action": event.action, "reason": event.reason, "agent": event.agent}
        elif kind is SafetyFlag and event.turn:
            assert isinstance(event, SafetyFlag)
            self.turn(event.turn).safety.append({"flag": event.flag, "matched": event.matched,
                                                 "source": event.source})
        elif kind is BotStoppedSpeaking and event.turn:
            assert isinstance(event, BotStoppedSpeaking)
            rec = self.turn(event.turn)
            rec.played_ms = (rec.played_ms or 0.0) + event.played_ms
            rec.heard_by_caller = event.heard_text
            if event.interrupted:
                rec.interrupted = True

    def to_json(self) -> dict[str, Any]:
        agent: str | None = None
        switches = iter(sorted(self._switches, key=lambda s: s[0]))
        pending = next(switches, None)
        for number in sorted(self.turns):
            while pending is not None and pending[0] <= number:
                agent = pending[1]
                pending = next(switches, None)
            self.turns[number].agent = agent
        return {"call_id": self.call_id, "turns": [self.turns[t].to_json() for t in sorted(self.turns)]}


def format_report(report: dict[str, Any]) -> str:
    """The conversation and a per-turn latency table, for people."""
    lines = [f"call {report['call_id']}", ""]
    for t in report["turns"]:
        lines.append(f"turn {t['turn']}")
        if not t["caller_text"] and not t["heard_text"]:
            lines.append("  (the bot speaks on its own: a greeting or a prompt)")
        else:
            if t["caller_text"] and t["caller_text"] != t["heard_text"]:
                lines.append(f"  caller said : {t['caller_text']}")
            lines.append(f"  heard       : {t['heard_text']}")
        lines.append(f"  bot         : {t['bot_text']}")
        if t["interrupted"]:
            lines.append(f"  interrupted : the caller heard \"{t['bot_heard_text']}\"")
        if t["bot_audio_ms"]:
            lines.append(f"  bot audio   : {t['bot_audio_ms']:.0f} ms")
        if t.get("end_reason"):
            decided = "" if t["end_of_turn_ms"] is None else f"{t['end_of_turn_ms']:.0f} ms after the speech, "
            lines.append(f"  turn ended  : {decided}{t['end_reason']}")
        preemptive = t.get("preemptive") or {}
        if preemptive.get("started"):
            lines.append(f"  preemptive  : {'used' if preemptive['used'] else 'dropped (the turn went on)'}")
        if t.get("agent"):
            moves = "".join(f", {h['from']} -> {h['to']} ({h['reason']})" for h in t.get("handoffs", []))
            lines.append(f"  agent       : {t['agent']}{moves}")
        if t.get("action"):
            lines.append(f"  action      : {t['action']['action']} ({t['action']['reason'] or 'no reason given'})")
        for flag in t.get("safety", []):
            lines.append(f"  screened    : {flag['flag']} from {flag['source']}: \"{flag['matched']}\"")
        if t.get("model"):
            over = f" (after {'; '.join(t['failovers'])})" if t["failovers"] else ""
            lines.append(f"  model       : {t['model']} on {t['deployment']}, route {t['route']}{over}")
        for call in t.get("tool_calls", []):
            lines.append(f"  tool        : {call['name']}({json.dumps(call['arguments'])}) -> "
                         f"{call.get('error') or json.dumps(call['result'])}")
    keys = ["stt_final", "llm_first_token", "tts_first_audio", "first_audio_out"]
    lines += ["", "latency (ms from end of caller speech)", "turn  " + "".join(f"{k:>17}" for k in keys) + "  barge_in"]
    for t in report["turns"]:
        cells = "".join(f"{_cell(t['latency_ms'][k]):>17}" for k in keys)
        lines.append(f"{t['turn']:>4}  {cells}  {_cell(t['barge_in_ms']):>8}")
    return "\n".join(lines) + "\n"


def _json_or_text(text: str) -> Any:
    """A tool call's JSON text as a value (the model may write something that is not JSON)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
