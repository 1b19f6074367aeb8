"""Smoke test of perf/sidecars_history.py: ten short calls written behind to SQLite.

No timing assertions: the figures only have to exist and be consistent with each other.
"""

from __future__ import annotations

import argparse

from tests.perf.scripts import load_script

bench = load_script("sidecars_history")


def test_ten_calls_are_written_behind_and_measured() -> None:
    args = argparse.Namespace(calls=10, turns=2, turn_ms=20.0, batch_ms=5.0, cosmos=None, seed=1)
    out = bench.run(args)
    assert out["flushed"] and out["store"] == "SQLite"
    # per call: 4 facts at the start, 3 per turn, CallEnded
    assert out["counters"]["accepted"] == 10 * (4 + 3 * 2 + 1) and out["counters"]["dropped"] == 0
    assert out["lag_ms"]["n"] == out["emit_us"]["n"] == out["counters"]["accepted"]
    # per call: the call document twice, a transcript line per transcript and answer, one agent, one profile merge
    assert out["counters"]["written"] == 10 * (2 + 2 * 2 + 1 + 1)
