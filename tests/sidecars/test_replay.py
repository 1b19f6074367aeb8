"""voicegraph replay: a spoken call recorded by the data tier, replayed through another pipeline
(another voice and another brain), hears the same caller; bad recordings and text pipelines
are refused before any call. The two calls run in real time (speech at the pace of speech)."""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path

import pytest
from cloudevents.core.v1.event import CloudEvent

from pipeline.config import build_graph, load_pipeline
from processors.sidecars.events import (
    AGENT_RESPONSE_GENERATED,
    CALL_ENDED,
    CALL_STARTED,
    PARTICIPANT_JOINED,
    RECORDING_STARTED,
    TRANSCRIPTION_RECEIVED,
    EventBus,
    InProcessTransport,
    decode,
    encode,
)
from processors.sidecars.recording import recording_path
from processors.sidecars.services import DataTier
from voicegraph.call import CallOptions, run_call_report, with_data_tier
from voicegraph.cli import main

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "config" / "pipelines" / "local.yaml"
LINE = "What are your opening hours"


def other_pipeline(tmp_path: Path) -> Path:
    """The local pipeline with eSpeak for a voice and a brain of other rules."""
    text = LOCAL.read_text()
    text = text.replace("tts: {use: tts, engine: piper, fallback: espeak}", "tts: {use: tts, engine: espeak}")
    text = text.replace('greeting: "Thank you for calling Contoso insurance. How can I help you today?"',
                        'greeting: ""')
    text = text.replace("name: local", "name: other")
    text = text.replace("We are open from eight in the morning to eight in the evening, Monday to Saturday.",
                        "Our doors open at nine.")
    path = tmp_path / "other.yaml"
    path.write_text(text)
    return path


REPLAY_STARTS: list[CloudEvent] = []


def keep_start(event: CloudEvent) -> None:
    """The replay's subscriber (named in the test's side-car config)."""
    REPLAY_STARTS.append(event)


def test_a_recorded_call_replays_through_another_pipeline_with_the_same_caller_transcript(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    graph = build_graph(load_pipeline(LOCAL, env={"VOICEGRAPH__BRAIN__GREETING": ""}))
    events = InProcessTransport()
    published: list[CloudEvent] = []
    events.subscribe("all", published.append)
    tier = DataTier(events=EventBus(events), recordings=tmp_path / "rec")
    original = asyncio.run(with_data_tier(tier, run_call_report(graph, CallOptions(pipeline=LOCAL, say=(LINE,),
                                                                                   timeout_s=60))))
    assert original["errors"] == [] and len(original["turns"]) == 1
    # A full spoken call: each event once per occurrence, valid CloudEvents on the wire.
    assert [e.get_type() for e in published] == [CALL_STARTED, PARTICIPANT_JOINED, PARTICIPANT_JOINED,
                                                 RECORDING_STARTED, TRANSCRIPTION_RECEIVED,
                                                 AGENT_RESPONSE_GENERATED, CALL_ENDED]
    assert all(decode(encode(e)).get_attributes() == e.get_attributes() for e in published)
    recording = recording_path(tmp_path / "rec", original["call_id"])
    with wave.open(str(recording), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 16000)
        assert wav.getnframes() > 16000 * 2  # the line, the answer, the pauses: seconds of call
    config = tmp_path / "sidecars.yaml"
    config.write_text(f'events:\n  subscribers:\n    - {{name: r, use: "{__name__}:keep_start", types: [{CALL_STARTED}]}}\n')
    monkeypatch.setenv("VOICEGRAPH_SIDECARS", str(config))
    REPLAY_STARTS.clear()
    assert main(["replay", str(recording), "--pipeline", str(other_pipeline(tmp_path)), "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["pipeline"] == "other" and replayed["replay_of"] == str(recording)
    [started] = REPLAY_STARTS
    assert started.get_data()["transport"] == "replay"  # type: ignore[index]
    assert replayed["errors"] == []
    said = [t["heard_text"] for t in original["turns"]]
    assert [t["heard_text"] for t in replayed["turns"] if t["heard_text"]] == said
    assert replayed["turns"][0]["bot_text"] == "Our doors open at nine."
    assert replayed["turns"][0]["caller_text"] == f"<{recording.name}>"
    assert original["turns"][0]["bot_text"].startswith("We are open from eight")


def test_a_file_that_is_not_a_recording_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all")
    assert main(["replay", str(junk), "--pipeline", str(LOCAL)]) == 2
    assert f"{junk}: not a WAV recording" in capsys.readouterr().err
    mono = tmp_path / "mono.wav"
    with wave.open(str(mono), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(bytes(3200))
    assert main(["replay", str(mono), "--pipeline", str(LOCAL)]) == 2
    assert "a recording is 16-bit stereo (caller left, bot right); this file has 1 channel(s)" in (
        capsys.readouterr().err)
    assert main(["replay", str(tmp_path / "none.wav"), "--pipeline", str(LOCAL)]) == 2
    assert "none.wav: no such recording" in capsys.readouterr().err


def test_a_text_pipeline_cannot_replay_audio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "any.wav"), "--pipeline", "text"]) == 2
    assert "replay needs a speech pipeline" in capsys.readouterr().err
