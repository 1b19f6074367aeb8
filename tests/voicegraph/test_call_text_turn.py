"""A real spoken call with the text end of turn (the shipped default of local.yaml):
"my policy number is <pause 800> four five six" is one turn; a complete sentence ends
on its words, well before the 600 ms silence window (issue 15)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import build_graph, load_pipeline
from voicegraph.call import CallOptions, run_call_report

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "config" / "pipelines" / "local.yaml"


async def test_dictation_after_a_pause_is_not_cut_and_a_complete_sentence_ends_early() -> None:
    graph = build_graph(load_pipeline(LOCAL, env={"VOICEGRAPH__BRAIN__GREETING": ""}))
    report = await run_call_report(graph, CallOptions(
        pipeline=LOCAL, timeout_s=60,
        say=("my policy number is <pause 800> four five six", "I want to change my address")))
    assert report["ended"] == "eos" and report["errors"] == []
    dictation, sentence = report["turns"]  # the 800 ms pause did not end the turn
    assert "policy" in dictation["heard_text"].lower() and "456" in dictation["heard_text"]
    # Digits after "number is" read as unfinished: the turn waits the incomplete window.
    assert dictation["end_of_turn_ms"] == 1500.0 and dictation["end_reason"] == "silence"
    # Complete words end the turn 250 ms after the stop, or when the words arrive if the
    # STT's pause decode lands later (it starts 200-300 ms after the stop).
    assert sentence["end_reason"] == "text"
    assert 250.0 <= sentence["end_of_turn_ms"] < 600.0
