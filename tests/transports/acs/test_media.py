"""The ACS media transport on an in-memory socket and a virtual clock: caller audio and
DTMF into the graph, bot audio out as AudioData messages on exact 20 ms slots, StopAudio
at the instant of a flush, bad messages logged while the call goes on, a hostile peer
and a rate change ending the call with a clear error, the socket's close ending it."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocket

from pipeline.clock import VirtualClock
from pipeline.context import CallContext
from pipeline.errors import ConfigError, StateError
from pipeline.frames import (
    DTMF,
    AudioFormat,
    ErrorEvent,
    FlushStart,
    InputAudio,
    OutputAudio,
    ResponseEnd,
    ResponseStart,
)
from pipeline.graph import Graph
from pipeline.runner import CallResult, run_call
from pipeline.settings import coerce_settings
from pipeline.testing import Puppet, advance_to
from transports.acs.media import (
    MAX_BAD_IN_A_ROW,
    AcsMediaSettings,
    AcsMediaTransport,
    MediaState,
    StarletteMediaSocket,
)

MS = 1_000_000


def pcm(ms: int, rate: int = 16000, value: int = 1000) -> bytes:
    return value.to_bytes(2, "little", signed=True) * (rate * ms // 1000)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def metadata(rate: int = 16000) -> str:
    return json.dumps({"kind": "AudioMetadata", "audioMetadata": {
        "subscriptionId": "sub-1", "encoding": "PCM", "sampleRate": rate, "channels": 1, "length": rate // 25}})


def audio_data(data: bytes, *, silent: bool = False) -> str:
    return json.dumps({"kind": "AudioData", "audioData": {
        "timestamp": "2024-11-15T19:16:12.925Z", "participantRawID": "8:acs:caller", "data": b64(data),
        "silent": silent}})


class MemorySocket:
    """An accepted media socket in memory: the test plays ACS's side."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.sent: list[tuple[int, str]] = []  # (call-clock ns, message)
        self.closed: tuple[int, str] | None = None
        self.close_code: int | None = None  # the peer's, once it closed

    async def receive(self) -> str | bytes | None:
        return await self.inbox.get()

    async def send_text(self, text: str) -> None:
        if self.closed is not None:
            raise ConnectionError("closed")
        self.sent.append((self.clock.now_ns(), text))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def sent_json(self) -> list[tuple[int, dict[str, Any]]]:
        return [(ns // MS, json.loads(text)) for ns, text in self.sent]


class Collector(Puppet):
    """Stands in for the rest of the graph: keeps what the caller sent, speaks when told."""

    def __init__(self) -> None:
        super().__init__((InputAudio, DTMF), name="graph")

    def audio(self) -> bytes:
        return b"".join(f.pcm for f in self.got if isinstance(f, InputAudio))

    def errors(self) -> list[ErrorEvent]:
        return [e for e in self.events if isinstance(e, ErrorEvent)]


class Call:
    def __init__(self, clock: VirtualClock, **settings: Any) -> None:
        self.clock = clock
        self.socket = MemorySocket(clock)
        self.line = AcsMediaTransport(AcsMediaSettings(**settings), name="acs")
        self.line.attach(self.socket)
        self.graph = Collector()
        graph = Graph("acs")
        graph.chain(self.line, self.graph, self.line)
        self.task: asyncio.Task[CallResult] = asyncio.create_task(run_call(graph, CallContext(clock=clock)))

    async def send(self, *messages: str | bytes) -> None:
        for message in messages:
            self.socket.inbox.put_nowait(message)
        await self.clock.advance(0)

    async def hang_up(self) -> CallResult:
        self.drop(1000)
        await self.clock.advance(0)
        return await self.task

    def drop(self, code: int = 1006) -> MemorySocket:
        """The peer's side of the socket closes with ``code`` (1006: no close frame)."""
        socket = self.socket
        socket.close_code = code
        socket.inbox.put_nowait(None)
        return socket

    async def reconnect(self) -> bool:
        """ACS connects again: a new socket, handed to the call."""
        self.socket = MemorySocket(self.clock)
        taken = self.line.resume(self.socket)
        await self.clock.advance(0)
        return taken


async def start(clock: VirtualClock, **settings: Any) -> Call:
    call = Call(clock, **settings)
    await clock.advance(0)  # the call starts; the pacer's first slot is now (0 ms)
    return call


async def test_metadata_then_audio_reaches_the_graph_at_the_announced_rate() -> None:
    clock = VirtualClock()
    call = await start(clock, sample_rate=24000)
    await call.send(metadata(24000), audio_data(pcm(20, 24000)), audio_data(bytes(960), silent=True),
                    metadata(24000))  # ACS may repeat the metadata: no second format
    formats = [f for f in call.graph.got if isinstance(f, AudioFormat)]
    assert [(f.sample_rate, f.channels, f.stream) for f in formats] == [(24000, 1, "in")]
    chunks = [f.pcm for f in call.graph.got if isinstance(f, InputAudio)]
    assert chunks == [pcm(20, 24000), bytes(960)]  # the silent chunk's samples reach VAD too
    result = await call.hang_up()
    assert result.reason == "eos" and result.errors == ()
    assert call.line.messages_refused == 0


async def test_bot_audio_goes_out_as_audio_data_messages_on_20_ms_slots() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=0)
    await call.send(metadata())
    first, second = pcm(20, value=1000), pcm(20, value=-2000)
    await call.graph.say(ResponseStart(turn=1), OutputAudio(first + second, turn=1), ResponseEnd(turn=1))
    await advance_to(clock, 100)
    assert call.socket.sent == [
        (20 * MS, '{"Kind":"AudioData","AudioData":{"Data":"' + b64(first) + '"},"StopAudio":null}'),
        (40 * MS, '{"Kind":"AudioData","AudioData":{"Data":"' + b64(second) + '"},"StopAudio":null}'),
    ]
    assert call.line.frames_sent == 2
    await call.hang_up()


async def test_camel_casing_sends_what_the_js_sdk_sends() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=0, casing="camel")
    await call.send(metadata())
    frame = pcm(20)
    await call.graph.say(ResponseStart(turn=1), OutputAudio(frame, turn=1), ResponseEnd(turn=1))
    await advance_to(clock, 40)
    assert call.socket.sent == [
        (20 * MS, '{"kind":"audioData","audioData":{"data":"' + b64(frame) + '","isSilent":false},"stopAudio":{}}'),
    ]
    await call.hang_up()


async def test_a_flush_sends_stop_audio_at_once_and_no_frame_of_the_turn_follows() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=0)
    await call.send(metadata())
    await call.graph.say(ResponseStart(turn=1), OutputAudio(pcm(200), turn=1))
    await advance_to(clock, 70)  # frames at 20, 40, 60
    call.graph.emit(FlushStart(turn=1))
    await clock.advance(0)  # no time passes
    await advance_to(clock, 300)
    sent = call.socket.sent_json()
    assert [ms for ms, _ in sent] == [20, 40, 60, 70]
    assert [m["Kind"] for _, m in sent] == ["AudioData"] * 3 + ["StopAudio"]
    assert call.socket.sent[-1] == (70 * MS, '{"Kind":"StopAudio","AudioData":null,"StopAudio":{}}')
    await call.hang_up()


async def test_dtmf_becomes_a_dtmf_frame() -> None:
    clock = VirtualClock()
    call = await start(clock)
    await call.send(metadata(), '{"kind":"DtmfData","dtmfData":{"data":"3"}}',
                    '{"Kind":"DtmfData","DtmfData":{"Data":"pound"}}')
    assert [f.digits for f in call.graph.got if isinstance(f, DTMF)] == ["3", "#"]
    assert all(f.turn == 0 for f in call.graph.got if isinstance(f, DTMF))
    await call.hang_up()


async def test_messages_of_either_casing_decode() -> None:
    clock = VirtualClock()
    call = await start(clock)
    pascal_meta = '{"Kind":"AudioMetadata","AudioMetadata":{"Encoding":"PCM","SampleRate":16000,"Channels":1}}'
    pascal_audio = '{"Kind":"AudioData","AudioData":{"Data":"' + b64(pcm(20, value=7)) + '","Silent":false}}'
    camel_audio = '{"kind":"audioData","audioData":{"data":"' + b64(pcm(20, value=9)) + '"}}'
    await call.send(pascal_meta, pascal_audio, camel_audio)
    assert call.graph.audio() == pcm(20, value=7) + pcm(20, value=9)
    assert call.line.messages_refused == 0
    await call.hang_up()


async def test_bad_messages_are_logged_and_the_call_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    clock = VirtualClock()
    call = await start(clock)
    with caplog.at_level(logging.WARNING, logger="transports.acs"):
        await call.send(audio_data(pcm(20)),  # before any metadata
                        "{not json", b"\x00\x01", '{"kind":"TranscriptionData","transcriptionData":{}}',
                        metadata(), audio_data(pcm(20, value=5)))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "AudioData before a usable AudioMetadata: no AudioMetadata has been received yet" in warnings[0]
    assert "not JSON" in warnings[1] and "binary frame of 2 bytes" in warnings[2]
    assert "unknown kind 'TranscriptionData'" in warnings[3]
    assert call.line.messages_refused == 3
    assert call.graph.audio() == pcm(20, value=5)  # the call went on
    result = await call.hang_up()
    assert result.reason == "eos" and result.errors == ()


async def test_a_peer_sending_only_garbage_is_cut_off_with_a_clear_error() -> None:
    clock = VirtualClock()
    call = await start(clock)
    await call.send(metadata(), *["{bad"] * (MAX_BAD_IN_A_ROW - 1), audio_data(pcm(20)))
    assert not call.task.done()  # a good message between: the run starts over
    await call.send(*["{bad"] * MAX_BAD_IN_A_ROW)
    result = await call.task
    assert result.reason == "fatal"
    assert len(result.errors) == 1 and result.errors[0].node == "acs"
    assert result.errors[0].message.startswith(f"{MAX_BAD_IN_A_ROW} ACS media messages in a row were refused")
    assert call.socket.closed is not None and call.socket.closed[0] == 1008
    assert call.line.messages_refused == 2 * MAX_BAD_IN_A_ROW - 1


async def test_a_rate_change_mid_call_ends_the_call_naming_both_rates() -> None:
    clock = VirtualClock()
    call = await start(clock)
    await call.send(metadata(16000), audio_data(pcm(20)), metadata(24000), audio_data(pcm(20, 24000)))
    result = await call.task
    assert result.reason == "fatal"
    assert [e.message for e in result.errors] == [
        "ACS changed the audio format mid-call, from 16000 Hz to 24000 Hz; a call's line rate is fixed"]
    assert call.socket.closed is not None and call.socket.closed[0] == 1003
    assert call.graph.audio() == pcm(20)  # nothing at the new rate went into the graph


async def test_the_socket_closing_ends_the_call_and_late_bot_audio_is_dropped() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=0)
    await call.send(metadata())
    await call.graph.say(ResponseStart(turn=1), OutputAudio(pcm(100), turn=1))
    await advance_to(clock, 30)
    call.socket.closed = (1000, "")  # the peer went away; the close message is next in line
    await advance_to(clock, 50)  # a send fails on the closed socket: dropped, no error
    result = await call.hang_up()
    assert result.reason == "eos" and result.errors == ()
    assert [ms for ms, _ in call.socket.sent_json()] == [20]


async def test_a_call_without_a_socket_or_with_two_is_refused() -> None:
    line = AcsMediaTransport(name="acs")
    line.attach(MemorySocket(VirtualClock()))
    with pytest.raises(StateError, match="already attached"):
        line.attach(MemorySocket(VirtualClock()))
    bare = AcsMediaTransport(name="bare")
    graph = Graph("acs")
    collector = Collector()
    graph.chain(bare, collector, bare)
    result = await run_call(graph, CallContext(clock=VirtualClock()))
    assert [e.message for e in result.errors] == ["StateError: bare: no media socket attached before the call started"]


async def test_a_socket_that_never_sends_metadata_ends_the_call_at_the_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = VirtualClock()
    call = await start(clock, metadata_timeout_s=2.0)
    await call.send(audio_data(pcm(20)), '{"kind":"DtmfData","dtmfData":{"data":"1"}}')  # anything but metadata
    await advance_to(clock, 1999)
    assert not call.task.done()
    await advance_to(clock, 2000)
    result = await call.task
    assert (result.reason, result.duration_s) == ("fatal", 2.0)
    message = "no AudioMetadata within 2 s of the call's start; ACS sends it first on every media connection"
    assert [e.message for e in result.errors] == [message]
    assert call.socket.closed == (1002, message)
    assert call.line.media_state is MediaState.ENDED
    ours = [r for r in caplog.records if r.name.startswith("transports.acs")]
    assert any(f"ending the call: {message}" in r.getMessage() for r in ours)
    assert all(r.exc_info is None for r in ours)


async def test_metadata_in_time_disarms_the_timeout() -> None:
    clock = VirtualClock()
    call = await start(clock, metadata_timeout_s=2.0)
    await advance_to(clock, 1980)
    await call.send(metadata())
    await advance_to(clock, 10_000)
    assert not call.task.done()
    result = await call.hang_up()
    assert result.reason == "eos" and result.errors == ()


async def test_a_drop_keeps_the_call_for_acs_to_reconnect(caplog: pytest.LogCaptureFixture) -> None:
    """Same graph, same turn across the drop; audio while away dropped, not queued; the
    bot's later audio reaches the new socket; one socket at a time."""
    caplog.set_level(logging.INFO, logger="transports.acs.media")
    clock = VirtualClock()
    call = await start(clock, lead_ms=0, reconnect_window_s=5.0)
    graph = call.graph
    await call.send(metadata(), audio_data(pcm(20, value=3)))
    await graph.say(ResponseStart(turn=1), OutputAudio(pcm(60, value=100) + pcm(60, value=200), turn=1),
                    ResponseEnd(turn=1))
    await advance_to(clock, 50)  # frames at 20 and 40 went out
    first = call.drop(1006)
    await clock.advance(0)
    await advance_to(clock, 100)  # frames at 60, 80 and 100 fall in the gap
    assert call.line.media_state is MediaState.AWAY and not call.task.done()
    assert await call.reconnect() is True
    assert call.line.resume(MemorySocket(clock)) is False  # a second socket while one is connected
    await call.send(metadata(), audio_data(pcm(20, value=4)))  # ACS starts the new connection with metadata
    await advance_to(clock, 200)
    assert [(ms, m["Kind"]) for ms, m in first.sent_json()] == [(20, "AudioData"), (40, "AudioData")]
    resumed = call.socket.sent_json()
    assert [ms for ms, _ in resumed] == [120]  # the rest of the turn, in step with the call's time
    assert base64.b64decode(resumed[0][1]["AudioData"]["Data"]) == pcm(20, value=200)
    assert (call.line.frames_sent, call.line.frames_dropped, call.line.reconnects) == (6, 3, 1)  # sent counts every frame handed to the wire
    assert call.graph is graph and graph.audio() == pcm(20, value=3) + pcm(20, value=4)
    formats = [f for f in graph.got if isinstance(f, AudioFormat)]
    assert len(formats) == 1  # the same rate again is no new format
    await graph.say(ResponseStart(turn=2), OutputAudio(pcm(20, value=300), turn=2), ResponseEnd(turn=2))
    await advance_to(clock, 260)
    assert base64.b64decode(call.socket.sent_json()[-1][1]["AudioData"]["Data"]) == pcm(20, value=300)
    result = await call.hang_up()
    assert result.reason == "eos" and result.errors == ()
    states = [r.getMessage().split(": ", 2)[2] for r in caplog.records if "media " in r.getMessage() and "->" in r.getMessage()]
    assert [s.split(":")[0] for s in states] == ["media connected -> away", "media away -> connected",
                                                  "media connected -> ended"]
    assert "ACS reconnected after 50 ms" in states[1]


async def test_a_flush_while_away_sends_stop_audio_first_on_the_new_socket() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=0)
    await call.send(metadata())
    await call.graph.say(ResponseStart(turn=1), OutputAudio(pcm(400), turn=1))
    await advance_to(clock, 50)
    call.drop()
    await clock.advance(0)
    await advance_to(clock, 70)
    call.graph.emit(FlushStart(turn=1))  # the caller barged in while the socket was away
    await advance_to(clock, 90)
    await call.graph.say(ResponseStart(turn=2), OutputAudio(pcm(40, value=9), turn=2), ResponseEnd(turn=2))
    assert await call.reconnect() is True
    await advance_to(clock, 200)
    kinds = [(ms, m["Kind"]) for ms, m in call.socket.sent_json()]
    assert kinds == [(90, "StopAudio"), (100, "AudioData"), (120, "AudioData")]
    await call.hang_up()


async def test_no_reconnect_within_the_window_ends_the_call_with_a_clear_reason() -> None:
    clock = VirtualClock()
    call = await start(clock, reconnect_window_s=3.0)
    await call.send(metadata())
    await advance_to(clock, 1000)
    call.drop(1011)
    await clock.advance(0)
    await advance_to(clock, 3999)
    assert not call.task.done() and call.line.awaiting_reconnect
    await advance_to(clock, 4000)
    result = await call.task
    assert (result.reason, result.duration_s) == ("fatal", 4.0)
    assert [e.message for e in result.errors] == [
        "the media socket dropped (close 1011) and ACS did not reconnect within 3 s"]
    assert call.line.resume(MemorySocket(clock)) is False  # too late: the call has ended


async def test_without_a_window_a_drop_ends_the_call() -> None:
    clock = VirtualClock()
    call = await start(clock, reconnect_window_s=0)
    await call.send(metadata())
    call.drop(1006)
    await clock.advance(0)
    result = await call.task
    assert result.reason == "eos" and result.errors == ()
    assert call.line.resume(MemorySocket(clock)) is False


def test_settings_and_the_entry_point() -> None:
    project = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    target = project["project"]["entry-points"]["voicegraph.processors"]["acs_media"]
    assert EntryPoint("acs_media", target, "voicegraph.processors").load() is AcsMediaTransport
    s = coerce_settings(AcsMediaSettings, {"sample_rate": 24000, "lead_ms": 40, "casing": "camel"})
    assert (s.sample_rate, s.lead_ms, s.casing) == (24000, 40, "camel")
    with pytest.raises(ConfigError, match="sample_rate"):
        coerce_settings(AcsMediaSettings, {"sample_rate": 8000})
    with pytest.raises(ConfigError, match="casing"):
        coerce_settings(AcsMediaSettings, {"casing": "snake"})
    assert DTMF in AcsMediaTransport.produces and InputAudio in AcsMediaTransport.produces


class Asgi:
    """The server side of an ASGI WebSocket in memory: what the app receives and sends."""

    def __init__(self, *incoming: dict[str, Any]) -> None:
        self.incoming = [{"type": "websocket.connect"}, *incoming]
        self.sent: list[dict[str, Any]] = []
        self.fail_sends = False

    async def receive(self) -> dict[str, Any]:
        return self.incoming.pop(0)

    async def send(self, message: dict[str, Any]) -> None:
        if self.fail_sends:
            raise OSError("connection reset")
        self.sent.append(message)


async def accepted(asgi: Asgi) -> StarletteMediaSocket:
    ws = WebSocket({"type": "websocket", "path": "/acs/media", "headers": []}, asgi.receive, asgi.send)
    await ws.accept()
    return StarletteMediaSocket(ws)


async def test_the_starlette_wrapper_gives_text_binary_and_the_close() -> None:
    asgi = Asgi({"type": "websocket.receive", "text": metadata()}, {"type": "websocket.receive", "bytes": b"\x01"},
                {"type": "websocket.disconnect", "code": 1000})
    socket = await accepted(asgi)
    assert [await socket.receive(), await socket.receive(), await socket.receive()] == [metadata(), b"\x01", None]
    assert await socket.receive() is None  # asking again after the close is no error
    assert socket.close_code == 1000
    await asyncio.wait_for(socket.wait_closed(), 5)  # the peer's close releases the socket
    await socket.send_text("after")  # the peer closed, our side has not: ASGI still takes it
    await socket.close(1000, "bye")
    assert asgi.sent[1:] == [{"type": "websocket.send", "text": "after"},
                             {"type": "websocket.close", "code": 1000, "reason": "bye"}]
    with pytest.raises(ConnectionError, match="media socket closed"):
        await socket.send_text("too late")
    await socket.close(1000, "again")  # a no-op
    assert len(asgi.sent) == 3


async def test_the_starlette_wrapper_reports_a_dropped_connection_as_1006() -> None:
    asgi = Asgi({"type": "websocket.disconnect", "code": 1006})
    socket = await accepted(asgi)
    assert (await socket.receive(), socket.close_code) == (None, 1006)
    other = await accepted(Asgi())
    await other.close(1011, "call ended")  # our close also releases it
    await asyncio.wait_for(other.wait_closed(), 5)
    assert other.close_code is None  # the peer never said


async def test_the_starlette_wrapper_turns_a_reset_connection_into_connection_error() -> None:
    asgi = Asgi()
    socket = await accepted(asgi)
    asgi.fail_sends = True
    with pytest.raises(ConnectionError, match="media socket closed"):
        await socket.send_text(audio_data(pcm(20)))
