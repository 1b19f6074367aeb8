"""The transport base with an in-memory wire, on a virtual clock: paced frames on exact
20 ms slots, the lead buffer, flush and the wire's clear, speaking events with the heard
text, turn 0 refused, the output format checked, many transports on one ticker."""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.clock import VirtualClock
from pipeline.context import CallContext
from pipeline.frames import (
    AudioFormat,
    BotStartedSpeaking,
    BotStoppedSpeaking,
    ErrorEvent,
    FlushStart,
    Frame,
    InputAudio,
    OutputAudio,
    ResponseEnd,
    ResponseStart,
    TTSText,
)
from pipeline.graph import Graph
from pipeline.runner import CallResult, run_call
from pipeline.testing import Puppet, advance_to
from transports.base import Transport

MS = 1_000_000
RATE = 16000
FRAME = RATE * 2 // 50  # bytes in 20 ms


def audio(ms: int) -> bytes:
    return (1000).to_bytes(2, "little", signed=True) * (RATE * ms // 1000)


class MemoryWire(Transport):
    """A wire that keeps what it is sent; the caller hangs up when the test says so."""

    def __init__(self, name: str = "line", **kw: Any) -> None:
        super().__init__(name=name, **kw)
        self.sent: list[tuple[int, bytes]] = []
        self.turns: list[int] = []
        self.clears: list[int] = []
        self.hangup: asyncio.Future[None] | None = None
        self.gate: asyncio.Future[None] | None = None  # set: send_audio waits on it (a slow socket)

    async def serve(self) -> None:
        await self.input_format(RATE)
        self.hangup = asyncio.get_running_loop().create_future()
        await self.hangup

    async def send_audio(self, pcm: bytes) -> None:
        if self.gate is not None:
            await self.gate
        self.sent.append((self.ctx.clock.now_ns(), pcm))
        self.turns.append(self.sending_turn)

    async def clear_audio(self) -> None:
        self.clears.append(self.ctx.clock.now_ns())


class Bot(Puppet):
    """Stands in for brain and TTS: says what the test tells it, records what comes back."""

    def __init__(self) -> None:
        super().__init__((InputAudio,), name="bot")

    @property
    def heard(self) -> list[Frame]:
        return self.got

    def speaking(self) -> list[tuple[str, int, Any]]:
        """(event, ms, details) of the bot speaking events, in order."""
        out: list[tuple[str, int, Any]] = []
        for e in self.events:
            if isinstance(e, BotStartedSpeaking):
                out.append(("started", e.ts // MS, (e.turn, e.interruptible)))
            elif isinstance(e, BotStoppedSpeaking):
                out.append(("stopped", e.ts // MS, (e.turn, e.played_ms, e.interrupted, e.heard_text)))
        return out


class Call:
    def __init__(self, clock: VirtualClock, **kw: Any) -> None:
        self.clock = clock
        self.wire = MemoryWire(**kw)
        self.bot = Bot()
        graph = Graph("memory")
        graph.chain(self.wire, self.bot, self.wire)
        self.task: asyncio.Task[CallResult] = asyncio.create_task(run_call(graph, CallContext(clock=clock)))

    def sent_ms(self) -> list[int]:
        return [ns // MS for ns, _ in self.wire.sent]

    async def hang_up(self) -> CallResult:
        assert self.wire.hangup is not None
        self.wire.hangup.set_result(None)
        await self.clock.advance(0)
        return await self.task


async def start(clock: VirtualClock, **kw: Any) -> Call:
    call = Call(clock, **kw)
    await clock.advance(0)  # the call starts; the ticker's first slot is now (0 ms)
    return call


async def test_frames_go_out_on_exact_slots_once_the_lead_is_buffered() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=60)
    await call.bot.say(ResponseStart(turn=1), TTSText("Hello there.", turn=1), OutputAudio(audio(40), turn=1))
    await advance_to(clock, 50)
    assert call.wire.sent == []  # 40 ms < 60 ms lead: nothing yet
    await call.bot.say(OutputAudio(audio(50), turn=1), ResponseEnd(turn=1))
    await advance_to(clock, 200)
    assert call.sent_ms() == [60, 80, 100, 120, 140]  # 90 ms: four whole frames and a padded one
    assert all(len(pcm) == FRAME for _, pcm in call.wire.sent)
    assert call.wire.sent[-1][1] == audio(10) + bytes(FRAME - len(audio(10)))
    assert call.bot.speaking() == [("started", 60, (1, True)), ("stopped", 140, (1, 90.0, False, "Hello there."))]
    assert call.wire.clears == [] and call.wire.frames_sent == 5
    result = await call.hang_up()
    assert result.reason == "eos" and result.errors == ()


async def test_turns_play_one_after_the_other_and_the_wire_knows_each_frames_turn() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=0)
    await call.bot.say(ResponseStart(turn=1), TTSText("Welcome.", turn=1), OutputAudio(audio(40), turn=1),
                       ResponseEnd(turn=1),
                       ResponseStart(turn=2, interruptible=False), TTSText("This call is recorded.", turn=2),
                       OutputAudio(audio(40), turn=2), ResponseEnd(turn=2))
    await advance_to(clock, 100)
    # Turn 2 arrived while turn 1 was still buffered: it waits, then plays whole.
    assert call.wire.turns == [1, 1, 2, 2] and call.sent_ms() == [20, 40, 60, 80]
    await call.bot.say(ResponseStart(turn=3), OutputAudio(audio(40), turn=3), ResponseEnd(turn=3))
    await advance_to(clock, 200)
    assert call.wire.turns == [1, 1, 2, 2, 3, 3] and call.sent_ms() == [20, 40, 60, 80, 120, 140]
    assert call.bot.speaking() == [
        ("started", 20, (1, True)), ("stopped", 40, (1, 40.0, False, "Welcome.")),
        ("started", 60, (2, False)), ("stopped", 80, (2, 40.0, False, "This call is recorded.")),
        ("started", 120, (3, True)), ("stopped", 140, (3, 40.0, False, "")),
    ]
    await call.hang_up()


async def test_a_flush_drops_the_buffer_and_clears_the_wire_before_the_next_tick() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=0)
    await call.bot.say(ResponseStart(turn=1),
                       TTSText("The first clause is here,", turn=1), OutputAudio(audio(100), turn=1),
                       TTSText("and the second one is longer.", turn=1), OutputAudio(audio(200), turn=1))
    await advance_to(clock, 170)  # frames at 20..160: all of clause 1, 60 of 200 ms of clause 2
    call.bot.emit(FlushStart(turn=1))
    await clock.advance(0)  # no time passes
    assert call.wire.clears == [170 * MS]  # at once, between ticks
    assert call.wire.frames_sent == 8
    await advance_to(clock, 400)
    assert call.sent_ms() == [20, 40, 60, 80, 100, 120, 140, 160]  # nothing after the flush
    assert call.bot.speaking() == [
        ("started", 20, (1, True)),
        ("stopped", 170, (1, 160.0, True, "The first clause is here, and the")),
    ]
    await call.hang_up()


async def test_a_flush_of_audio_still_in_the_lead_buffer_needs_no_clear() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=60)
    await call.bot.say(TTSText("Your policy", turn=2), OutputAudio(audio(40), turn=2))
    await advance_to(clock, 30)
    call.bot.emit(FlushStart(turn=2))
    await advance_to(clock, 100)
    assert call.wire.sent == [] and call.wire.clears == []
    assert call.bot.speaking() == [("stopped", 30, (2, 0.0, True, ""))]  # the history drops it
    await call.hang_up()


async def test_an_uninterruptible_response_says_so_when_it_starts() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=0)
    await call.bot.say(ResponseStart(turn=3, interruptible=False), OutputAudio(audio(20), turn=3),
                       ResponseEnd(turn=3))
    await advance_to(clock, 40)
    assert call.bot.speaking() == [("started", 20, (3, False)), ("stopped", 20, (3, 20.0, False, ""))]
    await call.hang_up()


async def test_bot_speech_of_turn_0_is_refused_with_a_clear_error() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=0)
    await call.bot.say(TTSText("Welcome!", turn=0), OutputAudio(audio(100), turn=0))
    await advance_to(clock, 100)
    errors = [e for e in call.bot.events if isinstance(e, ErrorEvent)]
    assert len(errors) == 2 and all(e.node == "line" and not e.fatal for e in errors)
    assert "turn 0" in errors[0].message and "ctx.next_turn()" in errors[0].message
    assert call.wire.sent == []
    await call.hang_up()


async def test_bot_audio_at_another_rate_is_a_configuration_error() -> None:
    clock = VirtualClock()
    call = await start(clock)
    await call.bot.say(AudioFormat(22050, stream="out"))
    errors = [e for e in call.bot.events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and "22050 Hz" in errors[0].message and "'resample' node" in errors[0].message
    await call.hang_up()


async def test_caller_audio_goes_in_after_its_format() -> None:
    clock = VirtualClock()
    call = await start(clock)
    await call.wire.receive_audio(audio(20))
    assert call.bot.heard == [AudioFormat(RATE, stream="in"), InputAudio(audio(20))]
    await call.hang_up()


async def test_a_slow_wire_misses_slots_and_sends_no_burst_when_it_recovers() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=0)
    call.wire.gate = asyncio.get_running_loop().create_future()
    await call.bot.say(OutputAudio(audio(200), turn=1))
    await advance_to(clock, 70)  # the frame of slot 20 is stuck in send_audio; slots 40 and 60 pass
    assert call.wire.sent == []
    call.wire.gate.set_result(None)
    await clock.advance(0)
    await advance_to(clock, 120)
    # The stuck frame (slot 20) goes out when the wire takes it; slots 40 and 60 were
    # skipped, not replayed: the next frame waits for its own slot, 80.
    assert call.sent_ms() == [70, 80, 100, 120]
    assert call.wire.slots_missed == 2
    await call.hang_up()


async def test_fifty_transports_on_one_clock_share_one_wake_up_per_tick() -> None:
    clock = VirtualClock()
    calls = [Call(clock, lead_ms=0) for _ in range(50)]
    await clock.advance(0)
    for call in calls:
        await call.bot.say(OutputAudio(audio(100), turn=1), ResponseEnd(turn=1))
    for ms in range(20, 140, 20):
        assert clock.sleepers == 1  # one ticker parked on the clock, not fifty
        await advance_to(clock, ms)
    assert all(call.sent_ms() == [20, 40, 60, 80, 100] for call in calls)
    results = [await call.hang_up() for call in calls]
    assert {r.reason for r in results} == {"eos"}
    await clock.advance(0)
    assert clock.sleepers == 0  # everyone left: the ticker stopped


async def test_a_broken_wire_ends_the_call_with_its_own_error() -> None:
    class BrokenWire(MemoryWire):
        async def send_audio(self, pcm: bytes) -> None:
            raise ConnectionResetError("peer went away")

    clock = VirtualClock()
    wire, bot = BrokenWire(lead_ms=0), Bot()
    graph = Graph("broken")
    graph.chain(wire, bot, wire)
    task = asyncio.create_task(run_call(graph, CallContext(clock=clock)))
    await clock.advance(0)
    await bot.say(OutputAudio(audio(100), turn=1))
    await clock.advance(20 * MS)
    result = await task
    assert result.reason == "eos"  # the caller's side ended: end of stream, not a hang
    assert [e.message for e in result.errors] == ["ConnectionResetError: peer went away"]
