"""The data tier on an ACS call: the server's media route attaches the call like `voicegraph call`
does, its events reach the subscriber the worker's side-car config declares, and the call is
recorded."""

from __future__ import annotations

import json
import os
import socket
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cloudevents.core.v1.event import CloudEvent

from processors.sidecars.events import (
    AGENT_RESPONSE_GENERATED,
    CALL_ENDED,
    CALL_STARTED,
    PARTICIPANT_JOINED,
    RECORDING_STARTED,
    TRANSCRIPTION_RECEIVED,
)
from processors.sidecars.recording import recording_path
from voicegraph.cli import main

RECEIVED: list[CloudEvent] = []

LOCAL = """\
name: acs_events_test
nodes:
  caller: {use: speech_caller, voice: espeak, sample_rate: 16000, pause_ms: 200, say: [I want to file a claim]}
  vad: {use: vad, aggressiveness: 2, start_ms: 200, stop_ms: 300, silence_ms: 600}
  barge_in: {use: barge_in, min_speech_ms: 200}
  stt: {use: stt, engine: pocketsphinx}
  brain:
    use: rules_brain
    greeting: "Hello, this is Contoso."
    rules: {"\\\\b(claim|accident)\\\\b": "I can start a claim for you right away."}
    fallback: "Could you tell me more?"
  sentences: {use: sentences}
  tts: {use: tts, engine: espeak}
  resample_out: {use: resample, rate: 16000, stream: out}
edges:
  - caller -> vad -> barge_in -> stt -> brain -> sentences -> tts -> resample_out -> caller
"""


def keep(event: CloudEvent) -> None:
    """The subscriber the test's side-car config names."""
    RECEIVED.append(event)


def test_an_acs_call_publishes_its_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "sidecars.yaml"
    config.write_text(f'events:\n  subscribers:\n    - {{name: test, use: "{__name__}:keep"}}\n')
    monkeypatch.setenv("VOICEGRAPH_SIDECARS", str(config))
    monkeypatch.setenv("VOICEGRAPH_RECORDINGS", str(tmp_path / "rec"))
    pipeline = tmp_path / "local_test.yaml"
    pipeline.write_text(LOCAL)
    RECEIVED.clear()
    assert main(["call", "--via", "acs", "--pipeline", str(pipeline), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    types = [e.get_type() for e in RECEIVED]
    assert types == [CALL_STARTED, PARTICIPANT_JOINED, PARTICIPANT_JOINED, RECORDING_STARTED,
                     AGENT_RESPONSE_GENERATED, TRANSCRIPTION_RECEIVED, AGENT_RESPONSE_GENERATED, CALL_ENDED]
    data: list[dict[str, Any]] = [e.get_data() for e in RECEIVED]  # type: ignore[misc]
    recording = Path(data[3]["location"])
    assert recording == recording_path(tmp_path / "rec", str(RECEIVED[0].get_subject()))
    with wave.open(str(recording), "rb") as wav:  # the ACS line recorded: caller left, bot right
        assert (wav.getnchannels(), wav.getframerate()) == (2, 16000)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    assert np.abs(stereo[:, 0]).max() > 1000 and np.abs(stereo[:, 1]).max() > 1000
    del data[3]
    assert data[0]["transport"] == "acs" and data[0]["pipeline"] == "acs_events_test"
    assert data[0]["worker"] == f"{socket.gethostname()}:{os.getpid()}"  # the server runs in this process
    assert data[3]["text"] == "Hello, this is Contoso." and data[3]["heard_text"] == "Hello, this is Contoso."
    assert data[4]["text"] == report["turns"][1]["heard_text"]
    assert data[5]["text"] == report["turns"][1]["bot_text"]
    assert data[6]["reason"] == "eos" and data[6]["turns"] == 2
    assert len({e.get_subject() for e in RECEIVED}) == 1  # one call
