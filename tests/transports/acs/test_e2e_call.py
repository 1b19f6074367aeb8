"""A phone call end to end, placed the way ACS places it, through our real server on a free port.

The local ACS rings our ``/acs/events`` through Event Grid; our server answers through the
real async SDK (the peer checks its HMAC signature); the peer posts ``CallConnected`` (a
signed JWT) to ``/acs/callbacks``; its media hook connects the media caller to
``/acs/media`` with the headers ACS sends; the caller speaks, the bot answers paced at
real time, the caller talks over the bot and gets ``StopAudio`` with nothing of that turn
after it; the caller hangs up and ``CallDisconnected`` follows; nothing is left running.
Then the calls the server ends: hang-up and transfer through ``/acs/calls``; and a line
that drops (the call waits for ACS to reconnect) ended by ACS's ``CallDisconnected``.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx
import pytest

from pipeline.clock import MonotonicClock
from pipeline.frames import BotStoppedSpeaking, EventFrame
from transports.acs.codec import InboundEncoder
from transports.acs.peer.caller import AcsCallerSettings, AcsMediaCaller
from transports.acs.peer.calls import CallState
from transports.acs.peer.connect import MediaConnect
from transports.acs.peer.media_hook import CallerHook
from transports.acs.sessions import CallSession
from transports.local.script import Utterance, render_script
from transports.pacer import pacer_for
from voicegraph.acs_testbed import AcsTestbed

WAIT_S = 60.0  # bound on a whole call (never reached when it works)
API_KEY = "e2e-api-key"
MS = 1_000_000

PIPELINE = """\
name: e2e_call
nodes:
  caller: {use: acs_media, sample_rate: 16000}
  vad: {use: vad, aggressiveness: 2, start_ms: 200, stop_ms: 300, silence_ms: 600}
  barge_in: {use: barge_in, min_speech_ms: 200}
  stt: {use: stt, engine: pocketsphinx}
  brain:
    use: rules_brain
    rules:
      "\\\\b(claim|accident|car)\\\\b": "I am sorry to hear about your accident. I can start a claim for you right away. First, what is your policy number?"
    fallback: "I heard you say {text}. Could you tell me a little bit more about what happened, please?"
  sentences: {use: sentences}
  tts: {use: tts, engine: espeak}
  resample_out: {use: resample, rate: 16000, stream: out}
edges:
  - caller -> vad -> barge_in -> stt -> brain -> sentences -> tts -> resample_out -> caller
"""


async def lines(*texts: str) -> tuple[Utterance, ...]:
    return tuple(await asyncio.to_thread(render_script, texts, sample_rate=16000, voice="espeak"))


class Line:
    """The testbed with one scripted caller per call, and the server's view of each call."""

    def __init__(self, bed: AcsTestbed, hook: CallerHook) -> None:
        self.bed = bed
        self.hook = hook
        self.settings = AcsCallerSettings()
        self.started = asyncio.Event()
        self.cuts: list[BotStoppedSpeaking] = []
        bed.sessions.watch(self._watch)

    def _watch(self, session: CallSession) -> None:
        assert session.graph is not None

        def on_event(event: EventFrame) -> None:
            if isinstance(event, BotStoppedSpeaking):
                self.cuts.append(event)

        session.graph.watch_events(on_event)
        self.started.set()

    def caller(self, call_id: str) -> AcsMediaCaller:
        return self.hook.callers[call_id]

    def session(self, call_id: str) -> CallSession:
        [session] = [s for s in self.bed.started if s.call_connection_id == call_id]
        return session

    async def act(self, call_id: str, action: str, body: dict[str, str] | None = None) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.bed.url) as http:
            return await http.post(f"/acs/calls/{call_id}:{action}", json=body or {},
                                   headers={"Authorization": f"Bearer {API_KEY}"})


@pytest.fixture
async def line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Line]:
    monkeypatch.setenv("VOICEGRAPH_API_KEY", API_KEY)
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "acs.yaml").write_text(PIPELINE)
    holder: list[Line] = []

    def make(connect: MediaConnect) -> AcsMediaCaller:
        return AcsMediaCaller(holder[0].settings)

    hook = CallerHook(make)
    async with AcsTestbed(tmp_path, hook) as bed:
        holder.append(Line(bed, hook))
        yield holder[0]


async def test_a_phone_call_end_to_end_through_the_real_server(line: Line) -> None:
    bed = line.bed
    line.settings = AcsCallerSettings(
        say=await lines("I want to file a claim for my car accident", "What are your opening hours"),
        opening_ms=300, pause_ms=200, interrupt_after_ms=800, answer_timeout_s=30)
    before = asyncio.all_tasks()

    call_id = await asyncio.wait_for(bed.ring(), WAIT_S)
    await asyncio.wait_for(bed.finished(call_id), WAIT_S)

    # Event Grid: the subscription handshake when the testbed opened, then the IncomingCall, answered.
    validation, incoming = bed.sender.sent
    assert validation.status == 200 and validation.body == {"validationResponse": validation.events[0]["data"][
        "validationCode"]}
    assert incoming.status == 200 and incoming.body == {"answered": [call_id]}
    # The SDK's answer request reached the local ACS with a valid HMAC signature, asking for our media.
    [answer] = bed.peer.answers
    assert bed.peer.refused == [] and answer.call_connection_id == call_id
    media = answer.body["mediaStreamingOptions"]
    assert answer.transport_url is not None
    assert answer.transport_url.startswith(bed.url.replace("http://", "ws://") + "/acs/media?token=")
    assert (media["audioFormat"], media["enableBidirectional"], media["startMediaStreaming"]) == \
        ("pcm16KMono", True, True)
    assert answer.body["callbackUri"].startswith(bed.url + "/acs/callbacks?token=")
    # Every callback was signed, delivered and accepted at once, in the order ACS sends them.
    assert [(d.type, d.attempts) for d in bed.deliveries(call_id)] == [
        ("CallConnected", [200]), ("ParticipantsUpdated", [200]), ("MediaStreamingStarted", [200]),
        ("ParticipantsUpdated", [200]), ("MediaStreamingStopped", [200]), ("CallDisconnected", [200])]
    # Those callbacks and the media upgrade carried ACS-signed JWTs that our server checked with the keys
    # of the peer's OpenID configuration: fetched once over HTTP, then cached.
    assert bed.peer.signer.jwks_fetches == 1
    assert bed.peer.switchboard.calls[call_id].states == [
        CallState.CONNECTING, CallState.CONNECTED, CallState.DISCONNECTING, CallState.DISCONNECTED]

    caller = line.caller(call_id)
    first, second = caller.lines
    # Caller speech -> the bot's answer, received frame by frame at real time.
    answer_1 = first.answer
    assert answer_1 is not None and first.voice_to_voice_ms is not None and first.voice_to_voice_ms > 0
    assert answer_1.frames >= 40 and answer_1.heard_ms == answer_1.frames * 20 - answer_1.dropped_ms
    gaps = caller.ear.spacing_ms()
    assert len(gaps) > 80 and 10.0 <= statistics.median(gaps) <= 30.0  # about one frame per 20 ms, not a burst
    # The caller talked over that answer: StopAudio came, and nothing of the stopped turn after it.
    assert second.talked_over is answer_1 and answer_1.stopped_ns > 0 and second.barge_in_ms is not None
    assert answer_1.stopped_ns - second.onset_ns == pytest.approx(second.barge_in_ms * MS, abs=MS)
    assert (caller.ear.stops, caller.ear.late_frames, answer_1.late_frames, caller.messages_refused) == (1, 0, 0, 0)
    assert second.answer is not None and second.answer.stopped_ns == 0
    assert [(e.turn, e.interrupted) for e in line.cuts] == [(1, True), (2, False)]  # the server cut turn 1, once
    assert caller.closed_by == "caller" and caller.close_code == 1000

    # The call ended on our side too, and everything it held is freed.
    session = line.session(call_id)
    assert session.result is not None and session.result.reason == "eos" and session.result.errors == ()
    assert session.task is not None and session.task.done() and session.media_connected
    assert bed.sessions.live(call_id) is None and bed.sessions.has_ended(call_id)
    counts = bed.sessions.counts()
    assert (counts.expected, counts.live, counts.connected, counts.refused, counts.ended) == (0, 0, 1, 0, 1)
    left = asyncio.all_tasks() - before
    if left:  # request handlers finishing their last response: they end, or the test fails
        _, pending = await asyncio.wait(left, timeout=WAIT_S)
        assert pending == set(), [t.get_name() for t in pending]


async def test_the_server_hangs_up_the_caller_is_cut_off_and_acs_says_disconnected(line: Line) -> None:
    bed = line.bed
    line.settings = AcsCallerSettings(say=await lines("hello there"), opening_ms=1000, answer_timeout_s=30)
    call_id = await asyncio.wait_for(bed.ring(), WAIT_S)
    await asyncio.wait_for(line.started.wait(), WAIT_S)  # our graph of the call runs: the media socket is up

    response = await line.act(call_id, "hangup")
    assert (response.status_code, response.json()) == (200, {"callConnectionId": call_id, "state": "disconnected"})
    await asyncio.wait_for(bed.finished(call_id), WAIT_S)

    caller = line.caller(call_id)
    assert caller.closed_by in ("acs", "server")  # cut off: the caller did not hang up
    assert not caller.lines[0].ended_ns or caller.lines[0].answer is None  # ... in the middle of its call
    session = line.session(call_id)
    assert session.ended_reason == "hung up" and session.task is not None and session.task.done()
    assert session.result is not None and session.result.reason == "cancelled"
    assert bed.peer.switchboard.calls[call_id].state is CallState.DISCONNECTED
    deliveries = bed.deliveries(call_id)
    assert deliveries[-1].type == "CallDisconnected" and deliveries[-1].delivered
    assert "ParticipantsUpdated" not in [d.type for d in deliveries[2:]]  # the bot left, not the caller
    counts = bed.sessions.counts()
    assert (counts.live, counts.ended) == (0, 1)
    # A second hang-up: the call is gone.
    assert (await line.act(call_id, "hangup")).status_code == 404


async def test_a_transfer_makes_the_bot_leave_the_call(line: Line) -> None:
    bed = line.bed
    line.settings = AcsCallerSettings(say=await lines("hello there"), opening_ms=1000, answer_timeout_s=30)
    call_id = await asyncio.wait_for(bed.ring(), WAIT_S)
    await asyncio.wait_for(line.started.wait(), WAIT_S)
    await bed.peer.switchboard.poster.drain(call_id)  # CallConnected applied: the call may be transferred

    response = await line.act(call_id, "transfer", {"target": "+15550111"})
    assert (response.status_code, response.json()) == (202, {"callConnectionId": call_id, "transfer": "requested"})
    await asyncio.wait_for(bed.finished(call_id), WAIT_S)

    assert bed.peer.switchboard.calls[call_id].states[-4:] == [
        CallState.TRANSFERRING, CallState.TRANSFER_ACCEPTED, CallState.DISCONNECTING, CallState.DISCONNECTED]
    types = [(d.type, d.delivered) for d in bed.deliveries(call_id)]
    assert types[-3:] == [("CallTransferAccepted", True), ("MediaStreamingStopped", True),
                          ("CallDisconnected", True)]
    accepted = next(d for d in bed.deliveries(call_id) if d.type == "CallTransferAccepted")
    assert accepted.event["data"]["transferTarget"]["rawId"] == "4:+15550111"
    assert line.caller(call_id).closed_by in ("acs", "server")
    session = line.session(call_id)
    assert session.ended_reason in ("transferred to another participant", "media socket gone")
    assert session.task is not None and session.task.done() and bed.sessions.live(call_id) is None


class DroppingLine:
    """A media hook whose line drops: it connects as ACS does, streams silence until our graph
    of the call runs, then closes the socket with 1011 (not a hang-up: a drop)."""

    def __init__(self) -> None:
        self.graph_runs = asyncio.Event()
        self.close_code: int | None = None

    async def __call__(self, connect: MediaConnect) -> None:
        encoder = InboundEncoder(connect.sample_rate)
        async with aiohttp.ClientSession() as http, http.ws_connect(connect.transport_url,
                                                                    headers=connect.headers) as ws:
            connect.connected()
            await ws.send_str(encoder.metadata(frame_bytes=640))
            with pacer_for(MonotonicClock(), 20).subscribe() as ticks:
                while not self.graph_runs.is_set():
                    await ticks.next()
                    await ws.send_str(encoder.audio(bytes(640), timestamp=datetime.now(UTC), silent=True))
            await ws.close(code=1011)
            self.close_code = ws.close_code


async def test_a_dropped_line_waits_for_acs_and_call_disconnected_ends_it(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    # A reconnect window far longer than the test's bound: only CallDisconnected can end the call in time.
    (tmp_path / "pipelines" / "acs.yaml").write_text(
        PIPELINE.replace("{use: acs_media, sample_rate: 16000}",
                         "{use: acs_media, sample_rate: 16000, reconnect_window_s: 600}"))
    hook = DroppingLine()
    async with AcsTestbed(tmp_path, hook) as bed:
        bed.sessions.watch(lambda session: hook.graph_runs.set())
        call_id = await asyncio.wait_for(bed.ring(), WAIT_S)
        await asyncio.wait_for(bed.finished(call_id), WAIT_S)

        [session] = bed.started
        assert session.ended_reason == "disconnected"  # by the callback, not by the socket or the window
        assert session.result is not None and session.result.reason == "cancelled"
        assert session.task is not None and session.task.done() and bed.sessions.live(call_id) is None
        assert [(d.type, d.attempts) for d in bed.deliveries(call_id)][-3:] == [
            ("ParticipantsUpdated", [200]), ("MediaStreamingStopped", [200]), ("CallDisconnected", [200])]
        counts = bed.sessions.counts()
        assert (counts.live, counts.connected, counts.ended) == (0, 1, 1)
