"""Smoke test of perf/v2v.py: a spoken turn in each configuration is measured, stage by stage.

No timing assertions: the figures only have to exist and be consistent with each other.
"""

from __future__ import annotations

import argparse

from pipeline.config import build_graph, load_pipeline
from tests.perf.scripts import load_script

v2v = load_script("v2v")


def test_the_replies_cover_first_sentences_of_5_to_30_words() -> None:
    lengths = [v2v.first_sentence_words(reply) for _, _, reply in v2v.REPLIES]
    assert min(lengths) == 5 and max(lengths) == 30 and len(set(lengths)) == len(lengths)


def test_before_is_silence_only_and_after_the_text_end_of_turn(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for mode, end_of_turn in (("before", "silence"), ("after", "text")):
        graph = build_graph(load_pipeline(v2v.pipeline_file(tmp_path, mode), env={}))
        assert graph.nodes["vad"].settings.end_of_turn == end_of_turn
        assert graph.nodes["sentences"].settings.first_unit_max_words == 8  # the shipped aggregator
        assert len(graph.nodes["brain"].settings.rules) == len(v2v.REPLIES)


async def test_one_turn_per_configuration_is_measured() -> None:
    result = await v2v.main(argparse.Namespace(calls=[1], turns=1, modes=["before", "after"]))
    for name in ("before_1", "after_1"):
        run = result["runs"][name]
        assert run["errors"] == [] and run["turns"] == 1
        cumulative = run["cumulative_ms"]
        marks = [cumulative[k]["p50"] for k in ("stt_final", "llm_first_token", "tts_first_audio",
                                                 "first_audio_out")]
        assert marks == sorted(marks) and marks[0] > 0  # each stage after the one before it
        assert run["v2v_ms"]["p50"] == cumulative["first_audio_out"]["p50"]
        assert run["first_sentence_words"] == [5]  # "I want to file a claim": the 5-word reply
