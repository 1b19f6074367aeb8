"""CallRecording: a spoken call on a virtual clock recorded as a stereo WAV, caller left and
bot right, each where it was on the call clock; a barged-in answer cut where it stopped."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cloudevents.core.v1.event import CloudEvent

from pipeline.clock import VirtualClock
from pipeline.context import CallContext
from pipeline.frames import (
    BotStartedSpeaking,
    BotStoppedSpeaking,
    EventFrame,
    FlushStart,
    InputAudio,
    OutputAudio,
    ResponseEnd,
    ResponseStart,
    TTSText,
)
from pipeline.graph import Graph
from pipeline.processor import Processor
from pipeline.runner import CallRunner
from processors.sidecars.events import EventBus
from processors.sidecars.facts import CallFacts, Fact, RecordingStarted
from processors.sidecars.recording import CallRecording, recording_path
from processors.sidecars.services import DataTier
from processors.sidecars.tap import CallMeta
from transports.local.script import Utterance
from transports.local.speech import SpeechCaller, SpeechCallerSettings

MS = 1_000_000
RATE = 16000


def tone(ms: int, rate: int = RATE, hz: int = 300) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16).tobytes()


class Greeter(Processor):
    """Greets for ``greeting_ms`` when the line opens; with ``yields``, the caller's voice flushes it."""

    consumes = (InputAudio,)
    produces = (TTSText, OutputAudio)

    def __init__(self, greeting_ms: int, *, yields: bool = False) -> None:
        super().__init__(name="bot")
        self.greeting_ms, self.yields = greeting_ms, yields
        self.turn = 0
        self.played: list[tuple[float, float]] = []  # (started ms, played ms) of each answer
        self._started = 0.0

    async def process(self, frame: InputAudio) -> None:
        if not self.turn:
            self.turn = self.ctx.next_turn()
            for out in (ResponseStart(turn=self.turn), TTSText("Welcome to the claims line.", turn=self.turn),
                        OutputAudio(tone(self.greeting_ms, hz=500), turn=self.turn),
                        ResponseEnd(turn=self.turn)):
                await self.push(out)
        elif self.yields and np.abs(np.frombuffer(frame.pcm, dtype=np.int16)).max() > 1000:
            self.yields = False
            self.emit(FlushStart(turn=self.turn))

    def on_event(self, event: EventFrame) -> None:
        if isinstance(event, BotStartedSpeaking):
            self._started = event.ts / MS
        elif isinstance(event, BotStoppedSpeaking):
            self.played.append((self._started, event.played_ms))


async def record(tmp_path: Path, bot: Greeter, *, interrupt_after_ms: float | None = None) -> tuple[
        CallRecording, list[Fact]]:
    clock = VirtualClock()
    caller = SpeechCaller(SpeechCallerSettings(lead_ms=60, pause_ms=500, interrupt_after_ms=interrupt_after_ms),
                          name="caller")
    caller.set_script([Utterance("Hello", tone(400))])
    graph = Graph("rec")
    graph.chain(caller, bot, caller)
    ctx = CallContext("call:1/odd", clock=clock)
    got: list[Fact] = []

    class Keep:
        def offer(self, fact: Fact) -> None:
            got.append(fact)

        async def aclose(self) -> None:
            return None

    facts = CallFacts(ctx.call_id, [Keep()], lambda: clock.now_ns() / 1e6)
    rec = CallRecording.attach(graph, ctx, facts, tmp_path, started_ns=clock.now_ns())
    assert rec is not None
    task = asyncio.create_task(CallRunner(graph, ctx).run())
    await clock.advance(0)
    for _ in range(1000):
        if task.done():
            break
        await clock.advance(20 * MS)
    assert task.done() and task.result().reason == "eos"
    await rec.aclose()
    return rec, got


def channels(path: Path) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, RATE)
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return stereo[:, 0], stereo[:, 1]


def loud_ms(channel: npt.NDArray[np.int16]) -> tuple[float, float]:
    """First and last-plus-one loud sample, in ms."""
    idx = np.flatnonzero(np.abs(channel) > 1000)
    return idx[0] * 1000 / RATE, (idx[-1] + 1) * 1000 / RATE


async def test_caller_left_bot_right_on_the_call_clock(tmp_path: Path) -> None:
    bot = Greeter(1000)
    rec, facts = await record(tmp_path, bot)
    assert rec.path == recording_path(tmp_path, "call:1/odd") and rec.path.name.startswith("call_1_odd-")
    left, right = channels(rec.path)
    [(started, played)] = bot.played
    assert played == 1000.0
    start, end = loud_ms(right)  # the greeting, where the transport played it
    assert abs(start - started) < 1 and abs(end - (started + played)) < 1
    start, end = loud_ms(left)  # the caller's line: pause_ms after the greeting ended, 400 ms long
    assert abs(start - (started + played + 500)) <= 20 and abs((end - start) - 400) < 1
    assert np.abs(left[int(started * 16):int((started + played) * 16)]).max() < 1000  # nothing bled across
    assert len(left) == rec.frames_written
    [started_fact] = [f for f in facts if isinstance(f, RecordingStarted)]
    assert (started_fact.recording_id, started_fact.location, started_fact.source) == (
        "call:1/odd", str(rec.path), "local")


async def test_a_barged_in_answer_is_cut_where_the_caller_cut_it(tmp_path: Path) -> None:
    bot = Greeter(1000, yields=True)
    rec, _ = await record(tmp_path, bot, interrupt_after_ms=300)
    left, right = channels(rec.path)
    [(started, played)] = bot.played
    assert played < 400
    start, end = loud_ms(right)
    assert abs(start - started) <= 2 and abs(end - (started + played)) <= 2
    assert abs(loud_ms(left)[0] - (started + 300)) <= 20  # the caller talked over it 300 ms in


async def test_a_call_without_a_transport_is_not_recorded(tmp_path: Path) -> None:
    graph = Graph("text")
    graph.chain(Greeter(100))
    facts = CallFacts("c", [], lambda: 0.0)
    assert CallRecording.attach(graph, CallContext("c"), facts, tmp_path, started_ns=0) is None


class StuckTransport:
    """An event publisher that never answers (a Redis taking forever)."""

    def __init__(self) -> None:
        self.sends = 0

    async def send(self, events: Sequence[CloudEvent]) -> None:
        self.sends += 1
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        return None


async def timings(tier: DataTier | None) -> tuple[list[tuple[float, float]], list[tuple[int, int]], float]:
    """(the bot's answers, every frame the caller heard, the call's duration) on a virtual clock."""
    clock = VirtualClock()
    caller = SpeechCaller(SpeechCallerSettings(lead_ms=60, pause_ms=500), name="caller")
    caller.set_script([Utterance("Hello", tone(400))])
    bot = Greeter(1000)
    graph = Graph("rec")
    graph.chain(caller, bot, caller)
    ctx = CallContext("c-timing", clock=clock)
    attached = tier.attach_call(graph, ctx, CallMeta()) if tier is not None else None
    task = asyncio.create_task(CallRunner(graph, ctx).run())
    await clock.advance(0)
    for _ in range(1000):
        if task.done():
            break
        await clock.advance(20 * MS)
    result = task.result()
    if attached is not None:
        assert attached.recording is not None and attached.recording.frames_written == 0  # 5 s not reached yet
        await attached.end(result.reason)
    return bot.played, list(caller.heard.frames), result.duration_s


async def test_a_stuck_publisher_and_the_recorder_do_not_move_the_call_by_a_frame(tmp_path: Path) -> None:
    stuck = StuckTransport()
    bus = EventBus(stuck, close_timeout_s=0.05)
    tier = DataTier(events=bus, recordings=tmp_path)
    await tier.start()
    plain = await timings(None)
    watched = await timings(tier)
    assert watched == plain  # the same answers, the same frames heard, at the same virtual times
    assert stuck.sends == 1 and bus.queued >= 6 and bus.sent == 0  # the events waited, the call did not
    await tier.aclose()
    with wave.open(str(recording_path(tmp_path, "c-timing")), "rb") as w:
        assert w.getnframes() * 1000 // RATE >= 1900  # greeting, pause, the caller's line: all recorded
