"""Smoke test of perf/acs_path.py: one short call per path, each measured on the caller's side,
the ACS one placed through the testbed (Event Grid, the SDK, callbacks, the media hook).

No timing assertions: the figures only have to exist, line up per line, and be sane.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

from tests.perf.scripts import load_script
from transports.local.script import render_script

acs_path = load_script("acs_path")


async def test_both_paths_measure_the_same_lines_and_pair_them() -> None:
    utterances = await asyncio.to_thread(render_script, ["What are your opening hours"], sample_rate=16000,
                                         voice="espeak")
    plan = await asyncio.to_thread(acs_path.plan)
    plan = replace(plan, caller=replace(plan.caller, voice="espeak"))
    async with acs_path.acs_path(plan) as acs:
        calls = await acs_path.measure(acs, utterances, 1, 1, None)
    local, over_acs = calls["local"][0], calls["acs"][0]
    for figures in (local, over_acs):
        [v2v] = figures.voice_to_voice_ms
        assert v2v is not None and math.isfinite(v2v) and v2v > 0
        assert len(figures.server_first_audio_out_ms) == 1 and figures.barge_in_ms == [None]
    assert over_acs.late_frames == 0 and over_acs.bot_frame_gaps_ms and over_acs.server_flush_ms == [None]
    [diff] = acs_path._paired(calls, "voice_to_voice_ms")
    assert diff == over_acs.voice_to_voice_ms[0] - local.voice_to_voice_ms[0]
    result = acs_path.summarise(calls, calls, rounds=1, turns=1, interrupt_after=1000.0)
    assert result["acs_minus_local_paired_ms"]["voice_to_voice_ms"]["n"] == 1
    assert result["acs"]["voice_to_voice_ms"]["n"] == result["local"]["voice_to_voice_ms"]["n"] == 1


def test_the_report_renders_both_paths_and_the_paired_difference() -> None:
    s = {"n": 20, "median": 800.0, "p90": 900.0, "min": 700.0, "max": 950.0}
    d = {"n": 20, "median": 1.5, "p90": 4.0, "min": -3.0, "max": 9.0}
    text = acs_path.render({"rounds": 4, "turns_per_call": 5,
                            "local": {"voice_to_voice_ms": s, "barge_in_ms": s, "server_first_audio_out_ms": s},
                            "acs": {"voice_to_voice_ms": s, "barge_in_ms": {"n": 0}, "server_first_audio_out_ms": s},
                            "acs_minus_local_paired_ms": {"voice_to_voice_ms": d, "barge_in_ms": {"n": 0}},
                            "acs_wire": {"bot_frame_gap_median_ms": 20.0, "bot_frame_gap_p90_ms": 20.5,
                                         "late_frames_after_stop_audio": 0}})
    assert "voice_to_voice_ms           acs    20    800.0" in text
    assert "barge_in_ms                 acs" not in text
    assert "  voice_to_voice_ms                    20     +1.5" in text
