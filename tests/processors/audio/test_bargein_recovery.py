"""False barge-in recovery end to end on a virtual clock: caller audio through the VAD
and barge-in, the bot's audio through a real transport's playout. A backchannel or a
cough over the bot pauses it within the VAD start window and it plays on from the very
sample it paused at; a real interruption flushes it, and the heard text stops at the
pause either way."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from pipeline import CallContext, Graph, run_call
from pipeline.clock import VirtualClock
from pipeline.frames import (
    BACKCHANNEL,
    AudioFormat,
    BotPause,
    BotResume,
    BotStoppedSpeaking,
    FinalTranscript,
    FlushStart,
    InputAudio,
    InterimTranscript,
    OutputAudio,
    ResponseEnd,
    ResponseStart,
    TTSText,
    TurnEnd,
    TurnStart,
    UserStartedSpeaking,
    UserStoppedSpeaking,
    UserWords,
)
from pipeline.runner import CallResult
from pipeline.testing import Puppet, drive, run_processor
from processors.audio.bargein import Interrupt, Pause, Resume
from processors.audio.bargein_node import BargeInProcessor, BargeInSettings
from processors.audio.vad_node import VADProcessor, VADSettings
from processors.stt.node import STTProcessor
from tests.processors.stt.speech import frames, silence, utterance
from tests.processors.stt.test_stt_node import SENTENCE, turn_frames
from transports.base import Transport
from transports.pacer import pacer_for

RATE = 16000
MS = 1_000_000
START_WINDOW_MS = 200  # the VAD's start_ms


def ramp(ms: int) -> bytes:
    """Bot audio whose every sample differs, so a resume's position shows byte for byte."""
    return (np.arange(RATE * ms // 1000) % 30000).astype(np.int16).tobytes()


class Line(Transport):
    """The caller's end: pushes ``pcm`` one 20 ms frame per tick, keeps the bot's frames."""

    def __init__(self, pcm: bytes) -> None:
        super().__init__(name="line", sample_rate=RATE, lead_ms=0)
        self.pcm = pcm
        self.sent: list[tuple[int, bytes]] = []
        self.clears: list[int] = []

    async def serve(self) -> None:
        await self.input_format(RATE)
        with pacer_for(self.ctx.clock, 20).subscribe() as ticks:
            for chunk in frames(self.pcm):
                await ticks.next()
                await self.receive_audio(chunk)

    async def send_audio(self, pcm: bytes) -> None:
        self.sent.append((self.ctx.clock.now_ns() // MS, pcm))

    async def clear_audio(self) -> None:
        self.clears.append(self.ctx.clock.now_ns() // MS)


class Bot(Puppet):
    """Says one long answer when the call starts; may hear the caller's words (UserWords)."""

    def __init__(self, clauses: list[tuple[str, int]], words_after_ms: float | None = None, text: str = "") -> None:
        super().__init__((InputAudio,), name="bot")
        self.clauses, self.words_after_ms, self.text = clauses, words_after_ms, text
        self.turn = 0
        self.pcm = b""
        self._said_words = False

    async def process(self, frame: Any) -> None:
        if self.words_after_ms is not None and not self._said_words and self.ctx.audio_ms >= self.words_after_ms:
            self._said_words = True  # as the STT does for an interim of the caller's turn
            self.emit(UserWords(text=self.text, turn=self.ctx.turn))
        await super().process(frame)

    async def speak(self) -> None:
        self.turn = self.ctx.next_turn()
        await self.say(ResponseStart(turn=self.turn))
        for text, ms in self.clauses:
            pcm = ramp(ms)
            self.pcm += pcm
            await self.say(TTSText(text, turn=self.turn), OutputAudio(pcm, turn=self.turn))
        await self.say(ResponseEnd(turn=self.turn))


CLAUSES = [("Your claim is open,", 1000), ("and an adjuster will call you tomorrow morning.", 3000)]


async def call(caller: bytes, settings: BargeInSettings, vad: VADSettings | None = None,
               **bot: Any) -> tuple[Line, Bot, BargeInProcessor]:
    clock = VirtualClock()
    line, speaker = Line(caller), Bot(CLAUSES, **bot)
    barge = BargeInProcessor(settings)
    graph = Graph("recovery")
    graph.chain(line, VADProcessor(vad), barge, speaker, line)
    task: asyncio.Task[CallResult] = asyncio.create_task(run_call(graph, CallContext(clock=clock)))
    await clock.advance(0)
    await speaker.speak()
    await drive(clock, task)
    result = task.result()
    assert result.reason == "eos" and result.errors == ()
    return line, speaker, barge


def speech(bot: Bot) -> tuple[UserStartedSpeaking, UserStoppedSpeaking]:
    starts = [e for e in bot.events if isinstance(e, UserStartedSpeaking)]
    stops = [e for e in bot.events if isinstance(e, UserStoppedSpeaking)]
    assert len(starts) == len(stops) == 1
    return starts[0], stops[0]


def played(line: Line) -> bytes:
    return b"".join(pcm for _, pcm in line.sent)


def gap(line: Line) -> tuple[int, int]:
    """The last frame before the bot went quiet and the first after (ms on the clock)."""
    times = [t for t, _ in line.sent]
    i = next(i for i in range(1, len(times)) if times[i] - times[i - 1] > 20)
    return times[i - 1], times[i]


RECOVER = BargeInSettings(recover=True)


async def test_a_backchannel_over_the_bot_pauses_it_then_it_plays_on_from_where_it_paused() -> None:
    caller = silence(1000) + utterance("Uh-huh.", pad_ms=0) + silence(3500)
    line, bot, barge = await call(caller, RECOVER)
    start, stop = speech(bot)
    paused, resumed = barge.decisions
    assert paused == Pause(turn=bot.turn, at_ms=start.at_ms + START_WINDOW_MS, speech_started_at_ms=start.at_ms)
    assert resumed == Resume(turn=bot.turn, at_ms=stop.at_ms + 600)
    last, first = gap(line)
    assert last <= start.at_ms + START_WINDOW_MS + 40  # quiet within the start window + 40 ms
    assert first - 20 <= resumed.at_ms <= first  # and back on the next slot after the resume
    assert played(line) == bot.pcm  # every sample once, in order: it played on where it paused
    assert [e for e in bot.events if isinstance(e, FlushStart)] == []
    assert [type(e) for e in bot.events if isinstance(e, (BotPause, BotResume))] == [BotPause, BotResume]
    stopped = [e for e in bot.events if isinstance(e, BotStoppedSpeaking)]
    assert [(e.interrupted, e.played_ms, e.heard_text) for e in stopped] == [
        (False, 4000.0, "Your claim is open, and an adjuster will call you tomorrow morning.")]
    # The "uh-huh" opened a caller turn; it goes on marked as no turn, for the STT to drop.
    ends = [f for f in bot.got if isinstance(f, TurnEnd)]
    assert [(e.turn, e.reason) for e in ends] == [(start.turn, BACKCHANNEL)]


async def test_when_the_caller_turn_ends_first_the_bot_resumes_then_and_the_turn_is_dropped() -> None:
    # A short end-of-turn window (as with Smart Turn's complete_ms): the turn ends 250 ms
    # after the "uh-huh", before resume_ms; the bot plays on at that moment.
    caller = silence(1000) + utterance("Uh-huh.", pad_ms=0) + silence(3500)
    line, bot, barge = await call(caller, RECOVER, VADSettings(silence_ms=250))
    start, stop = speech(bot)
    (end,) = [f for f in bot.got if isinstance(f, TurnEnd)]
    assert end.at_ms == stop.at_ms + 250
    pause, resume = barge.decisions
    assert pause == Pause(turn=bot.turn, at_ms=start.at_ms + START_WINDOW_MS, speech_started_at_ms=start.at_ms)
    assert isinstance(resume, Resume) and end.at_ms <= resume.at_ms <= end.at_ms + 60  # as the TurnEnd passes
    assert resume.at_ms < stop.at_ms + 600  # before resume_ms would have
    assert played(line) == bot.pcm
    assert [(f.turn, f.reason) for f in bot.got if isinstance(f, TurnEnd)] == [(start.turn, BACKCHANNEL)]


async def test_a_cough_length_noise_burst_pauses_and_resumes_the_bot() -> None:
    noise = np.random.default_rng(7).normal(0, 6000, RATE * 400 // 1000).astype(np.int16).tobytes()
    caller = silence(1500) + noise + silence(3500)
    line, bot, barge = await call(caller, RECOVER)
    start, _ = speech(bot)
    assert [type(d) for d in barge.decisions] == [Pause, Resume]
    assert barge.decisions[0].at_ms - start.at_ms == START_WINDOW_MS
    assert played(line) == bot.pcm and barge.interrupts == []


async def test_a_real_interruption_with_a_mid_sentence_pause_flushes_and_keeps_what_was_heard_up_to_the_pause() -> None:
    # "No wait," then a 400 ms pause, then the rest: the bot stays paused through the
    # caller's pause and the turn is flushed confirm_ms after the first onset.
    caller = silence(1000) + utterance("No wait, I need to change the address on the claim.", pad_ms=0) + silence(800)
    line, bot, barge = await call(caller, RECOVER)
    onset = next(e for e in bot.events if isinstance(e, UserStartedSpeaking)).at_ms
    assert barge.decisions == [
        Pause(turn=bot.turn, at_ms=onset + START_WINDOW_MS, speech_started_at_ms=onset),
        Interrupt(turn=bot.turn, at_ms=onset + 900, speech_started_at_ms=onset),
    ]
    assert line.sent[-1][0] <= onset + START_WINDOW_MS + 40  # quiet from the pause on, never resumed
    assert [e.turn for e in bot.events if isinstance(e, FlushStart)] == [bot.turn]
    assert [f.reason for f in bot.got if isinstance(f, TurnEnd)] == ["silence"]  # a real turn: answered
    (stopped,) = [e for e in bot.events if isinstance(e, BotStoppedSpeaking)]
    assert stopped.interrupted and stopped.played_ms == len(played(line)) / 32 == 1240.0
    # 1000 ms of clause 1, then 240 of 3000 ms of clause 2 (eight words): its first word.
    assert stopped.heard_text == "Your claim is open, and"
    assert line.clears == [line.sent[-1][0]]  # the wire cleared once, at the pause, after its last frame


async def test_words_heard_by_the_stt_flush_before_confirm_ms_and_backchannel_words_do_not() -> None:
    caller = silence(1000) + utterance("No wait, I need to change the address on the claim.", pad_ms=0) + silence(800)
    line, bot, barge = await call(caller, RECOVER, words_after_ms=1500, text="No wait, I")
    onset = next(e for e in bot.events if isinstance(e, UserStartedSpeaking)).at_ms
    assert [type(d) for d in barge.decisions] == [Pause, Interrupt]
    assert barge.interrupts[0].at_ms == 1500 < onset + 900  # the words, not the duration
    caller = silence(1000) + utterance("Uh-huh.", pad_ms=0) + silence(3500)
    line, bot, barge = await call(caller, RECOVER, words_after_ms=1280, text="Uh-huh, okay, yeah. [cough]")
    assert [type(d) for d in barge.decisions] == [Pause, Resume] and played(line) == bot.pcm


async def test_without_recover_the_first_decision_still_flushes_within_the_start_window() -> None:
    caller = silence(1000) + utterance("Uh-huh.", pad_ms=0) + silence(1500)
    line, bot, barge = await call(caller, BargeInSettings())
    onset = next(e for e in bot.events if isinstance(e, UserStartedSpeaking)).at_ms
    assert barge.decisions == [Interrupt(turn=bot.turn, at_ms=onset + START_WINDOW_MS, speech_started_at_ms=onset)]
    assert line.sent[-1][0] <= onset + START_WINDOW_MS + 40
    assert [type(e) for e in bot.events if isinstance(e, (BotPause, BotResume))] == []


async def test_the_stt_tells_barge_in_each_interim_as_it_is_heard() -> None:
    out, result = await run_processor(STTProcessor(), [AudioFormat(RATE), *turn_frames(SENTENCE, 4)])
    assert result.errors == ()
    interims = [f for f in out.frames if isinstance(f, InterimTranscript)]
    words = [e for e in out.events if isinstance(e, UserWords)]
    assert interims and [(w.turn, w.text) for w in words] == [(4, f.text) for f in interims]


async def test_a_caller_talking_over_the_bot_for_two_minutes_is_one_flush_and_nothing_breaks() -> None:
    rng = np.random.default_rng(3)
    # Two minutes of loud babble in 1.5 s bursts with 100 ms gaps (the VAD hears speech
    # with short stops, and its 30 s turn limit cuts turns meanwhile).
    bursts = [rng.normal(0, 5000, RATE * 1500 // 1000).astype(np.int16).tobytes() + silence(100) for _ in range(75)]
    caller = silence(1000) + b"".join(bursts) + silence(1000)
    line, bot, barge = await call(caller, RECOVER)
    onset = next(e for e in bot.events if isinstance(e, UserStartedSpeaking)).at_ms
    assert [type(d) for d in barge.decisions] == [Pause, Interrupt]
    assert barge.interrupts[0].at_ms == onset + 900
    assert [e.turn for e in bot.events if isinstance(e, FlushStart)] == [bot.turn]
    assert line.sent[-1][0] <= onset + START_WINDOW_MS + 40 and line.playout.idle
    (stopped,) = [e for e in bot.events if isinstance(e, BotStoppedSpeaking)]
    assert stopped.interrupted and stopped.played_ms == onset + START_WINDOW_MS - 20  # frames at 20..1180 ms
    assert stopped.heard_text == "Your claim is open,"  # 180 of clause 2's 3000 ms: not one of its 8 words


async def test_the_stt_drops_a_backchannel_turn_and_finalises_the_next_one() -> None:
    frames_ = [AudioFormat(RATE), *turn_frames("Uh-huh.", 2)]
    end = frames_.pop()
    assert isinstance(end, TurnEnd)
    frames_ += [TurnEnd(turn=2, at_ms=end.at_ms, reason=BACKCHANNEL), *turn_frames(SENTENCE, 3)]
    out, result = await run_processor(STTProcessor(), frames_)
    assert result.errors == ()
    finals = [f for f in out.frames if isinstance(f, FinalTranscript)]
    assert [f.turn for f in finals] == [3] and "claim" in finals[0].text.lower()
    assert [f.turn for f in out.controls if isinstance(f, TurnStart)] == [2, 3]
