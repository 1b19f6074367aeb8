"""Smoke test of perf/acs_path.py: one short call per path, each measured on the caller's side.

No timing assertions: the figures only have to exist and be sane.
"""

from __future__ import annotations

import math

from tests.perf.scripts import load_script
from transports.local.script import render_script

acs_path = load_script("acs_path")


async def test_both_paths_measure_voice_to_voice_on_the_same_audio() -> None:
    utterances = render_script(["What are your opening hours"], sample_rate=16000, voice="espeak")
    local = await acs_path.run_local(utterances, 1, 1, None)
    acs, wire = await acs_path.run_acs(utterances, 1, 1, None)
    for figures in (local, acs):
        [v2v] = figures["voice_to_voice_ms"]
        assert math.isfinite(v2v) and v2v > 0
        assert len(figures["server_first_audio_out_ms"]) == 1 and figures["barge_in_ms"] == []
    assert wire["late_frames_after_stop_audio"] == 0 and wire["bot_frame_gap_median_ms"] > 0


def test_the_report_renders_both_paths() -> None:
    s = {"n": 20, "median": 800.0, "p90": 900.0, "min": 700.0, "max": 950.0}
    text = acs_path.render({"calls": 4, "turns_per_call": 5,
                            "local": {"voice_to_voice_ms": s, "barge_in_ms": s, "server_first_audio_out_ms": s},
                            "acs": {"voice_to_voice_ms": s, "barge_in_ms": {"n": 0}, "server_first_audio_out_ms": s},
                            "acs_adds_ms": {"voice_to_voice_ms": 0.0},
                            "acs_wire": {"bot_frame_gap_median_ms": 20.0, "bot_frame_gap_p90_ms": 20.5,
                                         "late_frames_after_stop_audio": 0}})
    assert "voice_to_voice_ms           acs    20    800.0" in text
    assert "barge_in_ms                 acs" not in text and "voice_to_voice_ms +0.0" in text
