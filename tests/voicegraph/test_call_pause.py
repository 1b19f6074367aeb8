"""Caller lines with pauses (``--say "my policy number is <pause 800> four five six"``), and the
report's end of turn for them (issue 15)."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import build_graph, load_pipeline
from pipeline.frames import MetricsEvent
from processors.llm.brain import PREEMPTIVE_STARTED, PREEMPTIVE_USED
from transports.local import script
from transports.local.script import MAX_PAUSE_MS, parse_line, render_script
from transports.local.speech import SpeechCaller
from voicegraph.call import CallOptions, run_call_report
from voicegraph.cli import main

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "config" / "pipelines" / "local.yaml"


def test_a_line_splits_into_words_and_pauses() -> None:
    assert parse_line("my policy number is <pause 800> four five six") == ["my policy number is", 800,
                                                                           "four five six"]
    assert parse_line("one<PAUSE 300 ms>two <pause 5>three") == ["one", 300, "two", 5, "three"]
    assert parse_line("no pause at all") == ["no pause at all"]


@pytest.mark.parametrize(("line", "named"), [
    ("wait <pause> then", "'<pause>' is not a pause"),
    ("wait <pause -5> then", "'<pause -5>' is not a pause"),
    ("wait <pause 0> then", "'<pause 0>' must last 1 to 30000 ms"),
    (f"wait <pause {MAX_PAUSE_MS + 1}> then", "must last 1 to 30000 ms"),
    ("wait <shout> then", "'<shout>' is not a pause"),
    ("a < b", "unmatched '<' or '>'"),
    ("<pause 300>", "has no words to say"),
])
def test_bad_markup_is_named(line: str, named: str) -> None:
    with pytest.raises(ValueError, match="caller line") as caught:
        parse_line(line)
    assert named in str(caught.value)


class _Voice:
    """100 ms of silence, 200 ms of tone, 100 ms of silence for any text, at 16 kHz."""

    sample_rate = 16000

    def synthesize(self, text: str) -> Generator[bytes, None, None]:
        tone = (8000 * np.sin(np.arange(3200) * 0.2)).astype(np.int16).tobytes()
        yield bytes(3200) + tone + bytes(3200)


def test_the_pause_is_exactly_as_long_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(script, "_caller_voice", lambda name: _Voice())
    [utt] = render_script(["my number is <pause 800> four five six"], sample_rate=16000)
    assert utt.text == "my number is four five six"
    # 100 ms lead + 200 ms voice | 800 ms pause | 200 ms voice + 100 ms tail: the voice's
    # own silence at the pause is trimmed, the rest kept.
    assert len(utt.pcm) == 1400 * 32
    samples = np.frombuffer(utt.pcm, dtype=np.int16)
    assert not samples[:1600].any() and samples[1600:4800].any()
    assert not samples[4800:4800 + 12800].any()
    assert samples[4800 + 12800: 4800 + 12800 + 160].any()
    assert utt.voice_start_ms == 100.0


def test_a_bad_pause_is_refused_before_the_call(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "--say", "my number is <pause soon> four"]) == 2  # nothing runs
    assert capsys.readouterr().err == ("error: caller line 'my number is <pause soon> four': '<pause soon>' is not "
                                       "a pause (write <pause 800>, in ms)\n")


async def test_a_long_pause_ends_the_turn_on_silence_and_a_short_one_does_not() -> None:
    env = {"VOICEGRAPH__BRAIN__GREETING": "", "VOICEGRAPH__VAD__END_OF_TURN": "silence"}  # silence-only
    graph = build_graph(load_pipeline(LOCAL, env=env))
    report = await run_call_report(graph, CallOptions(
        pipeline=LOCAL, timeout_s=60,
        say=("I would like to <pause 300> change my address", "my date of birth is <pause 1000> the fourth of July")))
    assert report["ended"] == "eos" and report["errors"] == []
    turns = report["turns"]
    # 300 ms is bridged (one turn); 1000 ms is longer than the 600 ms window (two turns).
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert "like" in turns[0]["heard_text"].lower() and "address" in turns[0]["heard_text"].lower()
    assert "birth" in turns[1]["heard_text"].lower() and "july" in turns[2]["heard_text"].lower()
    for t in turns:
        assert t["end_reason"] == "silence"
        assert t["end_of_turn_ms"] == 600.0  # the silence window, exactly, on the audio clock
        assert t["preemptive"] == {"started": False, "used": False}


async def test_a_preemptive_answer_to_the_words_before_a_pause_is_never_heard() -> None:
    env = {"VOICEGRAPH__BRAIN__GREETING": "", "VOICEGRAPH__BRAIN__PREEMPTIVE": "true"}
    graph = build_graph(load_pipeline(LOCAL, env=env))
    metrics: list[MetricsEvent] = []
    graph.watch_events(lambda e: metrics.append(e) if isinstance(e, MetricsEvent) else None)
    report = await run_call_report(graph, CallOptions(pipeline=LOCAL, timeout_s=60,
                                                      say=("I would like to <pause 400> change my address",)))
    assert report["ended"] == "eos" and report["errors"] == []
    [turn] = report["turns"]  # the 400 ms pause is bridged
    assert turn["preemptive"]["started"] is True
    started = [m.turn for m in metrics if m.name == PREEMPTIVE_STARTED]
    settled = [(m.turn, m.value) for m in metrics if m.name == PREEMPTIVE_USED]
    assert started and set(started) == {1} and len(settled) == len(started)
    # Every preemptive answer but the last was dropped; the last was used iff the report says so.
    assert [v for _, v in settled[:-1]] == [0] * (len(settled) - 1)
    assert settled[-1][1] == (1 if turn["preemptive"]["used"] else 0)
    # What was said answers the whole line: nothing of an answer to "I would like to" alone.
    assert "address" in turn["bot_text"].lower() and turn["bot_heard_text"] == turn["bot_text"]
    caller = graph.nodes["caller"]
    assert isinstance(caller, SpeechCaller)
    assert {t for _, t in caller.heard.frames} == {1}
    assert abs(caller.heard.ms - turn["bot_audio_ms"]) <= 20
