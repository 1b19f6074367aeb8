"""The call report's end of turn per turn: end_of_turn_ms and end_reason, on the audio clock (issue 15)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline import CallContext
from pipeline.graph import Graph
from pipeline.runner import run_call
from pipeline.testing import Collector, Feeder
from processors.audio.turn_model import TurnModel
from processors.audio.vad_node import VADProcessor, VADSettings
from tests.processors.audio.test_turn_model import audio_frames
from tests.processors.stt.speech import silence, utterance
from voicegraph.report import CallRecorder, format_report


async def report_of(pcm: bytes, settings: VADSettings, model: TurnModel | None = None) -> dict[str, Any]:
    graph = Graph("eot")
    vad = VADProcessor(settings, turn_model=model)
    graph.chain(Feeder(audio_frames(pcm)), vad, Collector())
    recorder = CallRecorder(graph)
    result = await run_call(graph, CallContext(), timeout=30)
    assert result.reason == "eos"
    return recorder.to_json()


async def test_a_turn_the_model_ends_reports_the_short_wait_and_the_reason() -> None:
    first, second = utterance("my policy number is", pad_ms=0), utterance("four five six", pad_ms=0)
    verdicts = iter([0.1, 0.9])  # the pause mid-sentence: incomplete; the end: complete

    def model(audio: npt.NDArray[np.float32]) -> float:
        return next(verdicts)

    report = await report_of(silence(500) + first + silence(800) + second + silence(2000),
                             VADSettings(stop_ms=200, complete_ms=250), model)
    [turn] = report["turns"]
    assert turn["end_reason"] == "model" and turn["end_of_turn_ms"] == 250.0
    assert turn["preemptive"] == {"started": False, "used": False}
    assert "turn ended  : 250 ms after the speech, model" in format_report({"call_id": "c", **report})


async def test_silence_only_reports_the_window_for_each_turn_it_cut() -> None:
    first, second = utterance("my policy number is", pad_ms=0), utterance("four five six", pad_ms=0)
    report = await report_of(silence(500) + first + silence(800) + second + silence(2000),
                             VADSettings(stop_ms=200, silence_ms=600))
    assert [(t["turn"], t["end_of_turn_ms"], t["end_reason"]) for t in report["turns"]] == [
        (1, 600.0, "silence"), (2, 600.0, "silence")]


async def test_a_turn_cut_at_its_maximum_while_the_caller_speaks_has_no_end_of_turn_time() -> None:
    noise = (np.random.default_rng(3).standard_normal(16000 * 7) * 3000).astype(np.int16).tobytes()
    report = await report_of(noise, VADSettings(max_turn_ms=5000))
    [turn] = report["turns"]
    assert turn["end_reason"] == "max_duration" and turn["end_of_turn_ms"] is None
