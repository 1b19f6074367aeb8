"""SpeechCaller: a local caller that speaks, listens, and can talk over the bot.

A duplex transport on one 20 ms line clock, like a phone line in both directions:

* Source side: every tick it sends one frame of caller audio, either speech (its script
  synthesised by a local TTS voice, or a WAV file) or silence, at real-time pace. Like a
  person, it waits until the bot has finished answering, pauses, then says the next
  line. With ``interrupt_after_ms`` it starts its next line that long after the bot
  starts speaking instead: a barge-in.
* Sink side: the bot's audio goes through a ``Playout`` (lead buffer, paced frames) and
  is "played" one frame per tick; the transport emits ``BotStartedSpeaking`` and
  ``BotStoppedSpeaking`` (with what the caller heard). ``FlushStart`` drops the buffer at
  once.

It records what it said per turn, when its speech started and ended, the bot audio it
heard, and each barge-in's reaction time (its speech onset -> bot audio stopped), for
``voicegraph call`` reports and tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.errors import ConfigError, FrameError
from pipeline.frames import (
    AudioFormat,
    BotStartedSpeaking,
    BotStoppedSpeaking,
    ControlFrame,
    EventFrame,
    InputAudio,
    OutputAudio,
    ResponseEnd,
    ResponseStart,
    TTSText,
    UserStartedSpeaking,
)
from pipeline.offload import shared
from pipeline.processor import Processor
from processors.audio.resample import OUTPUT_QUALITY, Resampler
from processors.tts.engine import TTSEngine

from ..playout import Playout, PlayoutEvent, PlayoutStarted, PlayoutStopped
from .wav import read_wav, write_wav

__all__ = ["SpeechCaller", "SpeechCallerSettings", "Utterance"]

logger = logging.getLogger(__name__)

SPEECH_DBFS = -45.0  # a frame louder than this counts as the caller's voice (for timing)


@dataclass(frozen=True, kw_only=True)
class SpeechCallerSettings:
    """What the caller says and how the line behaves.

    ``say``: lines spoken in turn (synthesised with ``voice``); ``sample_rate``: the line's
    rate both ways (16000 wideband, 8000 narrowband); ``lead_ms``: playout lead buffer;
    ``pause_ms``: the caller's pause after the bot finished; ``interrupt_after_ms``: talk
    over the bot this long after it starts (none: wait for it); ``record``: a WAV path to
    keep the bot's audio as heard.
    """

    say: tuple[str, ...] = ()
    voice: Literal["piper", "espeak"] = "piper"
    sample_rate: int = 16000
    frame_ms: int = 20
    lead_ms: int = 60
    pause_ms: int = 500
    answer_timeout_s: float = 20.0
    interrupt_after_ms: float | None = None
    record: str = ""


@dataclass(slots=True)
class Utterance:
    """One thing the caller says: its audio at the line rate, and where the voice is in it."""

    text: str
    pcm: bytes
    voice_start_ms: float = 0.0
    turn: int = 0
    sent_at_ns: int = 0
    onset_ns: int = 0


@dataclass(slots=True)
class _Answer:
    interruptible: bool = True
    ended: bool = False
    started_ns: int = 0
    stopped_ns: int = 0
    played_ms: float = 0.0
    interrupted: bool = False


@dataclass(slots=True)
class _Line:
    """Caller-side state of the call, for waiting and reporting."""

    turns_opened: list[int] = field(default_factory=list)
    answers: dict[int, _Answer] = field(default_factory=dict)
    barge_in_ms: dict[int, float] = field(default_factory=dict)


class SpeechCaller(Processor):
    """A scripted speaking caller on a paced full-duplex line (see module docstring)."""

    duplex = True
    produces = (InputAudio,)
    consumes = (OutputAudio, TTSText)
    Settings = SpeechCallerSettings
    settings: SpeechCallerSettings
    latency = (20.0, 80.0)

    def __init__(self, settings: SpeechCallerSettings | None = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        s = self.settings
        if s.sample_rate not in (8000, 16000, 24000, 48000):
            raise ConfigError(f"line sample_rate must be 8000, 16000, 24000 or 48000, got {s.sample_rate}")
        if s.frame_ms not in (10, 20, 30):
            raise ConfigError(f"frame_ms must be 10, 20 or 30, got {s.frame_ms}")
        self.script: list[str] = list(s.say)
        self.wav: Path | None = None
        self.interrupt_after_ms = s.interrupt_after_ms
        self.playout = Playout(s.sample_rate, frame_ms=s.frame_ms, lead_ms=s.lead_ms)
        self.utterances: list[Utterance] = []
        self.heard = bytearray()  # the bot's audio as the caller heard it
        #: (time ns, turn) of every bot frame the caller heard.
        self.heard_frames: list[tuple[int, int]] = []
        self.line = _Line()
        self._frame_bytes = s.sample_rate * s.frame_ms // 1000 * 2
        self._speaking: Utterance | None = None
        self._next_ns = 0

    # --- scripting (voicegraph call) ---------------------------------------------------

    def set_script(self, lines: Sequence[str]) -> None:
        """Replace what the caller says (before the call starts)."""
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
        for utt in self.utterances:
            if utt.turn:
                notes.setdefault(utt.turn, {})["caller_text"] = utt.text
        for turn, ms in self.line.barge_in_ms.items():
            notes.setdefault(turn, {})["barge_in_ms"] = ms
        return notes

    # --- source side -------------------------------------------------------------------

    async def setup(self) -> None:
        self.utterances = await self.run_blocking(self._prepare)
        if not self.utterances:
            logger.warning("%s: nothing to say (empty script); the call will be silence", self.name)

    def _prepare(self) -> list[Utterance]:
        rate = self.settings.sample_rate
        if self.wav is not None:
            pcm, wav_rate = read_wav(self.wav)
            return [self._utterance(f"<{self.wav.name}>", _convert(pcm, wav_rate, rate))]
        texts = [t for t in self.script if t.strip()]
        if not texts:
            return []
        engine = _caller_voice(self.settings.voice)
        out = []
        for text in texts:
            pcm = b"".join(engine.synthesize(text))
            out.append(self._utterance(text, _convert(pcm, engine.sample_rate, rate)))
        return out

    def _utterance(self, text: str, pcm: bytes) -> Utterance:
        return Utterance(text=text, pcm=pcm, voice_start_ms=_voice_onset_ms(pcm, self.settings.sample_rate))

    async def run(self) -> None:
        s = self.settings
        await self.push(AudioFormat(s.sample_rate, stream="in"))
        clock = self.ctx.clock
        self._next_ns = clock.now_ns()
        await self._silence(lambda: False, max_ms=300)  # the line opens before anyone speaks
        for i, utt in enumerate(self.utterances):
            if i > 0:
                await self._wait_for_cue()
            await self._say(utt)
        await self._silence(self._answered, max_ms=s.answer_timeout_s * 1000)
        await self._silence(lambda: False, max_ms=s.pause_ms)
        if s.record:
            write_wav(s.record, bytes(self.heard), s.sample_rate)

    async def _wait_for_cue(self) -> None:
        """Wait for the bot to finish answering (or to speak long enough to interrupt it)."""
        limit = self.settings.answer_timeout_s * 1000
        if self.interrupt_after_ms is not None:
            await self._silence(lambda: self._bot_spoke_for(self.interrupt_after_ms or 0.0) or self._answered(),
                                max_ms=limit)
            if not self._answered():
                return  # the bot is speaking: talk over it now
        else:
            await self._silence(self._answered, max_ms=limit)
        await self._silence(lambda: False, max_ms=self.settings.pause_ms)

    async def _say(self, utt: Utterance) -> None:
        self._speaking = utt
        utt.sent_at_ns = self.ctx.clock.now_ns()
        fb = self._frame_bytes
        for offset in range(0, len(utt.pcm), fb):
            chunk = utt.pcm[offset:offset + fb]
            if len(chunk) < fb:
                chunk += bytes(fb - len(chunk))
            await self._tick(chunk)
        self._speaking = None

    async def _silence(self, done: Callable[[], bool], *, max_ms: float) -> None:
        silence = bytes(self._frame_bytes)
        waited = 0.0
        while not done() and waited < max_ms:
            await self._tick(silence)
            waited += self.settings.frame_ms

    async def _tick(self, pcm: bytes) -> None:
        """One line period: send a caller frame, play a bot frame."""
        clock = self.ctx.clock
        await clock.sleep_until(self._next_ns)
        self._next_ns += self.settings.frame_ms * 1_000_000
        now = clock.now_ns()
        utt = self._speaking
        if utt is not None and not utt.onset_ns and (now - utt.sent_at_ns) / 1e6 >= utt.voice_start_ms:
            utt.onset_ns = now  # the caller's voice starts on the line: barge-in timing starts here
        await self.push(InputAudio(pcm))
        frame, events = self.playout.next_frame()
        self._emit_playout(events, now)  # a start is announced before its first frame goes out
        if frame is not None:
            self.heard += frame
            self.heard_frames.append((now, self.playout.turn))

    # --- conditions --------------------------------------------------------------------

    def _answered(self) -> bool:
        """Every turn the caller opened has its answer ended, and nothing is left to play."""
        if not self.playout.idle:
            return False
        line = self.line
        return all(t in line.answers and line.answers[t].ended for t in line.turns_opened)

    def _bot_spoke_for(self, ms: float) -> bool:
        now = self.ctx.clock.now_ns()
        return any(a.started_ns and not a.stopped_ns and (now - a.started_ns) / 1e6 >= ms
                   for a in self.line.answers.values())

    # --- sink side ---------------------------------------------------------------------

    async def process(self, frame: OutputAudio | TTSText) -> None:
        if isinstance(frame, TTSText):
            events = self.playout.add_text(frame.turn, frame.text)
        else:
            events = self.playout.add_audio(frame.turn, frame.pcm)
        self._emit_playout(events, self.ctx.clock.now_ns())

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        if isinstance(frame, AudioFormat):
            if frame.stream == "out" and frame.sample_rate != self.settings.sample_rate:
                raise FrameError(f"bot audio at {frame.sample_rate} Hz on a {self.settings.sample_rate} Hz "
                                 "line: put a 'resample' node (stream: out) before the caller")
        elif isinstance(frame, ResponseStart):
            self._answer(frame.turn).interruptible = frame.interruptible
        elif isinstance(frame, ResponseEnd):
            self._answer(frame.turn).ended = True
            self._emit_playout(self.playout.end_response(frame.turn), self.ctx.clock.now_ns())
        return None

    def on_event(self, event: EventFrame) -> None:
        if type(event) is UserStartedSpeaking and event.turn:
            if event.turn not in self.line.turns_opened:
                self.line.turns_opened.append(event.turn)
                utt = self._speaking
                if utt is not None and not utt.turn:
                    utt.turn = event.turn

    def on_flush(self, turn: int) -> None:
        now = self.ctx.clock.now_ns()
        events = self.playout.flush(turn)
        for ev in events:
            if isinstance(ev, PlayoutStopped) and ev.interrupted:
                utt = self._speaking
                onset = utt.onset_ns if utt is not None and utt.onset_ns else now
                self.line.barge_in_ms[ev.turn] = (now - onset) / 1e6
        self._emit_playout(events, now)
        for t, answer in self.line.answers.items():
            if t <= turn:
                answer.ended = True  # a flushed answer will not continue

    def _answer(self, turn: int) -> _Answer:
        answer = self.line.answers.get(turn)
        if answer is None:
            answer = self.line.answers[turn] = _Answer()
        return answer

    def _emit_playout(self, events: list[PlayoutEvent], now_ns: int) -> None:
        for ev in events:
            answer = self._answer(ev.turn)
            if isinstance(ev, PlayoutStarted):
                answer.started_ns = now_ns
                answer.stopped_ns = 0
                self.emit(BotStartedSpeaking(turn=ev.turn, interruptible=answer.interruptible, ts=now_ns))
            else:
                answer.stopped_ns = now_ns
                answer.played_ms += ev.played_ms
                answer.interrupted = answer.interrupted or ev.interrupted
                self.emit(BotStoppedSpeaking(turn=ev.turn, played_ms=ev.played_ms, interrupted=ev.interrupted,
                                             heard_text=ev.heard_text, ts=now_ns))


def _caller_voice(name: str) -> TTSEngine:
    """The caller's voice: deterministic (Piper's noise off), so the same script gives
    the same audio, and so the same transcripts, on every run."""
    if name != "piper":
        from processors.tts.node import engine_for

        return engine_for("espeak")

    def load() -> TTSEngine:
        from processors.tts.piper_engine import PiperEngine

        return PiperEngine(noise_scale=0.0, noise_w_scale=0.0, threads=1)

    return shared(("caller-voice", name), load)


def _convert(pcm: bytes, rate: int, line_rate: int) -> bytes:
    if rate == line_rate:
        return pcm
    resampler = Resampler(rate, line_rate, OUTPUT_QUALITY)
    return resampler.process(pcm) + resampler.flush()


def _voice_onset_ms(pcm: bytes, rate: int) -> float:
    """Start (ms) of the first 10 ms window louder than SPEECH_DBFS; 0 if none."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    win = rate // 100
    n = len(samples) // win
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(samples[: n * win].reshape(n, win) ** 2, axis=1) + 1e-9)
    loud = np.nonzero(20 * np.log10(rms / 32768.0) > SPEECH_DBFS)[0]
    return float(loud[0] * 10) if len(loud) else 0.0
