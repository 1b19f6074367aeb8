"""The scripted caller's turn-taking on a virtual clock: it waits for a bot that speaks
first (a greeting on a turn of its own), or talks over it with ``interrupt_after_ms``;
it waits for the answer to every turn it opened. Exact slot times, no speech engines."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

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
    UserStartedSpeaking,
)
from pipeline.graph import Graph
from pipeline.processor import Processor
from pipeline.runner import CallResult, run_call
from transports.local.script import Utterance, render_script
from transports.local.speech import SpeechCaller, SpeechCallerSettings

MS = 1_000_000
RATE = 16000
GREETING = "Welcome to the claims line, how can I help?"


def tone(ms: int, rate: int = RATE, level: int = 8000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 300 * t) * level).astype(np.int16).tobytes()


def loud(pcm: bytes) -> bool:
    return bool(np.abs(np.frombuffer(pcm, dtype=np.int16)).max() > 1000)


class Greeter(Processor):
    """Speaks first, on a turn of its own, when the line opens (the caller's first frame),
    unless ``greeting_ms`` is 0, and notes when the caller's voice comes. ``yields``: flush
    the greeting when the caller talks over it (what the barge-in node does); ``answers``:
    open a user turn when the caller's voice starts and answer it when the voice stops
    (what the VAD, STT and brain do)."""

    consumes = (InputAudio,)
    produces = (TTSText, OutputAudio)

    def __init__(self, *, greeting_ms: int = 1000, yields: bool = False, answers: bool = False) -> None:
        super().__init__(name="bot")
        self.greeting_ms = greeting_ms
        self.yields = yields
        self.answers = answers
        self.opened = False
        self.greeting_turn = 0
        self.user_turn = 0  # the caller's turn being spoken
        self.voice_at: list[int] = []  # ms of every loud caller frame
        self.events: list[EventFrame] = []

    async def process(self, frame: InputAudio) -> None:
        if not self.opened:
            self.opened = True
            if self.greeting_ms:
                self.greeting_turn = self.ctx.next_turn()
                await self.speak(self.greeting_turn, GREETING, self.greeting_ms)
        if loud(frame.pcm):
            self.voice_at.append(self.ctx.clock.now_ns() // MS)
            if len(self.voice_at) == 1 and self.yields:
                self.emit(FlushStart(turn=self.greeting_turn))
            if self.answers and not self.user_turn:
                self.user_turn = self.ctx.next_turn()
                self.emit(UserStartedSpeaking(turn=self.user_turn))
        elif self.user_turn:
            turn, self.user_turn = self.user_turn, 0
            await self.speak(turn, "Sure.", 200)

    async def speak(self, turn: int, text: str, ms: int) -> None:
        for frame in (ResponseStart(turn=turn), TTSText(text, turn=turn), OutputAudio(tone(ms), turn=turn),
                      ResponseEnd(turn=turn)):
            await self.push(frame)

    def on_event(self, event: EventFrame) -> None:
        self.events.append(event)

    def speaking(self) -> list[tuple[str, int, Any]]:
        out: list[tuple[str, int, Any]] = []
        for e in self.events:
            if isinstance(e, BotStartedSpeaking):
                out.append(("started", e.ts // MS, e.turn))
            elif isinstance(e, BotStoppedSpeaking):
                out.append(("stopped", e.ts // MS, (e.turn, e.played_ms, e.interrupted, e.heard_text)))
        return out


async def call(caller: SpeechCaller, bot: Greeter) -> CallResult:
    """Run ``caller -> bot -> caller`` on a virtual clock, 20 ms at a time, to its end."""
    clock = VirtualClock()
    graph = Graph("greeting")
    graph.chain(caller, bot, caller)
    task = asyncio.create_task(run_call(graph, CallContext(clock=clock)))
    await clock.advance(0)
    for _ in range(1000):  # 20 s of line time at most
        if task.done():
            break
        await clock.advance(20 * MS)
    assert task.done(), "the call did not end"
    return task.result()


def caller(**settings: Any) -> SpeechCaller:
    node = SpeechCaller(SpeechCallerSettings(lead_ms=60, pause_ms=500, **settings), name="caller")
    node.set_script([Utterance("Hello", tone(400))])  # voice from its first sample
    return node


async def test_the_caller_waits_for_a_greeting_to_finish_then_pauses() -> None:
    me, bot = caller(), Greeter(greeting_ms=1000)
    result = await call(me, bot)
    assert result.reason == "eos" and result.errors == ()
    # Greeting on turn 1: queued at 0 ms (the line opens), lead reached, played 20..1000 ms.
    assert bot.speaking() == [("started", 20, 1), ("stopped", 1000, (1, 1000.0, False, GREETING))]
    assert bot.voice_at[0] == 1000 + 500  # the caller spoke pause_ms after the greeting ended
    assert len(bot.voice_at) == 20  # its whole line: 400 ms
    assert me.heard.frames[0] == (20 * MS, 1) and len(me.heard.frames) == 50


async def test_without_a_greeting_the_caller_speaks_when_the_line_has_opened() -> None:
    me = caller()
    bot = Greeter(greeting_ms=0)
    result = await call(me, bot)
    assert result.reason == "eos"
    assert bot.speaking() == []  # an empty greeting never starts playing
    assert bot.voice_at[0] == 300  # right after the 300 ms opening, no pause


async def test_interrupt_after_talks_over_the_greeting_and_the_flush_cuts_it() -> None:
    me, bot = caller(interrupt_after_ms=300), Greeter(greeting_ms=1000, yields=True)
    result = await call(me, bot)
    assert result.reason == "eos" and result.errors == ()
    assert bot.voice_at[0] == 20 + 300  # the greeting started at 20 ms; the caller cut in 300 ms later
    # The greeting is flushed in the slot the caller's voice arrived, after that slot's bot
    # frame: 320 of 1000 ms were heard (frames 20..320 ms), so the first 32 % of its
    # characters, whole words only ("the" was cut off).
    assert bot.speaking() == [("started", 20, 1), ("stopped", 320, (1, 320.0, True, "Welcome to"))]
    assert me.line.answers[1].interrupted
    assert me.report_notes() == {1: {"barge_in_ms": 0.0}}  # flushed in the very slot the voice came


async def test_the_caller_waits_for_the_answer_to_its_own_turn() -> None:
    me, bot = caller(), Greeter(greeting_ms=0, answers=True)
    me.set_script([Utterance("Hello", tone(400)), Utterance("Goodbye", tone(200))])
    result = await call(me, bot)
    assert result.reason == "eos"
    # Line 1 (300..680 ms) opens turn 1. At 700 ms the bot has not started answering, but
    # the caller waits for the answer to its turn: "Sure." plays 720..900 ms, and line 2
    # comes pause_ms after it.
    # Line 2 (1400..1580 ms) is answered the same way, and the caller waits for that too.
    assert bot.speaking() == [("started", 720, 1), ("stopped", 900, (1, 200.0, False, "Sure.")),
                              ("started", 1620, 2), ("stopped", 1800, (2, 200.0, False, "Sure."))]
    assert bot.voice_at[0] == 300 and bot.voice_at[20] == 900 + 500
    assert me.line.turns_opened == [1, 2]
    assert me.report_notes() == {1: {"caller_text": "Hello"}, 2: {"caller_text": "Goodbye"}}
    assert me.heard.frames[-1] == (1800 * MS, 2)


def test_a_wav_at_44_1_khz_stereo_is_converted_to_the_line_rate(tmp_path: Path) -> None:
    import wave

    mono = np.frombuffer(tone(500, rate=44100), dtype=np.int16)
    path = tmp_path / "hello.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(np.stack([mono, mono], axis=1).reshape(-1).tobytes())
    [utt] = render_script([], sample_rate=16000, wav=path)
    assert utt.text == "<hello.wav>" and len(utt.pcm) == 500 * 32  # 500 ms at 16 kHz
    assert utt.voice_start_ms == 0.0
