"""Ten calls at once through one server, placed the way ACS places them, each hearing its own
answers: no crosstalk, byte for byte in both directions.

Ten callers, each with a line of its own, are rung at once through the peer's Event Grid;
the server answers all ten through the SDK; the peer connects ten media sockets. For every
call (by its call connection id, on both sides): what the caller sent is exactly what that
call's graph received, and what that call's graph made is exactly what the caller heard.
Calls whose audio got mixed up, even for one frame, fail the byte comparison.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import pytest

from pipeline.frames import Frame, InputAudio, OutputAudio
from transports.acs.codec import InboundEncoder
from transports.acs.peer.caller import AcsCallerSettings, AcsMediaCaller
from transports.acs.peer.connect import MediaConnect
from transports.acs.peer.media_hook import CallerHook
from transports.acs.sessions import CallSession
from transports.local.script import Utterance, render_script
from voicegraph.acs_testbed import AcsTestbed

CALLS = 10
WAIT_S = 120.0  # bound on all ten calls (never reached when it works)
FRAME = 640  # 20 ms at 16 kHz

PIPELINE = """\
name: e2e_many
nodes:
  caller: {use: acs_media, sample_rate: 16000}
  vad: {use: vad, aggressiveness: 2, start_ms: 200, stop_ms: 300, silence_ms: 500}
  barge_in: {use: barge_in, min_speech_ms: 200}
  stt: {use: stt, engine: pocketsphinx}
  brain:
    use: rules_brain
    rules:
      "\\\\b(claim|accident)\\\\b": "A claim, noted."
      "\\\\b(hours|open)\\\\b": "We open at eight."
    fallback: "You said {text}."
  sentences: {use: sentences}
  tts: {use: tts, engine: espeak}
  resample_out: {use: resample, rate: 16000, stream: out}
edges:
  - caller -> vad -> barge_in -> stt -> brain -> sentences -> tts -> resample_out -> caller
"""

LINES = ("I want to file a claim", "What are your opening hours", "Hello my name is Anna",
         "I had an accident on Monday", "When are you open", "Can I speak to someone",
         "My car was stolen yesterday", "Thank you very much", "Please call me back", "Is the office open today")


class RecordingEncoder(InboundEncoder):
    """The caller's encoder, keeping every PCM byte it put on the wire."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate)
        self.sent = bytearray()

    def audio(self, pcm: bytes, *, timestamp: datetime, silent: bool) -> str:
        self.sent += pcm
        return super().audio(pcm, timestamp=timestamp, silent=silent)


@dataclass
class ServerSide:
    """What one call's graph received from its socket and made for it."""

    received: bytearray = field(default_factory=bytearray)
    made: bytearray = field(default_factory=bytearray)

    def on_input(self, frame: Frame) -> None:
        if isinstance(frame, InputAudio):
            self.received += frame.pcm

    def on_output(self, frame: Frame) -> None:
        if isinstance(frame, OutputAudio):
            self.made += frame.pcm


@dataclass
class Many:
    bed: AcsTestbed
    hook: CallerHook
    script: dict[str, Utterance]  # call id -> its line, given out as the peer connects calls
    server: dict[str, ServerSide]  # call id -> what its graph saw


@pytest.fixture
async def many(tmp_path: Path) -> AsyncIterator[Many]:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "acs.yaml").write_text(PIPELINE)
    said = await asyncio.to_thread(render_script, LINES, sample_rate=16000, voice="espeak")
    unused = list(said)
    script: dict[str, Utterance] = {}
    server: dict[str, ServerSide] = {}
    base = AcsCallerSettings(realtime=False, opening_ms=200, pause_ms=300, answer_timeout_s=30)

    def make(connect: MediaConnect) -> AcsMediaCaller:
        script[connect.call_connection_id] = line = unused.pop()
        caller = AcsMediaCaller(replace(base, say=(line,)))
        caller.encoder = RecordingEncoder(connect.sample_rate)
        return caller

    def watch(session: CallSession) -> None:
        assert session.graph is not None
        side = server[session.call_connection_id] = ServerSide()
        session.graph.probe("caller", side.on_input)
        session.graph.probe("resample_out", side.on_output)

    hook = CallerHook(make)
    async with AcsTestbed(tmp_path, hook) as bed:
        bed.sessions.watch(watch)
        yield Many(bed, hook, script, server)


def sent_by(caller: AcsMediaCaller) -> bytearray:
    assert isinstance(caller.encoder, RecordingEncoder)
    return caller.encoder.sent


def _digest(pcm: bytes | bytearray) -> str:
    return hashlib.sha256(pcm).hexdigest()[:16]


async def test_ten_calls_at_once_each_hear_their_own_answers(many: Many) -> None:
    bed = many.bed
    ids = await asyncio.wait_for(asyncio.gather(*(bed.ring(caller=f"+1555010{k}") for k in range(CALLS))), WAIT_S)
    assert len(set(ids)) == CALLS and not any(i.startswith("pending-") for i in ids)
    await asyncio.wait_for(asyncio.gather(*(bed.finished(i) for i in ids)), WAIT_S)

    assert bed.peer.refused == [] and len(bed.peer.answers) == CALLS
    assert sorted(many.script) == sorted(ids) == sorted(many.server) == sorted(many.hook.callers)
    for call_id in ids:
        caller, side = many.hook.callers[call_id], many.server[call_id]
        sent = sent_by(caller)
        # Caller -> its own graph, every byte, in order.
        assert len(sent) == caller.frames_sent * FRAME and many.script[call_id].pcm[:FRAME * 10] in sent
        assert _digest(side.received) == _digest(sent), call_id
        # Its graph -> the caller: the answer it made (its last frame padded to 20 ms) is what it heard.
        heard = bytes(caller.ear.heard.pcm)
        assert side.made, f"call {call_id}: the bot made no answer"
        padded = bytes(side.made) + bytes(-len(side.made) % FRAME)
        assert _digest(heard) == _digest(padded), call_id
        assert len(caller.ear.responses) == 1 and caller.lines[0].answer is caller.ear.responses[0]
        assert (caller.ear.stops, caller.ear.late_frames, caller.messages_refused) == (0, 0, 0)
        assert caller.closed_by == "caller"
        assert [d.type for d in bed.deliveries(call_id) if not d.delivered] == []
    # Different lines, different calls: the comparisons above could tell any two apart.
    assert len({_digest(sent_by(c)) for c in many.hook.callers.values()}) == CALLS
    counts = bed.sessions.counts()
    assert (counts.expected, counts.live, counts.connected, counts.refused, counts.ended) == (0, 0, CALLS, 0, CALLS)
    assert all(s.result is not None and s.result.reason == "eos" and not s.result.errors for s in bed.started)
