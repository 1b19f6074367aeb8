"""Smoke test of perf/calls.py: a media-path call and a full speech call run and are measured.

No timing assertions: the figures only have to exist and be consistent with each other.
"""

from __future__ import annotations

import argparse

from tests.perf.scripts import load_script

calls = load_script("calls")


async def test_one_media_call_and_two_at_once_are_measured() -> None:
    args = argparse.Namespace(stack=["media"], calls=[2], turns=1, timeout=60.0, max_speech_calls=1)
    out = await calls.main_async(args)
    (row,) = out["stacks"]["media"]
    assert row["calls"] == 2 and row["ended"] == {"eos": 2} and row["errors"] == 0
    assert row["turns_answered"] == 2  # each caller's one line was answered
    # The answer plays on both lines: at least a second of 20 ms frames each, all counted.
    assert row["frames_sent"] >= 2 * 50 and 0 <= row["frames_late_5ms"] <= row["frames_sent"]
    assert row["setup_ms"]["p50"] > 0 and row["loop_lag_ms"]["p99"] >= row["loop_lag_ms"]["p50"] >= 0
