"""Smoke test of perf/cpu_per_call.py: every engine's CPU per call is measured on a short
call of real recordings. No timing assertions: speed belongs to the benchmark's own run."""

from __future__ import annotations

import os

import pytest

from processors.audio.turn_model import pipecat_data_file
from tests.data.recordings import missing_packages
from tests.perf.scripts import load_script

if missing_packages() and not os.environ.get("CI"):
    pytest.skip("speech test data not installed: make speech-data", allow_module_level=True)

cpu_per_call = load_script("cpu_per_call")


def test_a_short_call_reports_every_engine_and_the_stacks() -> None:
    call = cpu_per_call.Call(limit=2, gap_ms=1000)
    assert len(call.turns) == 2 and call.bot_seconds == 2.0
    cores = cpu_per_call.measure(call)
    engines = {"vad_webrtc", "whisper_incremental", "whisper_one_shot", "pocketsphinx", "piper"}
    have_pipecat = pipecat_data_file("audio/vad/data/silero_vad.onnx") is not None
    if have_pipecat:
        engines |= {"vad_silero", "smart_turn", "smart_turn_ms_per_decision", "smart_turn_decisions_per_turn"}
        assert cores["smart_turn_decisions_per_turn"] >= 1  # asked at least at each turn's end
    assert set(cores) == engines and all(value > 0 for value in cores.values())
    stacks = cpu_per_call.stacks(cores)
    default = stacks["default (webrtcvad, incremental Whisper, Piper)"]
    assert default["cores_per_call"] == round(cores["vad_webrtc"] + cores["whisper_incremental"] + cores["piper"], 4)
    assert default["calls_per_2_cores"] == round(2 / (cores["vad_webrtc"] + cores["whisper_incremental"]
                                                       + cores["piper"]), 1)
    assert ("with Silero and Smart Turn" in stacks) == have_pipecat
