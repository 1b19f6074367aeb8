"""Smoke test of perf/acs_density.py: a server and a load driver in two processes, two calls measured.

No timing assertions: the figures only have to exist and be consistent with each other.
"""

from __future__ import annotations

import argparse

from tests.perf.scripts import load_script

density = load_script("acs_density")


def test_two_media_calls_are_served_measured_and_ended() -> None:
    args = argparse.Namespace(stack=["media"], calls=[2], speech_calls=[], seconds=2.0, warmup_s=2.0, settle_s=2.0,
                              seed=1, phases=1, profile=None)
    out = density.run(args)
    assert out["phases"] == 1 and out["seconds"] == 2.0
    (row,) = out["stacks"]["media"]
    assert row["stack"] == "media" and row["calls"] == 2 and row["connected"] == 2
    assert row["calls_ended"] == {"eos": 2} and row["call_errors"] == 0  # since the window opened: the two measured
    assert row["closed_by_server"] == 0 and row["connect_failures"] == 0
    # The greeting (or an answer) plays: bot frames were sent and arrived, each counted once.
    assert row["frames_sent"] > 0 and 0 <= row["client_frames"] <= row["frames_sent"] + 2
    assert row["missed_frames"] == row["frames_late"] + row["slots_skipped"] >= 0
    assert row["lag_ms"]["max"] >= row["lag_ms"]["p99"] >= row["lag_ms"]["p50"] >= 0
    assert 0 < row["cpu_cores"] and 0 <= row["runqueue_wait"] and 0 < row["driver"]["cpu_cores"]
    assert row["rss_base_mb"] > 0 and abs(row["mb_per_call"] * 2 - (row["rss_mb"] - row["rss_base_mb"])) < 0.1
    assert row["tts_cache"]["entries"] >= 1  # the prompts were prefilled
