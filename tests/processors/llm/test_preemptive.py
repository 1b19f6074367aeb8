"""Preemptive answers: started when the caller stops, said only if the final transcript has the
same words, dropped unheard when it differs or the caller resumes (issue 15)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from pipeline.errors import ConfigError
from pipeline.frames import (
    BotStoppedSpeaking,
    DataFrame,
    EventFrame,
    FinalTranscript,
    Frame,
    InterimTranscript,
    LLMToken,
    MetricsEvent,
    ResponseStart,
    UserStartedSpeaking,
    UserStoppedSpeaking,
)
from pipeline.graph import Graph
from pipeline.processor import Processor
from pipeline.runner import run_call
from pipeline.testing import Collector, until
from processors.llm.brain import PREEMPTIVE_STARTED, PREEMPTIVE_USED, BrainProcessor, BrainSettings, same_words
from processors.llm.rules import RulesBrain, RulesBrainSettings

Step = Frame | Callable[[], bool]


class Ears(Processor):
    """Plays the VAD and the STT: pushes transcripts, emits the speaking events, and waits
    for conditions between steps, in the order given."""

    produces = (DataFrame,)

    def __init__(self, steps: list[Step]) -> None:
        super().__init__(name="ears")
        self.steps = steps

    async def run(self) -> None:
        for step in self.steps:
            if isinstance(step, EventFrame):
                self.emit(step)
            elif isinstance(step, Frame):
                await self.push(step)
            else:
                await until(step)


class EchoBrain(BrainProcessor):
    """Answers "you said <text>" a word at a time; each answer waits for ``gate`` when it
    is closed, and records what it was asked and whether it was stopped."""

    preemptable = True

    def __init__(self, settings: BrainSettings) -> None:
        super().__init__(settings, name="brain")
        self.asked: list[str] = []
        self.finished: list[str] = []
        self.stopped: list[str] = []
        self.gate: asyncio.Event | None = None

    async def _answer(self, text: str) -> AsyncIterator[str]:
        self.asked.append(text)
        try:
            yield "you"
            if self.gate is not None:
                await self.gate.wait()
            yield " said"
            yield f" {text}"
            self.finished.append(text)
        except (GeneratorExit, asyncio.CancelledError):
            self.stopped.append(text)
            raise

    def respond(self, text: str, turn: int) -> AsyncIterator[str]:
        return self._answer(text)


def open_gate(brain: EchoBrain) -> Callable[[], bool]:
    def step() -> bool:
        assert brain.gate is not None
        brain.gate.set()
        return True

    return step


def graph_of(brain: BrainProcessor, steps: list[Step]) -> tuple[Graph, Collector, list[MetricsEvent]]:
    graph = Graph("preemptive")
    out = Collector()
    graph.chain(Ears(steps), brain, out)
    metrics: list[MetricsEvent] = []
    graph.watch_events(lambda e: metrics.append(e) if isinstance(e, MetricsEvent) else None)
    return graph, out, metrics


def spoken(out: Collector, turn: int) -> str:
    return "".join(f.text for f in out.frames if isinstance(f, LLMToken) and f.turn == turn)


def preemption(metrics: list[MetricsEvent]) -> list[tuple[str, float, int]]:
    return [(m.name, m.value, m.turn) for m in metrics if m.name in (PREEMPTIVE_STARTED, PREEMPTIVE_USED)]


def interims(out: Collector) -> int:
    return sum(isinstance(f, InterimTranscript) for f in out.frames)


async def test_an_answer_started_at_the_pause_is_used_when_the_final_has_the_same_words() -> None:
    brain = EchoBrain(BrainSettings(preemptive=True))
    heard_before_final: list[int] = []

    def look() -> bool:
        heard_before_final.append(len(out.of_type(LLMToken, ResponseStart)))
        return True

    graph, out, metrics = graph_of(brain, [
        InterimTranscript("my policy number is four five six", turn=1),
        lambda: interims(out) == 1,
        UserStoppedSpeaking(at_ms=2000, turn=1),
        lambda: brain.finished == ["my policy number is four five six"],  # answered during the pause
        look,
        FinalTranscript("My policy number is four, five, six.", turn=1),
    ])
    result = await run_call(graph, timeout=10)
    assert result.reason == "eos" and not result.errors
    assert heard_before_final == [0]  # nothing of it went out before the turn was confirmed
    assert brain.asked == ["my policy number is four five six"]  # answered once, preemptively
    assert spoken(out, 1) == "you said my policy number is four five six"
    assert preemption(metrics) == [(PREEMPTIVE_STARTED, 7, 1), (PREEMPTIVE_USED, 1, 1)]
    # The context has the final transcript as the user's words, and the answer.
    brain.on_event(BotStoppedSpeaking(turn=1))  # the transport played it all
    assert brain.conversation.messages() == [
        {"role": "user", "content": "My policy number is four, five, six."},
        {"role": "assistant", "content": "you said my policy number is four five six"}]


async def test_a_preemptive_answer_is_dropped_unheard_when_the_final_differs() -> None:
    brain = EchoBrain(BrainSettings(preemptive=True))
    brain.gate = asyncio.Event()  # the preemptive answer is still being made when the final comes
    graph, out, metrics = graph_of(brain, [
        InterimTranscript("my policy number is", turn=1),
        lambda: interims(out) == 1,
        UserStoppedSpeaking(at_ms=1500, turn=1),
        lambda: brain.asked == ["my policy number is"],
        FinalTranscript("my policy number is four five six", turn=1),
        lambda: len(brain.asked) == 2,
        open_gate(brain),
    ])
    result = await run_call(graph, timeout=10)
    assert result.reason == "eos" and not result.errors
    assert brain.stopped == ["my policy number is"]  # the preemptive answer was cancelled
    assert brain.finished == ["my policy number is four five six"]
    assert spoken(out, 1) == "you said my policy number is four five six"  # only the real answer
    assert len(out.of_type(ResponseStart)) == 1
    assert preemption(metrics) == [(PREEMPTIVE_STARTED, 4, 1), (PREEMPTIVE_USED, 0, 1)]


async def test_a_caller_who_resumes_drops_the_answer_and_the_next_pause_starts_another() -> None:
    brain = EchoBrain(BrainSettings(preemptive=True))
    brain.gate = asyncio.Event()
    graph, out, metrics = graph_of(brain, [
        InterimTranscript("I would like to", turn=1),
        lambda: interims(out) == 1,
        UserStoppedSpeaking(at_ms=1200, turn=1),
        lambda: brain.asked == ["I would like to"],
        UserStartedSpeaking(at_ms=1600, turn=1),  # the caller goes on, same turn
        lambda: brain.stopped == ["I would like to"],
        open_gate(brain),
        InterimTranscript("I would like to change my address", turn=1),
        lambda: interims(out) == 2,
        UserStoppedSpeaking(at_ms=3000, turn=1),
        UserStoppedSpeaking(at_ms=3000, turn=1),  # told twice: still one answer
        lambda: len(brain.finished) == 1,
        FinalTranscript("I would like to change my address.", turn=1),
    ])
    result = await run_call(graph, timeout=10)
    assert result.reason == "eos" and not result.errors
    assert brain.asked == ["I would like to", "I would like to change my address"]
    assert spoken(out, 1) == "you said I would like to change my address"
    assert preemption(metrics) == [(PREEMPTIVE_STARTED, 4, 1), (PREEMPTIVE_USED, 0, 1),
                                   (PREEMPTIVE_STARTED, 7, 1), (PREEMPTIVE_USED, 1, 1)]


async def test_without_the_setting_interims_pass_through_and_nothing_is_preempted() -> None:
    brain = EchoBrain(BrainSettings())
    graph, out, metrics = graph_of(brain, [
        InterimTranscript("hello there", turn=1),
        UserStoppedSpeaking(at_ms=900, turn=1),
        FinalTranscript("hello there", turn=1),
    ])
    await run_call(graph, timeout=10)
    assert interims(out) == 1 and brain.asked == ["hello there"] and preemption(metrics) == []


async def test_the_rules_brain_answers_preemptively() -> None:
    brain = RulesBrain(RulesBrainSettings(preemptive=True, rules={r"\bhours\b": "Eight to eight."}, fallback="?"))
    graph, out, metrics = graph_of(brain, [
        InterimTranscript("what are your hours", turn=1),
        lambda: interims(out) == 1,
        UserStoppedSpeaking(at_ms=900, turn=1),
        FinalTranscript("What are your hours?", turn=1),
    ])
    await run_call(graph, timeout=10)
    assert spoken(out, 1) == "Eight to eight."
    assert preemption(metrics) == [(PREEMPTIVE_STARTED, 4, 1), (PREEMPTIVE_USED, 1, 1)]


def test_a_brain_whose_answers_read_the_context_refuses_the_setting() -> None:
    class ContextBrain(BrainProcessor):
        def respond(self, text: str, turn: int) -> AsyncIterator[str]:
            raise NotImplementedError

    with pytest.raises(ConfigError, match="ContextBrain cannot answer preemptively"):
        ContextBrain(BrainSettings(preemptive=True))


def test_same_words_ignores_case_and_punctuation_only() -> None:
    assert same_words("my policy number is four five six", "My policy number is four, five, six.")
    assert not same_words("my policy number is", "my policy number is four")
    assert not same_words("I can't", "I can")
