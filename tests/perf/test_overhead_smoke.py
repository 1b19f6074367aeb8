"""Smoke test of perf/overhead.py: the voicegraph half runs and every frame reaches the sink.

No timing assertions: the figures only have to exist, be finite, and be positive where
they are durations. The Pipecat half is imported lazily, so this test does not need it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.perf.scripts import load_script

PATH = Path(__file__).resolve().parents[2] / "perf" / "overhead.py"


overhead = load_script("overhead")


@pytest.mark.parametrize("queued", [False, True], ids=["direct", "queued"])
@pytest.mark.parametrize("yields", [False, True], ids=["back-to-back", "source-yields"])
@pytest.mark.parametrize("hops", [0, 5])
async def test_throughput_run_delivers_every_frame(hops: int, queued: bool, yields: bool) -> None:
    run = await overhead.vg_throughput(hops, 300, queued=queued, yields=yields)
    assert run.sent == 300
    assert run.received == 300
    assert run.elapsed_ns > 0
    assert math.isfinite(run.ns_per_frame) and run.ns_per_frame > 0


@pytest.mark.parametrize("queued", [False, True], ids=["direct", "queued"])
async def test_latency_run_times_every_frame(queued: bool) -> None:
    run = await overhead.vg_latency(5, 12, queued=queued, interval_s=0.001)
    assert run.received == 12
    assert len(run.latencies_ns) == 12
    assert all(ns > 0 for ns in run.latencies_ns)


async def test_measure_reports_finite_figures_for_both_voicegraph_configs() -> None:
    results = await overhead.measure(
        overhead.voicegraph_configs(interval_s=0.001), frames=200, repeats=1, lat_frames=10
    )
    assert set(results) == {"voicegraph", "voicegraph_queued"}
    for row in results.values():
        for key, value in row.items():
            if key == "per_hop_us_repeats":
                continue
            assert math.isfinite(value), key
            if key.startswith(("latency_", "per_frame_")):  # durations; a per-hop difference may be noise
                assert value > 0, key
    doc = overhead.report(results, frames=200, lat_frames=10, pipecat_version=None)
    assert set(doc["voicegraph"]) == {"per_hop_us", "latency_5hop_median_us", "latency_5hop_p99_us"}
    assert doc["queued_per_hop_us"] == results["voicegraph_queued"]["per_hop_us"]
    json.dumps(doc)


def test_module_does_not_import_pipecat() -> None:
    code = (
        "import importlib.util, sys;"
        f"spec = importlib.util.spec_from_file_location('perf_overhead', {str(PATH)!r});"
        "m = importlib.util.module_from_spec(spec); sys.modules['perf_overhead'] = m;"
        "spec.loader.exec_module(m);"
        "assert 'pipecat' not in sys.modules, 'pipecat imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_cli_voicegraph_only_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    proc = subprocess.run(
        [sys.executable, str(PATH), "--voicegraph-only", "--frames", "50", "--json", str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "voicegraph direct" in proc.stdout and "voicegraph queued" in proc.stdout
    doc = json.loads(out.read_text())
    assert set(doc["voicegraph"]) == {"per_hop_us", "latency_5hop_median_us", "latency_5hop_p99_us"}
    assert math.isfinite(doc["queued_per_hop_us"])
    assert doc["voicegraph"]["latency_5hop_median_us"] > 0
