"""Smoke test of perf/orchestrator.py: every brain answers every demo line, every IVR demo
call files its claim, and every figure is a finite positive duration. No timing assertions."""

from __future__ import annotations

import argparse
import math

from tests.perf.scripts import load_script

orchestrator = load_script("orchestrator")


async def test_the_benchmark_measures_every_figure() -> None:
    result = await orchestrator.main(argparse.Namespace(calls=2))
    assert result["lines"] == 13
    for kind in ("echo", "null", "ivr"):
        assert result[f"{kind}_turns"] == 2 * 13, kind
        for figure in ("median", "p99"):
            value = result[f"{kind}_{figure}_us"]
            assert math.isfinite(value) and value > 0, kind
    assert result["claims_filed"] == 2 + 2  # measured calls plus the two warm-up calls
    assert math.isfinite(result["ivr_added_median_us"]) and math.isfinite(result["null_added_median_us"])
