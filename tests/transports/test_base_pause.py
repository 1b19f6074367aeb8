"""The transport base pausing and resuming the bot (false barge-in), on a virtual clock:
quiet from the next slot with the wire cleared at once, the same audio after the resume,
a flush during the pause reporting what was heard, the wire never cleared twice."""

from __future__ import annotations

import asyncio

from pipeline.clock import VirtualClock
from pipeline.frames import BotPause, BotResume, FlushStart, OutputAudio, ResponseEnd, ResponseStart, TTSText
from pipeline.testing import advance_to

from .test_base import FRAME, MS, RATE, start


def ramp(ms: int) -> bytes:
    return b"".join((i % 30000).to_bytes(2, "little", signed=True) for i in range(RATE * ms // 1000))


async def test_a_pause_silences_the_line_at_once_and_a_resume_plays_on_from_the_same_sample() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=0)
    pcm = ramp(200)
    await call.bot.say(ResponseStart(turn=1), TTSText("Your claim is open.", turn=1), OutputAudio(pcm, turn=1),
                       ResponseEnd(turn=1))
    await advance_to(clock, 70)  # frames at 20, 40, 60
    call.bot.emit(BotPause(turn=1))
    await clock.advance(0)
    assert call.wire.clears == [70 * MS]  # between ticks: the far end drops what it holds
    await advance_to(clock, 570)
    assert call.sent_ms() == [20, 40, 60]  # half a second of quiet
    call.bot.emit(BotResume(turn=1))
    await advance_to(clock, 900)
    assert call.sent_ms() == [20, 40, 60, 580, 600, 620, 640, 660, 680, 700]
    assert b"".join(p for _, p in call.wire.sent) == pcm  # every sample once, in order
    assert all(len(p) == FRAME for _, p in call.wire.sent)
    assert call.bot.speaking() == [("started", 20, (1, True)),
                                   ("stopped", 700, (1, 200.0, False, "Your claim is open."))]
    assert call.wire.clears == [70 * MS]
    await call.hang_up()


async def test_a_flush_during_the_pause_reports_what_was_heard_and_does_not_clear_again() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=0)
    await call.bot.say(ResponseStart(turn=1),
                       TTSText("The first clause is here,", turn=1), OutputAudio(ramp(100), turn=1),
                       TTSText("and the second one is longer.", turn=1), OutputAudio(ramp(200), turn=1))
    await advance_to(clock, 170)  # 160 ms played
    call.bot.emit(BotPause(turn=1))
    await clock.advance(0)
    await advance_to(clock, 870)
    call.bot.emit(FlushStart(turn=1))
    await advance_to(clock, 1000)
    assert call.sent_ms() == [20, 40, 60, 80, 100, 120, 140, 160]
    assert call.wire.clears == [170 * MS]  # once, at the pause: nothing went out since
    assert call.bot.speaking() == [("started", 20, (1, True)),
                                   ("stopped", 870, (1, 160.0, True, "The first clause is here, and the"))]
    await call.hang_up()


async def test_a_pause_before_any_audio_went_out_needs_no_clear_and_resume_starts_it() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=60)
    await call.bot.say(ResponseStart(turn=2), OutputAudio(ramp(40), turn=2))
    await advance_to(clock, 30)
    call.bot.emit(BotPause(turn=2))
    await call.bot.say(OutputAudio(ramp(40), turn=2), ResponseEnd(turn=2))
    await advance_to(clock, 300)
    assert call.wire.sent == [] and call.wire.clears == []
    call.bot.emit(BotResume(turn=2))
    await advance_to(clock, 500)
    assert call.sent_ms() == [320, 340, 360, 380]
    await call.hang_up()


async def test_a_frame_on_its_way_when_the_bot_pauses_goes_out_before_the_clear_and_a_flush_adds_none() -> None:
    clock = VirtualClock()
    call = await start(clock, lead_ms=0)
    await call.bot.say(ResponseStart(turn=1), TTSText("Your claim is open.", turn=1), OutputAudio(ramp(400), turn=1))
    await advance_to(clock, 50)  # frames at 20 and 40 sent
    call.wire.gate = asyncio.get_running_loop().create_future()  # the socket stalls on the frame of 60 ms
    await advance_to(clock, 70)
    call.bot.emit(BotPause(turn=1))
    await advance_to(clock, 100)
    assert call.wire.clears == []  # not before the frame the wire is still taking
    call.wire.gate.set_result(None)
    call.wire.gate = None
    await clock.advance(0)
    assert call.sent_ms() == [20, 40, 100] and call.wire.clears == [100 * MS]  # the frame, then the clear
    call.bot.emit(FlushStart(turn=1))
    await advance_to(clock, 300)
    assert call.wire.clears == [100 * MS] and call.sent_ms() == [20, 40, 100]  # one clear in all
    assert call.bot.speaking()[-1] == ("stopped", 100, (1, 60.0, True, ""))
    await call.hang_up()
