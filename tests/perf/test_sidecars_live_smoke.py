"""Smoke test of perf/sidecars_live.py: every phase runs on a real redis-server, tiny sizes.

No timing assertions: the figures only have to exist and be consistent with each other.
"""

from __future__ import annotations

import argparse

from tests.perf.scripts import load_script

bench = load_script("sidecars_live")


async def test_every_phase_reports_consistent_figures() -> None:
    args = argparse.Namespace(turns=50, calls=4, load_turns=3, interval_s=0.01, drain_turns=20)
    out = await bench.main_async(args)
    for phase in ("hot_in_process_us", "hot_redis_us"):
        assert 0 < out[phase]["median"] <= out[phase]["p99"]
    load = out["load"]
    assert (load["calls"], load["turns"], load["lost"], load["errors"]) == (4, 12, 0, 0)
    assert 0 < load["round_trips_per_turn"] <= 2 and load["commands_per_turn"] >= 10
    drain = out["drain"]
    assert drain["entries"] == 80 and drain["lost"] == 0 and drain["round_trips"] >= 1
