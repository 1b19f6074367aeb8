"""FactTap: the facts of a call, from its frames and events (a real text call, and the
speech events of a call fed to the tap in order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.clock import VirtualClock
from pipeline.config import build_graph, load_pipeline
from pipeline.context import CallContext
from pipeline.frames import (
    AgentSwitch,
    BotStartedSpeaking,
    BotStoppedSpeaking,
    ErrorEvent,
    EventFrame,
    FinalTranscript,
    FlushStart,
    Frame,
    OutputAudio,
    ResponseEnd,
    ToolCall,
    TTSText,
    UserStoppedSpeaking,
)
from pipeline.graph import Graph
from pipeline.processor import Processor
from pipeline.runner import CallRunner
from processors.sidecars.facts import (
    AgentChanged,
    AgentResponded,
    CallEnded,
    CallFacts,
    CallStarted,
    ErrorOccurred,
    Fact,
    ParticipantJoined,
    TranscriptReceived,
)
from processors.sidecars.tap import CallMeta, FactTap

ROOT = Path(__file__).resolve().parents[2]


class ListSink:
    """Keeps every fact offered, in order."""

    def __init__(self) -> None:
        self.facts: list[Fact] = []
        self.closed = False

    def offer(self, fact: Fact) -> None:
        self.facts.append(fact)

    async def aclose(self) -> None:
        self.closed = True

    def of(self, kind: type[Fact]) -> list[Any]:
        return [f for f in self.facts if type(f) is kind]


class Line(Processor):
    duplex = True
    produces = (FinalTranscript,)
    consumes = (OutputAudio,)


class Brain(Processor):
    produces = (TTSText,)
    consumes = (FinalTranscript,)


class Mouth(Processor):
    produces = (OutputAudio,)
    consumes = (TTSText,)


def speech_graph() -> tuple[Graph, FactTap, ListSink]:
    line, brain, mouth = Line(name="line"), Brain(name="brain"), Mouth(name="mouth")
    graph = Graph("speech")
    graph.chain(line, brain, mouth, line)
    sink = ListSink()
    clock = [0.0]
    tap = FactTap(graph, CallFacts("c1", [sink], lambda: clock[0]), CallMeta(caller="+15550100", pipeline="speech"))
    return graph, tap, sink


def pushed(graph: Graph, node: str, frame: Frame) -> None:
    for observe in graph.nodes[node]._observers:
        observe(frame)


def event(graph: Graph, ev: EventFrame) -> None:
    graph.broadcast(ev)  # before wiring only the watchers (the tap) see it


async def test_a_text_call_gives_one_transcript_and_one_answer_per_turn() -> None:
    graph = build_graph(load_pipeline(ROOT / "config" / "pipelines" / "text.yaml"))
    sink = ListSink()
    ctx = CallContext("text-1")
    facts = CallFacts(ctx.call_id, [sink], lambda: 0.0)
    tap = FactTap(graph, facts, CallMeta(caller="alice", pipeline="text"))
    result = await CallRunner(graph, ctx).run(timeout=30)
    tap.end(result.reason, 1234.56)
    assert result.reason == "eos"
    kinds = [type(f).__name__ for f in sink.facts]
    assert kinds == (["CallStarted", "ParticipantJoined", "ParticipantJoined"]
                     + ["TranscriptReceived", "AgentResponded"] * 4 + ["CallEnded"])
    assert [f.seq for f in sink.facts] == list(range(1, 13))
    started = sink.of(CallStarted)[0]
    assert (started.caller, started.pipeline, started.transport) == ("alice", "text", "local")
    assert [(p.participant, p.role) for p in sink.of(ParticipantJoined)] == [("alice", "caller"), ("bot", "bot")]
    said = [(t.turn, t.text) for t in sink.of(TranscriptReceived)]
    assert said == [(1, "Hello there"), (2, "I want to file a claim for my car accident"),
                    (3, "What are your opening hours?"), (4, "Thanks, goodbye")]
    answers = sink.of(AgentResponded)
    assert [a.turn for a in answers] == [1, 2, 3, 4]
    assert answers[0].text == "Hello! How can I help you today?"
    assert answers[3].text == answers[3].heard_text == "Thank you for calling. Goodbye!"
    assert not any(a.interrupted for a in answers)
    ended = sink.of(CallEnded)[0]
    assert (ended.reason, ended.duration_ms, ended.turns) == ("eos", 1234.6, 4)
    assert tap.end("eos", 1.0) is ended and len(sink.of(CallEnded)) == 1  # once


def test_a_spoken_answer_is_over_when_the_transport_stops_playing_it() -> None:
    graph, _, sink = speech_graph()
    ms = 1_000_000
    event(graph, UserStoppedSpeaking(turn=1, ts=1000 * ms))
    pushed(graph, "line", FinalTranscript("I had an accident", turn=1, ts=1300 * ms))
    pushed(graph, "brain", TTSText("I am sorry to hear that.", turn=1, ts=1500 * ms))
    pushed(graph, "mouth", OutputAudio(b"\0" * 640, turn=1, ts=1700 * ms))
    pushed(graph, "brain", TTSText("What is your policy number?", turn=1, ts=1800 * ms))
    pushed(graph, "mouth", ResponseEnd(turn=1))  # delivered: its audio is still playing
    event(graph, BotStartedSpeaking(turn=1, ts=1750 * ms))
    assert sink.of(AgentResponded) == []
    event(graph, BotStoppedSpeaking(turn=1, played_ms=3000.0,
                                    heard_text="I am sorry to hear that. What is your policy number?"))
    [said] = sink.of(TranscriptReceived)
    assert (said.turn, said.text) == (1, "I had an accident")
    [answer] = sink.of(AgentResponded)
    assert answer.text == answer.heard_text == "I am sorry to hear that. What is your policy number?"
    assert not answer.interrupted
    assert answer.latency_ms == {"stt_final": 300.0, "llm_first_token": None, "tts_first_audio": 700.0,
                                 "first_audio_out": 750.0}


def test_a_barged_in_answer_says_what_the_caller_heard() -> None:
    graph, _, sink = speech_graph()
    pushed(graph, "line", FinalTranscript("hours", turn=2))
    pushed(graph, "brain", TTSText("We are open from eight in the morning to eight in the evening.", turn=2))
    pushed(graph, "mouth", OutputAudio(b"\0" * 640, turn=2))
    event(graph, BotStartedSpeaking(turn=2))
    event(graph, FlushStart(turn=2))
    event(graph, BotStoppedSpeaking(turn=2, played_ms=900.0, interrupted=True, heard_text="We are open"))
    [answer] = sink.of(AgentResponded)
    assert (answer.turn, answer.heard_text, answer.interrupted) == (2, "We are open", True)
    event(graph, BotStoppedSpeaking(turn=2, played_ms=0.0))  # late events of a closed turn add nothing
    assert len(sink.of(AgentResponded)) == 1


def test_an_answer_flushed_before_any_audio_was_heard_by_nobody() -> None:
    graph, _, sink = speech_graph()
    pushed(graph, "line", FinalTranscript("claim", turn=3))
    pushed(graph, "brain", TTSText("I can help you with a claim.", turn=3))
    event(graph, FlushStart(turn=3))
    [answer] = sink.of(AgentResponded)
    assert (answer.text, answer.heard_text, answer.interrupted) == ("I can help you with a claim.", "", True)


def test_agents_errors_and_tools_become_facts_and_the_end_closes_open_answers() -> None:
    graph, tap, sink = speech_graph()
    tap.start()
    event(graph, AgentSwitch(turn=0, agent_from="", agent_to="auth", reason="entry"))
    pushed(graph, "line", FinalTranscript("my policy is 123", turn=1))
    event(graph, AgentSwitch(turn=1, agent_from="auth", agent_to="fnol", reason="verified", announced=False))
    event(graph, ToolCall(turn=1, name="lookup_policy", arguments='{"policy": "123"}', result='{"ok": true}'))
    event(graph, ToolCall(turn=1, name="broken", arguments="not json", error="timeout"))
    pushed(graph, "brain", TTSText("Thank you, you are verified.", turn=1))
    event(graph, ErrorEvent(node="tts", message="voice missing", turn=1))
    ended = tap.end("cancelled", 5000.0, {"call_id": "c1", "turns": []})
    changes = sink.of(AgentChanged)
    assert [(c.turn, c.previous, c.agent, c.reason, c.announced) for c in changes] == [
        (0, "", "auth", "entry", True), (1, "auth", "fnol", "verified", False)]
    [error] = sink.of(ErrorOccurred)
    assert (error.source, error.message, error.fatal) == ("tts", "voice missing", False)
    [answer] = sink.of(AgentResponded)  # closed by the end of the call: nothing of it was played
    assert (answer.agent, answer.heard_text, answer.interrupted) == ("fnol", "", False)
    assert answer.tool_calls == [{"name": "lookup_policy", "arguments": {"policy": "123"}, "result": {"ok": True}},
                                 {"name": "broken", "arguments": "not json", "result": None, "error": "timeout"}]
    assert (ended.reason, ended.turns, ended.report) == ("cancelled", 1, {"call_id": "c1", "turns": []})
    assert sink.facts[-1] is ended and [type(f) for f in sink.facts[:3]] == [CallStarted, ParticipantJoined,
                                                                            ParticipantJoined]
    assert [f.seq for f in sink.facts] == list(range(1, len(sink.facts) + 1))


async def test_the_call_clock_stamps_facts() -> None:
    clock = VirtualClock()
    graph, _, _ = speech_graph()
    sink = ListSink()
    facts = CallFacts("c2", [sink], lambda: clock.now_ns() / 1e6)
    tap = FactTap(graph, facts, CallMeta())
    tap.start()
    await clock.advance(2_500_000_000)
    tap.end("eos", 2500.0)
    assert [f.at_ms for f in sink.facts] == [0.0, 0.0, 0.0, 2500.0]
    assert [p.participant for p in sink.of(ParticipantJoined)] == ["caller", "bot"]
