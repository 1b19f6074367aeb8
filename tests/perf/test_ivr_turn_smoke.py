"""Smoke test of perf/ivr_turn.py: the demo calls all file their claim, every turn is counted in one
kind, and every figure is a finite positive duration. No timing assertions."""

from __future__ import annotations

import argparse
import math

from tests.perf.scripts import load_script

ivr_turn = load_script("ivr_turn")


async def test_the_benchmark_measures_every_figure() -> None:
    result = await ivr_turn.main(argparse.Namespace(calls=3))
    assert result["turns"] == 3 * 13
    assert result["any_turns"] == sum(result[f"{k}_turns"] for k in ("slot", "confirm", "tool", "handoff"))
    assert (result["confirm_turns"], result["handoff_turns"], result["tool_turns"]) == (3 * 2, 3, 3 * 3)
    for key in ("any", "slot", "confirm", "tool", "handoff", "normalize"):
        for figure in ("median", "p99"):
            value = result[f"{key}_{figure}_us"]
            assert math.isfinite(value) and value > 0, key
