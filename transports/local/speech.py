"""SpeechCaller: a local caller that speaks, listens, and can talk over the bot.

A :class:`~transports.base.Transport` whose wire is a person on a phone line: the base
plays the bot's audio to it (paced, with the speaking events and flush); this class adds
what the person does, one frame per tick of the shared pacer, like a line in real time:

* It says its script: lines synthesised by a local voice, or a WAV file, rendered off
  the event loop before the call (:mod:`.script`).
* Like a person, it waits until the bot has finished answering, pauses, then says the
  next line. When it picks up, it says the first line at once, unless the bot has
  started speaking first (a greeting): then it waits for that too. It waits for every
  response that started, greeting included, and for an answer to every turn it opened.
* With ``interrupt_after_ms`` it says its next line that long after the bot starts
  speaking instead, talking over it: a barge-in (a greeting too).
* It keeps what it heard (:class:`.heard.HeardAudio`, saved with ``record:``) and each
  barge-in's reaction time (:class:`.heard.BargeInMeter`), for ``voicegraph call``
  reports (:meth:`report_notes`) and tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pipeline.frames import (
    BotPause,
    BotStartedSpeaking,
    BotStoppedSpeaking,
    ControlFrame,
    EventFrame,
    FlushStart,
    OutputAudio,
    ResponseEnd,
    ResponseStart,
    TTSText,
    UserStartedSpeaking,
)
from pipeline.settings import Doc, OneOf, Range

from ..base import Transport
from ..pacer import pacer_for
from .heard import BargeInMeter, HeardAudio
from .script import Utterance, render_script

__all__ = ["Answer", "SaidLine", "SpeechCaller", "SpeechCallerSettings", "Utterance"]

logger = logging.getLogger(__name__)

OPENING_MS = 300  # the line is open this long before the caller says anything


@dataclass(frozen=True, kw_only=True)
class SpeechCallerSettings:
    """What the caller says and how the line behaves."""

    say: Annotated[tuple[str, ...], Doc("lines spoken in turn, synthesised with 'voice'")] = ()
    voice: Annotated[Literal["piper", "espeak"], Doc("the caller's own voice")] = "piper"
    sample_rate: Annotated[int, OneOf(8000, 16000, 24000, 48000), Doc(
        "the line's rate both ways (16000 wideband, 8000 narrowband)")] = 16000
    frame_ms: Annotated[int, OneOf(10, 20, 30), Doc("one packet of line audio")] = 20
    lead_ms: Annotated[int, Range(ge=0), Doc("playout lead buffer")] = 60
    pause_ms: Annotated[int, Range(ge=0), Doc("the caller's pause after the bot finished")] = 500
    answer_timeout_s: Annotated[float, Range(gt=0), Doc("longest wait for the bot's answer")] = 20.0
    interrupt_after_ms: Annotated[float, Range(ge=0), Doc(
        "talk over the bot's answer this long after it starts (null: wait for it to finish)")] | None = None
    record: Annotated[str, Doc("a WAV path to keep the bot's audio as heard (blank: none)")] = ""


@dataclass(slots=True)
class SaidLine:
    """One line as the caller said it on this call."""

    utterance: Utterance
    #: The user turn the call opened for it (0 until the VAD reports the speech).
    turn: int = 0


@dataclass(slots=True)
class Answer:
    """What the caller knows of one bot response (a turn the bot spoke in)."""

    ended: bool = False  # its ResponseEnd came, or it was flushed
    started_ns: int = 0  # its audio started playing (0: not, or not yet)
    stopped_ns: int = 0
    played_ms: float = 0.0
    interrupted: bool = False


@dataclass(slots=True)
class _Line:
    """Caller-side state of the call: the turns it opened and the bot's responses."""

    turns_opened: list[int] = field(default_factory=list)
    answers: dict[int, Answer] = field(default_factory=dict)


class SpeechCaller(Transport):
    """A scripted speaking caller on a paced full-duplex line (see module docstring)."""

    Settings = SpeechCallerSettings
    settings: SpeechCallerSettings

    def __init__(self, settings: SpeechCallerSettings | None = None, *, name: str | None = None) -> None:
        s = settings if settings is not None else SpeechCallerSettings()
        super().__init__(s, name=name, sample_rate=s.sample_rate, frame_ms=s.frame_ms, lead_ms=s.lead_ms)
        self.script: list[str | Utterance] = list(s.say)
        self.wav: Path | None = None
        self.interrupt_after_ms = s.interrupt_after_ms
        #: The lines as said on this call, once rendered (at setup).
        self.said: list[SaidLine] = []
        self.heard = HeardAudio(s.sample_rate)
        self.meter = BargeInMeter()
        self.line = _Line()
        self._frame_bytes = s.sample_rate * s.frame_ms // 1000 * 2
        self._quiet = bytes(self._frame_bytes)
        self._slot = 0  # the slot of the caller's frame being decided (ns)
        self._speaking: SaidLine | None = None

    # --- scripting (voicegraph call) ---------------------------------------------------

    def set_script(self, lines: Sequence[str | Utterance]) -> None:
        """Replace what the caller says (before the call starts): text lines to synthesise,
        or ``Utterance`` s already at the line rate."""
        self.script = list(lines)

    def configure_call(self, *, wav: Path | None = None, interrupt_after_ms: float | None = None) -> None:
        """Play ``wav`` instead of the script; talk over the bot ``interrupt_after_ms`` in."""
        if wav is not None:
            self.wav = wav
        if interrupt_after_ms is not None:
            self.interrupt_after_ms = interrupt_after_ms

    def report_notes(self) -> dict[int, dict[str, object]]:
        """Per turn: what the caller really said, and the barge-in reaction time."""
        notes: dict[int, dict[str, object]] = {}
        for said in self.said:
            if said.turn:
                notes.setdefault(said.turn, {})["caller_text"] = said.utterance.text
        for turn, ms in self.meter.reaction_ms.items():
            notes.setdefault(turn, {})["barge_in_ms"] = ms
        return notes

    # --- the caller's side of the line --------------------------------------------------

    async def setup(self) -> None:
        s = self.settings
        if self.wav is None and all(isinstance(line, Utterance) for line in self.script):
            utterances = [line for line in self.script if isinstance(line, Utterance)]  # nothing to render
        else:
            utterances = await self.run_blocking(
                lambda: render_script(self.script, sample_rate=s.sample_rate, voice=s.voice, wav=self.wav))
        self.said = [SaidLine(u) for u in utterances]
        if not self.said:
            logger.warning("%s: nothing to say (empty script); the call will be silence", self.name)

    async def serve(self) -> None:
        s = self.settings
        await self.input_format(s.sample_rate)
        with pacer_for(self.ctx.clock, s.frame_ms).subscribe() as voice:
            frames = self._frames()
            while True:
                slot = await voice.next()
                if slot is None:
                    continue  # nobody wakes this subscription between ticks
                self._slot = slot
                pcm = next(frames, None)  # decided now, when the slot has come
                if pcm is None:
                    break
                await self.receive_audio(pcm)
        if s.record:
            await self.run_blocking(self.heard.save, s.record)

    async def send_audio(self, pcm: bytes) -> None:
        """The caller's ear: the frame is heard now."""
        self.heard.add(self.ctx.clock.now_ns(), self.sending_turn, pcm)

    # The caller's audio is a generator of frames, one per slot: each step runs when its
    # slot comes, so every decision (keep waiting, or talk now) sees the line as it is at
    # that instant, and the first frame of a line goes out in the slot it was decided in.

    def _frames(self) -> Iterator[bytes]:
        yield from self._silence(OPENING_MS)  # the line opens before anyone speaks
        for i, said in enumerate(self.said):
            yield from self._wait_for_cue(first=i == 0)
            yield from self._say(said)
        yield from self._silence(self.settings.answer_timeout_s * 1000, until=self._answered)
        yield from self._silence(self.settings.pause_ms)

    def _wait_for_cue(self, *, first: bool) -> Iterator[bytes]:
        """Wait for the bot to finish answering and pause (or talk over it once it has
        spoken ``interrupt_after_ms``)."""
        if first and not self.line.answers:
            return  # nobody spoke when the line opened: say the first line now
        limit = self.settings.answer_timeout_s * 1000
        after = self.interrupt_after_ms
        if after is not None:
            yield from self._silence(limit, until=lambda: self._bot_spoke_for(after) or self._answered())
            if not self._answered():
                return  # the bot is speaking: talk over it now
        else:
            yield from self._silence(limit, until=self._answered)
        yield from self._silence(self.settings.pause_ms)

    def _say(self, said: SaidLine) -> Iterator[bytes]:
        self._speaking = said
        fb = self._frame_bytes
        pcm = said.utterance.pcm
        onset_frame = int(said.utterance.voice_start_ms // self.frame_ms)
        for k, offset in enumerate(range(0, len(pcm), fb)):
            if k == onset_frame:  # the voice reaches the line: a barge-in's reaction starts here
                self.meter.voice_on(self.ctx.clock.now_ns())
            chunk = pcm[offset:offset + fb]
            yield chunk if len(chunk) == fb else chunk + bytes(fb - len(chunk))
        self._speaking = None
        self.meter.voice_off()

    def _silence(self, max_ms: float, *, until: Callable[[], bool] | None = None) -> Iterator[bytes]:
        """Silence until ``until()`` holds or ``max_ms`` of line time has gone by."""
        start = self._slot
        while (self._slot - start) / 1e6 < max_ms and (until is None or not until()):
            yield self._quiet

    # --- what the caller notices of the bot -------------------------------------------

    def _answered(self) -> bool:
        """Every response that started has ended, every turn the caller opened has been
        answered, and nothing is left to play."""
        if not self.playout.idle:
            return False
        answers = self.line.answers
        return (all(a.ended for a in answers.values())
                and all(t in answers for t in self.line.turns_opened))

    def _bot_spoke_for(self, ms: float) -> bool:
        now = self.ctx.clock.now_ns()
        return any(a.started_ns and not a.stopped_ns and (now - a.started_ns) / 1e6 >= ms
                   for a in self.line.answers.values())

    def _answer(self, turn: int) -> Answer:
        answer = self.line.answers.get(turn)
        if answer is None:
            answer = self.line.answers[turn] = Answer()
        return answer

    async def process(self, frame: OutputAudio | TTSText) -> None:
        if frame.turn >= 1 and frame.turn not in self.line.answers:
            self._answer(frame.turn)  # a response without a ResponseStart still has to end
        await super().process(frame)

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        if isinstance(frame, ResponseStart):
            self._answer(frame.turn)
        elif isinstance(frame, ResponseEnd):
            self._answer(frame.turn).ended = True
        return await super().on_control(frame)

    def on_event(self, event: EventFrame) -> None:
        super().on_event(event)  # the transport's own: pause and resume of the bot's audio
        kind = type(event)
        if kind is UserStartedSpeaking and event.turn:
            if event.turn not in self.line.turns_opened:
                self.line.turns_opened.append(event.turn)
                said = self._speaking
                if said is not None and not said.turn:
                    said.turn = event.turn
        elif kind is BotStartedSpeaking:
            answer = self._answer(event.turn)
            answer.started_ns = event.ts
            answer.stopped_ns = 0
        elif isinstance(event, BotStoppedSpeaking):
            answer = self._answer(event.turn)
            answer.stopped_ns = event.ts
            answer.played_ms += event.played_ms
            answer.interrupted = answer.interrupted or event.interrupted
            if event.interrupted and self.ctx.is_stale(event.turn):
                self.meter.bot_cut(event.turn, event.ts)  # a flush: the caller's barge-in
        elif kind is BotPause:
            self.meter.bot_cut(event.turn, event.ts)  # the bot goes quiet: the caller's barge-in, if confirmed
        elif kind is FlushStart:
            for turn, answer in self.line.answers.items():
                if turn <= event.turn:
                    answer.ended = True  # a flushed answer will not continue
