"""Smoke test of perf/pacing.py: both designs run real transports and send frames.

No timing assertions: the figures only have to exist and be sane.
"""

from __future__ import annotations

import math

import pytest

from tests.perf.scripts import load_script

pacing = load_script("pacing")


@pytest.mark.parametrize("design", ["before", "after"])
async def test_both_designs_pace_every_call(design: str) -> None:
    figures = await pacing.run_case(design, True, 3, 0.2)
    assert figures["frames_per_call_s"] > 0
    assert figures["clock_sleeps_per_tick"] > 0
    assert all(math.isfinite(v) for v in figures.values())


def test_the_report_renders_every_case() -> None:
    row = {"cpu_pct_core": 1.0, "cpu_us_per_call_s": 10.0, "clock_sleeps_per_tick": 1.0,
           "loop_wakeups_per_tick": 1.0, "late_pct": 0.0, "max_late_ms": 0.5, "frames_per_call_s": 50.0}
    text = pacing.render({"repeats": 1, "seconds": 1.0, "playout_work_us_per_frame": 1.0,
                          "playout_work_us_per_call_s": 50.0, "cases": {"playing/1/before": row, "idle/1/after": row}})
    assert "playing      1  before" in text and "idle         1  after" in text
