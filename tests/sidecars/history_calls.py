"""A full call's facts, as the tap emits them, for the history tests (SQLite and Cosmos DB)."""

from __future__ import annotations

from typing import Any

from processors.sidecars.facts import (
    AgentChanged,
    AgentResponded,
    CallEnded,
    CallFacts,
    CallStarted,
    ErrorOccurred,
    FactSink,
    ParticipantJoined,
    RecordingStarted,
    StateChanged,
    TranscriptReceived,
)


class Clock:
    """The call's clock in the tests: moved by hand."""

    def __init__(self) -> None:
        self.ms = 0.0

    def __call__(self) -> float:
        return self.ms


TOOL = {"name": "verify_caller", "arguments": {"name": "Jane Doe"}, "result": {"verified": True}}
LATENCY = {"stt_final": 120.0, "llm_first_token": 310.5, "tts_first_audio": 480.0, "first_audio_out": 530.0}


def full_call(call_id: str, sinks: list[FactSink], *, caller: str = "+14255550123",
              caller_text: str = "Hello, this is Jane Doe.") -> CallFacts:
    """Emit a whole call (greeting, one caller turn, a handoff, an error, a recording, the end)."""
    clock = Clock()
    facts = CallFacts(call_id, sinks, clock)
    facts.emit(CallStarted, caller=caller, callee="+18005550100", pipeline="acs", scenario="insurance",
               transport="acs", worker="host:1")
    facts.emit(ParticipantJoined, participant=caller, role="caller")
    facts.emit(ParticipantJoined, participant="bot", role="bot")
    facts.emit(RecordingStarted, recording_id="rec-1", location="/tmp/rec-1.wav")
    facts.emit(AgentChanged, turn=1, previous="", agent="auth", reason="the scenario's entry agent")
    clock.ms = 2400.0
    facts.emit(AgentResponded, turn=1, text="Thank you for calling.", heard_text="Thank you for calling.",
               agent="auth", latency_ms={})
    clock.ms = 5100.0
    facts.emit(TranscriptReceived, turn=2, text=caller_text, agent="auth")
    clock.ms = 6900.0
    facts.emit(AgentChanged, turn=2, previous="auth", agent="fnol", reason="handoff from auth")
    facts.emit(AgentResponded, turn=2, text="Thank you Jane. I can help you file a claim.",
               heard_text="Thank you Jane.", interrupted=True, agent="fnol", route="fast", model="gpt-4o-mini",
               deployment="gpt4o-mini-eu", latency_ms=dict(LATENCY), tool_calls=[dict(TOOL)])
    facts.emit(StateChanged, turn=2, agent="fnol", slots={"name": "Jane Doe"})
    facts.emit(ErrorOccurred, source="tts", message="voice fell back to espeak")
    clock.ms = 9000.0
    facts.emit(CallEnded, reason="hangup", duration_ms=9000.0, turns=2, report={"turns": []})
    return facts


def transcript_texts(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(line["role"], line["text"]) for line in record["transcript"]]
