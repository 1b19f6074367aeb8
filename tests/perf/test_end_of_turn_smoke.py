"""Smoke test of perf/end_of_turn.py: both endpointing set-ups and both VAD engines report
figures on one paused sentence. No timing assertions: speed belongs to the benchmark."""

from __future__ import annotations

import asyncio
import math

from processors.audio.turn_model import pipecat_data_file
from tests.perf.scripts import load_script

end_of_turn = load_script("end_of_turn")


def test_one_sentence_reports_every_figure() -> None:
    doc = asyncio.run(end_of_turn.run(1))
    have_pipecat = pipecat_data_file("audio/vad/data/silero_vad.onnx") is not None
    assert doc["utterances"] == len(end_of_turn.PAUSES_MS) == 6
    rows = {row["setup"]: row for row in doc["endpointing"]}
    assert set(rows) == ({"model", "silence"} if have_pipecat else {"silence"})
    # "my policy number is, four five six": silence-only cuts the 700 and 800 ms pauses.
    assert rows["silence"]["false_cutoffs"] == 2 and rows["silence"]["end_of_turn_ms_p50"] == 600.0
    if have_pipecat:
        assert rows["model"]["false_cutoffs"] == 0 and rows["model"]["end_of_turn_ms_p50"] == 250.0
        assert doc["turn_model_cpu_ms_per_decision"]["decisions"] >= 6
        assert math.isfinite(doc["turn_model_cpu_ms_per_decision"]["p50"])
    cpu = doc["vad_cpu_ms_per_audio_second"]
    assert set(cpu) == ({"webrtc", "silero"} if have_pipecat else {"webrtc"})
    assert all(value > 0 for value in cpu.values())
