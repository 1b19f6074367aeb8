"""Whole spoken calls on the embedded stack: caller audio in, bot audio out, barge-in.

These run in real time (the caller speaks at the pace of speech), so they are few and
short. They assert what was said, heard and played, never how fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import build_graph, load_pipeline
from pipeline.graph import Graph
from processors.llm.rules import RulesBrain
from processors.stt.wer import wer
from transports.local.speech import SpeechCaller
from voicegraph.call import CallOptions, run_call_report

ROOT = Path(__file__).resolve().parents[3]
LOCAL = ROOT / "config" / "pipelines" / "local.yaml"
CLAIM = "I want to file a claim for my car accident"
CLAIM_REPLY = ("I am sorry to hear about your accident. I can start a claim for you right away. "
               "First, what is your policy number?")


def local_graph(*, greeting: bool = False) -> Graph:
    """The demo pipeline; without its greeting unless asked, so turn 1 is the caller's."""
    return build_graph(load_pipeline(LOCAL, env={} if greeting else {"VOICEGRAPH__BRAIN__GREETING": ""}))


async def call(graph: Graph, say: tuple[str, ...], **kw: Any) -> dict[str, Any]:
    return await run_call_report(graph, CallOptions(pipeline=LOCAL, say=say, timeout_s=60, **kw))


async def test_a_spoken_call_turns_caller_audio_into_a_spoken_answer() -> None:
    graph = local_graph()
    report = await call(graph, (CLAIM, "What are your opening hours"))
    assert report["ended"] == "eos" and report["errors"] == []
    turns = report["turns"]
    assert [t["turn"] for t in turns] == [1, 2]
    first, second = turns
    assert first["caller_text"] == CLAIM
    assert wer(CLAIM, first["heard_text"]) <= 0.35, first["heard_text"]
    assert first["bot_text"] == CLAIM_REPLY
    assert second["bot_text"].startswith("We are open from eight in the morning")
    for t in turns:
        assert not t["interrupted"]
        assert t["bot_heard_text"] == t["bot_text"]
        lat = t["latency_ms"]
        assert 0 < lat["stt_final"] <= lat["llm_first_token"] <= lat["tts_first_audio"] <= lat["first_audio_out"]
    caller = graph.nodes["caller"]
    assert isinstance(caller, SpeechCaller)
    # The caller heard as much bot audio as the report says was played, in 20 ms frames.
    played = sum(t["bot_audio_ms"] for t in turns)
    assert 6000 < played < 20000
    assert len(caller.heard.pcm) == len(caller.heard.frames) * 640
    assert abs(caller.heard.ms - played) <= 20 * len(turns)


async def test_barge_in_stops_the_bot_and_the_context_keeps_only_what_was_heard() -> None:
    graph = local_graph()
    report = await call(graph, (CLAIM, "What are your opening hours"), interrupt_after_ms=1200)
    first = report["turns"][0]
    assert first["interrupted"] is True
    assert first["barge_in_ms"] is not None and first["barge_in_ms"] > 0
    heard = first["bot_heard_text"]
    assert heard and CLAIM_REPLY.startswith(heard) and len(heard) < len(CLAIM_REPLY)
    caller = graph.nodes["caller"]
    assert isinstance(caller, SpeechCaller)
    answer = caller.line.answers[1]
    assert answer.interrupted and answer.stopped_ns
    # No bot audio of the interrupted turn reached the caller after the flush.
    late = [ns for ns, turn in caller.heard.frames if turn == 1 and ns > answer.stopped_ns]
    assert late == []
    assert 1000 <= answer.played_ms <= 1600  # it played about interrupt_after_ms, then stopped
    # The brain's context holds the heard words, marked interrupted, then the next turn.
    brain = graph.nodes["brain"]
    assert isinstance(brain, RulesBrain)
    history = brain.conversation.history
    bot1 = next(m for m in history if m.role == "assistant" and m.turn == 1)
    assert bot1.content == heard and bot1.interrupted
    assert any(m.role == "user" and m.turn == 2 for m in history)
    assert report["turns"][1]["bot_text"].startswith("We are open")


async def test_the_caller_can_play_a_wav_file_at_another_rate_in_stereo(tmp_path: Path) -> None:
    import numpy as np

    from tests.processors.stt.speech import silence, utterance
    from transports.local.wav import write_wav

    mono16 = np.frombuffer(silence(300) + utterance("What are your opening hours", pad_ms=0) + silence(300),
                           dtype=np.int16)
    import soxr

    mono8 = soxr.resample(mono16, 16000, 8000).astype(np.int16)  # telephone band
    stereo = np.stack([mono8, mono8], axis=1).reshape(-1).astype(np.int16)
    path = tmp_path / "caller.wav"
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(stereo.tobytes())
    graph = local_graph()
    report = await call(graph, (), wav=path)
    assert report["ended"] == "eos"
    assert [t["caller_text"] for t in report["turns"]] == ["<caller.wav>"]
    heard = report["turns"][0]["heard_text"]
    assert wer("What are your opening hours", heard) <= 0.5, heard
    assert report["turns"][0]["bot_text"] and report["turns"][0]["bot_audio_ms"] > 500
    write_wav(tmp_path / "x.wav", b"\x00\x00", 8000)  # the writer round-trips too


def test_bad_wav_is_a_clear_error_not_a_crash(tmp_path: Path, capsys: Any) -> None:
    from voicegraph.cli import main

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not a wav")
    assert main(["call", "--wav", str(bad), "--timeout", "20"]) == 1
    err = capsys.readouterr().err
    assert "node 'caller' failed to start" in err and "not a readable WAV file" in err


async def test_the_caller_barges_in_on_the_greeting_and_the_context_keeps_only_its_heard_part() -> None:
    graph = local_graph(greeting=True)
    report = await call(graph, (CLAIM,), interrupt_after_ms=600)
    assert report["ended"] == "eos" and report["errors"] == []
    greeting, answer = report["turns"]
    brain = graph.nodes["brain"]
    assert isinstance(brain, RulesBrain)
    full = brain.settings.greeting
    assert greeting["turn"] == 1 and greeting["caller_text"] == "" and greeting["bot_text"] == full
    assert greeting["interrupted"] and greeting["barge_in_ms"] is not None
    heard = greeting["bot_heard_text"]
    # 600 ms of greeting, then the caller's 200 ms barge-in window: a few words, not all.
    assert heard and full.startswith(heard) and len(heard.split()) < len(full.split())
    assert answer["caller_text"] == CLAIM and answer["bot_text"] == CLAIM_REPLY
    history = brain.conversation.history
    assert history[0].role == "assistant" and history[0].content == heard and history[0].interrupted
    assert history[1].role == "user" and history[1].turn == answer["turn"] == 2


async def test_a_whole_spoken_call_runs_on_the_virtual_clock_with_the_real_time_transcript() -> None:
    import asyncio

    from pipeline.clock import VirtualClock
    from pipeline.context import CallContext
    from pipeline.testing import drive
    from voicegraph.call import run_call_report as run

    lines = (CLAIM, "What are your opening hours")
    real = await call(local_graph(), lines)
    clock = VirtualClock(start_ns=10**12)
    ctx = CallContext(clock=clock)
    virtual = asyncio.ensure_future(run(local_graph(), CallOptions(pipeline=LOCAL, say=lines, timeout_s=60), ctx=ctx))
    await drive(clock, virtual)
    report = virtual.result()
    assert report["ended"] == "eos" and report["errors"] == []
    assert [t["heard_text"] for t in report["turns"]] == [t["heard_text"] for t in real["turns"]]
    assert [t["bot_text"] for t in report["turns"]] == [t["bot_text"] for t in real["turns"]]
    for t in report["turns"]:
        lat = t["latency_ms"]
        # Speech work takes no virtual time: the text end of turn (local.yaml) ends these
        # complete sentences as soon as the STT's pause decode (200 ms of quiet, 100 ms
        # batches) hears them, after the VAD's 300 ms stop window, give or take a frame;
        # the final transcript comes with it, the first bot frame at the next slots.
        assert lat["stt_final"] in (300.0, 320.0, 340.0), lat
        assert lat["stt_final"] < lat["first_audio_out"] <= lat["stt_final"] + 60.0, lat
    # The call's frames and its duration are in virtual time.
    assert clock.now_ns() - 10**12 >= 8e9
