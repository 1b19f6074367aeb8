"""The /acs/media route through Starlette's TestClient: tokens refused with 1008, a real
spoken call (Piper, pocketsphinx, the rules brain) over the socket with the greeting and
the answer coming back as AudioData messages, the client's close ending the call and its
session, the development switch, and the route mounted in the app."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from transports.acs.route import MEDIA_PATH, media_route
from transports.acs.sessions import CallSessions
from transports.local.script import render_script
from voicegraph.app import create_app
from voicegraph.paths import pipelines_dir

FRAME = 640  # 20 ms of PCM16 mono at 16 kHz
WAIT_S = 30.0  # bound on waiting for the app's thread to finish a call (never reached when it works)

# The smallest graph with an ACS line: the bot says nothing, so a call costs no model.
TINY = """\
name: tiny_acs
nodes:
  caller: {use: acs_media, sample_rate: 16000}
  middle: {use: passthrough}
edges:
  - caller -> middle -> caller
"""


class Served:
    """The app, with an event set each time a WebSocket connection's handling returns."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.done = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "websocket":
                self.done.set()


def client_for(sessions: CallSessions, pipeline: Path, *, no_auth: bool = False) -> tuple[TestClient, Served]:
    served = Served(Starlette(routes=[media_route(sessions, pipeline, no_auth=no_auth)]))
    return TestClient(served), served


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_acs.yaml"
    path.write_text(TINY)
    return path


def metadata(rate: int = 16000) -> str:
    return json.dumps({"kind": "AudioMetadata", "audioMetadata": {
        "subscriptionId": "sub-1", "encoding": "PCM", "sampleRate": rate, "channels": 1, "length": rate // 25}})


def audio_data(pcm: bytes) -> str:
    return json.dumps({"kind": "AudioData", "audioData": {
        "timestamp": "2024-11-15T19:16:12.925Z", "participantRawID": "8:acs:caller",
        "data": base64.b64encode(pcm).decode("ascii"), "silent": not any(pcm)}})


def frames(pcm: bytes) -> Iterator[bytes]:
    pcm += b"\0" * (-len(pcm) % FRAME)
    for i in range(0, len(pcm), FRAME):
        yield pcm[i:i + FRAME]


def refused(client: TestClient, url: str) -> int:
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect(url):
        pass
    return info.value.code


def test_missing_wrong_and_reused_tokens_are_refused_with_1008(
        tiny: Path, caplog: pytest.LogCaptureFixture) -> None:
    sessions = CallSessions()
    client, served = client_for(sessions, tiny)
    token = sessions.expect("call-1")
    caplog.set_level(logging.WARNING, logger="transports.acs.route")

    assert refused(client, MEDIA_PATH) == 1008
    assert refused(client, f"{MEDIA_PATH}?token=") == 1008
    assert refused(client, f"{MEDIA_PATH}?token={token[:-1]}x") == 1008
    assert sessions.counts().expected == 1  # a wrong guess does not spend the real token

    with client.websocket_connect(f"{MEDIA_PATH}?token={token}") as ws:
        assert sessions.counts().live == 1
        assert refused(client, f"{MEDIA_PATH}?token={token}") == 1008  # reused while the call runs
        assert sessions.live("call-1") is not None  # ... and the call it belongs to is untouched
        ws.close(1000)
        assert served.done.wait(WAIT_S)
    assert refused(client, f"{MEDIA_PATH}?token={token}") == 1008  # reused after the call

    counts = sessions.counts()
    assert (counts.expected, counts.live, counts.connected, counts.refused, counts.ended) == (0, 0, 1, 3, 1)  # refused: tokens given
    warnings = [r for r in caplog.records if r.name == "transports.acs.route"]
    assert [r.getMessage().split(": ", 1)[1] for r in warnings] == [
        "no token", "no token", "an unknown, used or expired token", "an unknown, used or expired token",
        "an unknown, used or expired token"]
    assert all(r.exc_info is None for r in warnings)
    assert all(token not in r.getMessage() for r in caplog.records)  # never logged


def test_closing_the_socket_ends_the_call_and_its_session(tiny: Path) -> None:
    sessions = CallSessions()
    client, served = client_for(sessions, tiny)
    token = sessions.expect("call-7")
    with client.websocket_connect(f"{MEDIA_PATH}?token={token}") as ws:
        ws.send_text(metadata())
        for chunk in frames(b"\0" * FRAME * 10):
            ws.send_text(audio_data(chunk))
        session = sessions.live("call-7")
        assert session is not None
        ws.close(1000)
        assert served.done.wait(WAIT_S)
    assert session.result is not None and session.result.reason == "eos"
    assert session.result.errors == ()
    assert session.runner is not None and session.graph is not None and session.graph.name == "tiny_acs"
    assert sessions.live("call-7") is None
    assert sessions.counts().live == 0 and sessions.counts().ended == 1


def test_a_pipeline_without_an_acs_line_closes_the_socket_with_1011(tmp_path: Path) -> None:
    pipeline = tmp_path / "text.yaml"
    pipeline.write_text((pipelines_dir() / "text.yaml").read_text())
    sessions = CallSessions()
    client, served = client_for(sessions, pipeline)
    with client.websocket_connect(f"{MEDIA_PATH}?token={sessions.expect('call-2')}") as ws:
        message = ws.receive()
        assert message["type"] == "websocket.close" and message["code"] == 1011
        assert served.done.wait(WAIT_S)
    assert sessions.counts().live == 0


def test_the_development_switch_admits_a_socket_without_a_token(
        tiny: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="transports.acs.route")
    monkeypatch.setenv("VOICEGRAPH_ACS_MEDIA_NO_AUTH", "1")
    sessions = CallSessions()
    served = Served(Starlette(routes=[media_route(sessions, tiny)]))  # the switch read from the environment
    assert any("WITHOUT A TOKEN" in r.getMessage() for r in caplog.records)
    with TestClient(served).websocket_connect(MEDIA_PATH) as ws:
        assert sessions.counts().live == 1
        ws.close(1000)
        assert served.done.wait(WAIT_S)
    assert sessions.counts().live == 0 and sessions.counts().connected == 1
    # a token that is given is still checked
    assert refused(TestClient(served), f"{MEDIA_PATH}?token=guess") == 1008


def test_the_switch_is_off_by_default(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOICEGRAPH_ACS_MEDIA_NO_AUTH", raising=False)
    client = TestClient(Starlette(routes=[media_route(CallSessions(), tiny)]))  # the switch from the environment
    assert refused(client, MEDIA_PATH) == 1008


def test_the_app_mounts_the_route() -> None:
    app = create_app()
    assert isinstance(app.state.acs_sessions, CallSessions)
    assert refused(TestClient(app), MEDIA_PATH) == 1008


def _next_message(ws: WebSocketTestSession) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.receive_text())
    return message


def test_a_spoken_call_over_the_socket(caplog: pytest.LogCaptureFixture) -> None:
    """Greeting first; the caller talks over it (a StopAudio cuts it); then the answer."""
    caplog.set_level(logging.INFO, logger="transports.acs.route")
    (line,) = render_script(["What are your opening hours"], sample_rate=16000)
    sessions = CallSessions()
    client, served = client_for(sessions, pipelines_dir() / "acs.yaml")
    token = sessions.expect("call-42")
    greeting: list[bytes] = []
    answer: list[bytes] = []
    stops = 0
    with client.websocket_connect(f"{MEDIA_PATH}?token={token}") as ws:
        ws.send_text(metadata())
        first = _next_message(ws)  # the greeting's first frame: nothing was said yet
        assert set(first) == {"Kind", "AudioData", "StopAudio"}
        assert first["Kind"] == "AudioData" and first["StopAudio"] is None
        assert set(first["AudioData"]) == {"Data"}
        greeting.append(base64.b64decode(first["AudioData"]["Data"]))
        for chunk in frames(line.pcm + b"\0" * (16000 * 2 * 3 // 2)):  # the line, then 1.5 s of silence
            ws.send_text(audio_data(chunk))
        for _ in range(2000):  # a bound, never reached: the answer starts within seconds
            message = _next_message(ws)
            if message["Kind"] == "StopAudio":
                assert message == {"Kind": "StopAudio", "AudioData": None, "StopAudio": {}}
                stops += 1
                continue
            assert message["Kind"] == "AudioData" and message["StopAudio"] is None
            (answer if stops else greeting).append(base64.b64decode(message["AudioData"]["Data"]))
            if len(answer) == 75:  # 1.5 s of the answer is enough; the rest plays out in real time
                break
        session = sessions.live("call-42")
        assert session is not None
        ws.close(1000)
        assert served.done.wait(WAIT_S)

    assert stops == 1  # the caller's speech cut the greeting once
    assert all(len(f) == FRAME for f in greeting + answer)
    assert 1 <= len(greeting) < 200  # cut well before its ~4.5 s
    speech = b"".join(answer)
    assert len(speech) == 75 * FRAME  # 1.5 s
    loud = sum(1 for f in answer if max(abs(int.from_bytes(f[i:i + 2], "little", signed=True))
                                        for i in range(0, FRAME, 2)) > 1000)
    assert loud > 25  # speech, not silence
    assert session.result is not None and session.result.reason == "eos"
    assert sessions.counts().live == 0
    assert any("call call-42 ended: eos" in r.getMessage() for r in caplog.records)
