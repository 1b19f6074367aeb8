"""The media caller: its codec half and its ear on literal values, then whole calls against
the /acs/media route on a real uvicorn server (port 0): the answer comes back paced, a
talk-over gets StopAudio and no more audio of the stopped turn, hanging up frees the session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.errors import FrameError, ProtocolError
from pipeline.frames import BotStoppedSpeaking, EventFrame
from transports.acs.auth import NoAuth
from transports.acs.codec import InboundEncoder, MediaDecoder, MediaEncoder, OutboundDecoder
from transports.acs.messages import AudioChunk, AudioMetadata, BotAudio, Dtmf, StopAudio, UnknownKind
from transports.acs.peer.caller import AcsCallerSettings, AcsMediaCaller, CallerError
from transports.acs.peer.caller_ear import CallerEar, spacing_summary
from transports.acs.route import MEDIA_PATH
from transports.acs.sessions import CallSession, CallSessions
from transports.local.script import Utterance, render_script
from voicegraph.acs_call import serving
from voicegraph.app import create_app

MS = 1_000_000
FRAME = 640
WAIT_S = 60.0  # bound on a whole call (never reached when it works)

PIPELINE = """\
name: caller_test
nodes:
  caller: {{use: acs_media, sample_rate: 16000}}
  vad: {{use: vad, aggressiveness: 2, start_ms: 200, stop_ms: 300, silence_ms: 600}}
  barge_in: {{use: barge_in, min_speech_ms: 200}}
  stt: {{use: stt, engine: pocketsphinx}}
  brain:
    use: rules_brain
    greeting: "{greeting}"
    rules:
      "\\\\b(claim|accident)\\\\b": "I am sorry to hear about your accident. I can start a claim for you right away."
    fallback: "I heard you say {{text}}. Could you tell me a bit more?"
  sentences: {{use: sentences}}
  tts: {{use: tts, engine: espeak}}
  resample_out: {{use: resample, rate: 16000, stream: out}}
edges:
  - caller -> vad -> barge_in -> stt -> brain -> sentences -> tts -> resample_out -> caller
"""


# --- the codec's other direction -------------------------------------------------------------


def test_what_the_caller_sends_is_what_acs_sends_and_our_decoder_reads_it() -> None:
    enc = InboundEncoder(16000, participant='4:+1555"0100', subscription_id="sub-1")
    meta = enc.metadata(frame_bytes=FRAME)
    assert json.loads(meta) == {"kind": "AudioMetadata", "audioMetadata": {
        "subscriptionId": "sub-1", "encoding": "PCM", "sampleRate": 16000, "channels": 1, "length": 640}}
    when = datetime(2024, 11, 15, 19, 16, 12, 925_400, tzinfo=UTC)
    audio = enc.audio(b"\x01\x00" * 320, timestamp=when, silent=False)
    assert json.loads(audio)["audioData"]["timestamp"] == "2024-11-15T19:16:12.925Z"
    assert json.loads(enc.audio(bytes(FRAME), timestamp=when, silent=True))["audioData"]["silent"] is True
    server = MediaDecoder()
    assert server.decode(meta) == AudioMetadata(16000, 1, "PCM", "sub-1", 640)
    assert server.decode(audio) == AudioChunk(b"\x01\x00" * 320, 16000, when.replace(microsecond=925_000),
                                              '4:+1555"0100', False)
    assert server.decode(enc.dtmf("12#", timestamp=when)) == Dtmf("12#", when.replace(microsecond=925_000),
                                                                   '4:+1555"0100')
    with pytest.raises(FrameError, match="3 bytes"):
        enc.audio(b"\0\0\0", timestamp=when, silent=True)
    with pytest.raises(FrameError, match="not keypad digits"):
        enc.dtmf("9x", timestamp=when)


@pytest.mark.parametrize("casing", ["pascal", "camel"])
def test_the_caller_reads_what_our_server_sends_in_both_casings(casing: str) -> None:
    dec = OutboundDecoder(16000)
    out = MediaEncoder(16000, casing="camel" if casing == "camel" else "pascal")
    assert dec.decode(out.audio(b"\x02\x00" * 320)) == BotAudio(b"\x02\x00" * 320)
    assert dec.decode(out.stop_audio()) == StopAudio()
    assert dec.decode('{"kind":"Transcription","transcriptionData":{}}') == UnknownKind("Transcription")


@pytest.mark.parametrize(("message", "why"), [
    ('{"Kind":"AudioData","AudioData":{"Data":"AAA"}}', "not valid base64"),
    ('{"Kind":"AudioData","AudioData":{"Data":"AAAA"}}', "3 bytes"),
    ('{"Kind":"AudioData","AudioData":{}}', "audioData.data: missing"),
    ("[1]", "expected a JSON object"),
    (b"\x00\x01", "binary frame"),
])
def test_the_caller_refuses_what_it_cannot_read_with_a_clear_error(message: str | bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        OutboundDecoder(16000).decode(message)


# --- the ear ---------------------------------------------------------------------------------


def test_the_ear_plays_at_real_time_and_splits_responses_on_quiet() -> None:
    ear = CallerEar(16000, quiet_ms=200)
    for k in range(5):  # 100 ms of audio, arriving in a burst at t=0..4 ms
        ear.audio(k * MS, bytes(FRAME))
    assert [t for t, _ in ear.heard.frames] == [0, 20 * MS, 40 * MS, 60 * MS, 80 * MS]  # played one after the other
    assert ear.playing(299 * MS) is not None  # played out at 100 ms: quiet from 300
    assert ear.playing(300 * MS) is None
    ear.audio(400 * MS, bytes(FRAME))
    assert [(r.number, r.frames, r.heard_ms) for r in ear.responses] == [(1, 5, 100.0), (2, 1, 20.0)]
    assert ear.spacing_ms() == [1.0, 1.0, 1.0, 1.0]


def test_stop_audio_drops_the_buffer_and_counts_audio_of_the_stopped_response() -> None:
    ear = CallerEar(16000, quiet_ms=200)
    for k in range(10):  # 200 ms arriving at once
        ear.audio(k * MS, bytes(FRAME))
    ear.talking(True)
    stopped = ear.stop(50 * MS)
    assert stopped is ear.responses[0] and stopped.dropped_ms == 150.0 and stopped.heard_ms == 50.0
    ear.audio(60 * MS, bytes(FRAME))
    ear.audio(900 * MS, bytes(FRAME))  # still talking: still the stopped turn's
    assert (stopped.late_frames, ear.late_frames, len(ear.responses)) == (2, 2, 1)
    ear.talking(False)
    ear.audio(1000 * MS, bytes(FRAME))  # an answer after the caller finished
    assert [r.number for r in ear.responses] == [1, 2] and ear.late_frames == 2
    assert ear.stop(1001 * MS) is ear.responses[1] and ear.stop(1002 * MS) is None and ear.stops == 3


def test_spacing_summary() -> None:
    assert spacing_summary([]) == {"gaps": 0}
    assert spacing_summary([20.0, 20.0, 19.0, 40.0]) == {"gaps": 4, "median_ms": 20.0, "p10_ms": 19.0,
                                                         "p90_ms": 40.0, "within_5ms_of_20": 0.75}


# --- whole calls through the server ------------------------------------------------------------


class Server:
    def __init__(self, base: str, sessions: CallSessions, started: list[CallSession]) -> None:
        self.base = base
        self.sessions = sessions
        self.started = started

    def media_url(self, call_id: str) -> str:
        return self.base.replace("http://", "ws://") + f"{MEDIA_PATH}?token={self.sessions.expect(call_id)}"

    async def ended(self, session: CallSession) -> None:
        assert session.task is not None
        await asyncio.wait_for(asyncio.wait({session.task}), WAIT_S)


async def _server(tmp_path: Path, greeting: str) -> AsyncIterator[Server]:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "acs.yaml").write_text(PIPELINE.format(greeting=greeting))
    app = create_app(tmp_path, poll_s=3600.0, verifier=NoAuth())  # tokens only; JWTs: test_route, test_e2e_call
    sessions: CallSessions = app.state.acs_sessions
    started: list[CallSession] = []
    sessions.watch(started.append)
    async with serving(app) as base:
        yield Server(base, sessions, started)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in _server(tmp_path, ""):
        yield s


@pytest.fixture
async def greeting_server(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in _server(tmp_path, "Thank you for calling Contoso insurance. How can I help you today?"):
        yield s


async def lines(*texts: str) -> tuple[Utterance, ...]:
    return tuple(await asyncio.to_thread(render_script, texts, sample_rate=16000, voice="espeak"))


HEADERS = {"x-ms-call-connection-id": "call-1", "x-ms-call-correlation-id": "corr-1"}


async def test_the_bot_answers_over_the_socket_paced_at_real_time(server: Server) -> None:
    said = await lines("I want to file a claim for my car accident")
    caller = AcsMediaCaller(AcsCallerSettings(say=said, realtime=False, opening_ms=300, pause_ms=0))
    await asyncio.wait_for(caller.run(server.media_url("call-1"), headers=HEADERS), WAIT_S)

    line = caller.lines[0]
    assert line.answer is not None and line.answer is caller.ear.responses[0]
    assert line.voice_to_voice_ms is not None and line.voice_to_voice_ms > 0
    answer = line.answer
    assert answer.frames >= 50 and answer.heard_ms == answer.frames * 20  # whole 20 ms frames, over a second of it
    # Paced, not a burst: the frames came over at least half their own play time, one about
    # every 20 ms (lower bounds only: a loaded machine can only spread them further).
    assert (answer.last_ns - answer.first_ns) / MS >= 0.5 * answer.heard_ms
    assert sorted(answer.spacing_ms)[len(answer.spacing_ms) // 2] >= 10.0
    assert (caller.ear.stops, caller.ear.late_frames, caller.messages_refused) == (0, 0, 0)
    assert caller.closed_by == "caller" and caller.frames_sent > len(said[0].pcm) // FRAME


async def test_talking_over_the_bot_gets_stop_audio_and_no_more_of_that_turn(greeting_server: Server) -> None:
    server = greeting_server
    said = await lines("I want to file a claim for my car accident")
    caller = AcsMediaCaller(AcsCallerSettings(say=said, opening_ms=20_000, interrupt_after_ms=600, pause_ms=0))
    cuts: list[BotStoppedSpeaking] = []

    def watch(session: CallSession) -> None:
        assert session.graph is not None

        def on_event(event: EventFrame) -> None:
            if isinstance(event, BotStoppedSpeaking):
                cuts.append(event)

        session.graph.watch_events(on_event)

    server.sessions.watch(watch)
    await asyncio.wait_for(caller.run(server.media_url("call-2"), headers=HEADERS), WAIT_S)

    greeting, answer = caller.ear.responses[:2]
    line = caller.lines[0]
    assert line.talked_over is greeting and greeting.stopped_ns > 0
    assert line.barge_in_ms is not None and line.barge_in_ms > 0
    assert round(caller.meter.reaction_ms[1], 2) == line.barge_in_ms and list(caller.meter.reaction_ms) == [1]
    assert greeting.frames >= 30  # it had played its 600 ms before the caller spoke
    assert greeting.late_frames == 0 and caller.ear.late_frames == 0  # nothing of the stopped turn after StopAudio
    assert caller.ear.stops == 1 and line.answer is answer and answer.stopped_ns == 0
    assert [(e.turn, e.interrupted) for e in cuts] == [(1, True), (2, False)]  # the server cut the greeting, once


async def test_hanging_up_ends_the_call_and_frees_the_session(server: Server) -> None:
    caller = AcsMediaCaller(AcsCallerSettings(say=await lines("hello"), realtime=False, opening_ms=0,
                                              pause_ms=0, answer_timeout_s=0.2))
    await asyncio.wait_for(caller.run(server.media_url("call-3"), headers=HEADERS), WAIT_S)
    [session] = server.started
    await server.ended(session)
    assert caller.closed_by == "caller" and caller.close_code == 1000
    assert session.result is not None and session.result.reason == "eos" and session.result.errors == ()
    counts = server.sessions.counts()
    assert (counts.expected, counts.live, counts.connected, counts.ended) == (0, 0, 1, 1)


async def test_a_refused_socket_is_a_caller_error_naming_the_status(server: Server) -> None:
    url = server.base.replace("http://", "ws://") + f"{MEDIA_PATH}?token=not-a-token"
    caller = AcsMediaCaller(AcsCallerSettings(say=await lines("hello")))
    with pytest.raises(CallerError, match="refused: HTTP 403"):
        await asyncio.wait_for(caller.run(url, headers=HEADERS), WAIT_S)
    assert server.sessions.counts().refused == 1 and server.started == []
