"""Smoke test of perf/llm_router.py: every figure exists and is a finite positive duration,
and every failover turn really went through a 429. No timing assertions."""

from __future__ import annotations

import argparse
import math

from tests.perf.scripts import load_script

llm_router = load_script("llm_router")


async def test_the_benchmark_measures_every_figure() -> None:
    result = await llm_router.main(argparse.Namespace(turns=6, tokens=5))
    for key in ("turn_1_token_median_us", "turn_5_token_median_us", "peer_turn_median_us",
                "token_to_tts_median_us", "failover_429_to_first_token_median_us",
                "request_create_1_messages_median_us", "request_create_40_messages_median_us",
                "request_open_stream_1_messages_median_us", "request_open_stream_40_messages_median_us"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert math.isfinite(result["per_token_us"])
    assert result["failover_turns_429"] == 6 + 5  # measured turns plus warm-up, each a 429 first
