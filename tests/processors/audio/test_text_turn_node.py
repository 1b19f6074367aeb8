"""The VAD node's text end of turn: it hears the STT's UserWords and ends the turn on them,
exactly on the audio clock; stale words leave the silence window (issue 15)."""

from __future__ import annotations

from typing import Any

from pipeline import CallContext
from pipeline.frames import EventFrame, UserStoppedSpeaking, UserWords
from pipeline.graph import Graph
from pipeline.runner import run_call
from pipeline.testing import Collector, Feeder
from processors.audio.vad_node import VADProcessor, VADSettings
from tests.processors.audio.test_turn_model import audio_frames
from tests.processors.stt.speech import silence, utterance
from voicegraph.report import CallRecorder


class Words(Collector):
    """Stands in for the STT: at each speech stop, says ``text`` heard up to ``lag_ms``
    before (negative: after) that stop."""

    def __init__(self, text: str, lag_ms: float) -> None:
        super().__init__()
        self.text, self.lag_ms = text, lag_ms

    def on_event(self, event: EventFrame) -> None:
        super().on_event(event)
        if type(event) is UserStoppedSpeaking:
            assert isinstance(event, UserStoppedSpeaking)
            self.emit(UserWords(text=self.text, turn=event.turn, heard_ms=event.at_ms - self.lag_ms))


async def report_of(text: str, lag_ms: float, settings: VADSettings) -> dict[str, Any]:
    pcm = silence(500) + utterance("I want to change my address", pad_ms=0) + silence(2000)
    graph = Graph("text-eot")
    graph.chain(Feeder(audio_frames(pcm)), VADProcessor(settings), Words(text, lag_ms))
    recorder = CallRecorder(graph)
    result = await run_call(graph, CallContext(), timeout=30)
    assert result.reason == "eos"
    return recorder.to_json()


async def test_complete_words_end_the_turn_250_ms_after_the_stop() -> None:
    report = await report_of("I want to change my address", -20, VADSettings(end_of_turn="text", stop_ms=200))
    [turn] = report["turns"]
    assert (turn["end_reason"], turn["end_of_turn_ms"]) == ("text", 250.0)


async def test_incomplete_words_wait_the_incomplete_window() -> None:
    report = await report_of("I want to change my", -20, VADSettings(end_of_turn="text", stop_ms=200))
    [turn] = report["turns"]
    assert (turn["end_reason"], turn["end_of_turn_ms"]) == ("silence", 1500.0)


async def test_stale_words_leave_the_silence_window() -> None:
    report = await report_of("I want to change my address", 100, VADSettings(end_of_turn="text", stop_ms=200))
    [turn] = report["turns"]
    assert (turn["end_reason"], turn["end_of_turn_ms"]) == ("silence", 600.0)


async def test_silence_only_ignores_the_words() -> None:
    report = await report_of("I want to change my address", -20, VADSettings(stop_ms=200))
    [turn] = report["turns"]
    assert (turn["end_reason"], turn["end_of_turn_ms"]) == ("silence", 600.0)
