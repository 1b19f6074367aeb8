"""The VAD processor: voice activity and end of turn for the caller's audio.

A thin wrapper over two pure state machines (``vad.Vad`` and ``endpointing.Endpointing``)
on the audio's own clock: the time of a frame is the amount of call audio before it, so
decisions are exact and reproducible, and identical to wall time for audio arriving in
real time. This node owns the call's audio clock: it advances ``ctx.audio_ms`` by each
frame it receives, and every other node reads the time there. It passes the audio
through and adds:

* out-of-band ``UserStartedSpeaking``/``UserStoppedSpeaking`` (for barge-in, transports
  and reports). ``UserStoppedSpeaking.ts`` is set to the moment on the call's clock the
  speech stopped, not when the stop window confirmed it, so latency reports start from
  the true end of the caller's speech;
* in-band ``TurnStart`` before the audio of a new user turn and ``TurnEnd`` after its
  last audio, so the STT finalises exactly the turn's audio.

Turn numbers come from the call's one turn counter (``ctx.next_turn()``), which the
endpointing machine calls when a turn opens.

Engines (settings): ``engine: webrtc`` (default, microseconds a frame) or ``silero``
(Silero VAD from the installed pipecat-ai; better on noise, costlier: see
docs/design/speech.md for the figures). ``turn_model: smart_turn`` adds the semantic
end-of-turn model: at each pause of an open turn the node asks it, off the event loop,
whether the turn so far is complete, and the endpointing waits ``complete_ms`` or
``incomplete_ms`` accordingly (:class:`~processors.audio.endpointing.ModelSilence`).
The node waits for the answer before it takes the next frame, so the decision applies
at the audio time it was asked, exactly and reproducibly; the frames behind it queue
for the inference time (tens of ms), only during pauses. A model that is missing or
fails to load leaves silence-only endpointing with a logged warning, never a dead call.

``end_of_turn: text`` judges the caller's WORDS instead (:mod:`processors.audio.text_turn`):
the node listens to the STT's ``UserWords`` events of the open turn and hands each to the
endpointing with its ``heard_ms``; a pause whose fresh words read complete ends
``complete_ms`` after the speech stop, incomplete waits ``incomplete_ms``, unsure (or no
words, or words older than the speech stop) keeps ``silence_ms``. Nothing waits: words
that arrive later during the pause resize the window then (never into the past). With
``turn_model: smart_turn`` too, a sure text verdict wins and an unsure one defers to the
model (:class:`~processors.audio.text_turn.TextSilence`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
import soxr

from pipeline.errors import FrameError
from pipeline.frames import (
    AudioFormat,
    ControlFrame,
    EndOfStream,
    EventFrame,
    Frame,
    InputAudio,
    TurnEnd,
    TurnStart,
    UserStartedSpeaking,
    UserStoppedSpeaking,
    UserWords,
)
from pipeline.processor import Processor
from pipeline.settings import Doc, Range

from .endpointing import (
    Endpointing,
    EndpointingEvent,
    EndpointingParams,
    FixedSilence,
    ModelSilence,
    SilenceStrategy,
    TurnEnded,
    TurnStarted,
    TurnState,
)
from .silero import SILERO_RATES, load_silero, silero_classifier
from .text_turn import TextSilence
from .turn_model import MODEL_RATE, WINDOW_S, TurnModel, load_smart_turn
from .vad import VAD_RATES, Classifier, SpeechStarted, SpeechStopped, Vad, VadEvent, VadParams

logger = logging.getLogger(__name__)

__all__ = ["VADProcessor", "VADSettings"]


@dataclass(frozen=True, kw_only=True)
class VADSettings:
    """VAD (webrtcvad) and endpointing tuning; defaults suit telephony (see vad.py and
    endpointing.py for why each default)."""

    aggressiveness: Annotated[int, Range(ge=0, le=3), Doc("webrtcvad mode; higher rejects more non-speech")] = 2
    start_ms: Annotated[float, Range(gt=0), Doc("speech this long starts the caller speaking (and a barge-in)")] = 200.0
    stop_ms: Annotated[float, Range(gt=0), Doc("silence this long ends a stretch of speech")] = 300.0
    min_volume: Annotated[float, Range(le=0), Doc("dBFS floor under which a frame is silence")] = -50.0
    silence_ms: Annotated[float, Range(gt=0), Doc("silence after speech that ends the caller's turn")] = 600.0
    max_turn_ms: Annotated[float, Range(gt=0), Doc("longest caller turn; it is ended after this")] = 30_000.0
    engine: Annotated[Literal["webrtc", "silero"], Doc("speech classifier: webrtcvad or Silero (8/16 kHz)")] = "webrtc"
    turn_model: Annotated[Literal["off", "smart_turn"], Doc("semantic end-of-turn model asked at each pause")] = "off"
    end_of_turn: Annotated[Literal["silence", "text"],
                           Doc("text: judge the words (STT interims) to end a pause early or late")] = "silence"
    complete_ms: Annotated[float, Range(gt=0), Doc("silence that ends a turn judged complete")] = 250.0
    incomplete_ms: Annotated[float, Range(gt=0), Doc("silence that ends a turn judged incomplete")] = 1500.0


class VADProcessor(Processor):
    """Speech detection and turn endpointing (see module docstring)."""

    consumes = (InputAudio,)
    produces = (InputAudio,)
    Settings = VADSettings
    settings: VADSettings

    def __init__(self, settings: VADSettings | None = None, *, name: str | None = None,
                 turn_model: TurnModel | None = None) -> None:
        """``turn_model``: an end-of-turn model to use instead of loading Smart Turn (tests
        pass a pure function); giving one turns the model on whatever the settings say."""
        super().__init__(settings, name=name)
        s = self.settings
        self._use_model = turn_model is not None or s.turn_model == "smart_turn"
        try:
            self._vad_params = VadParams(aggressiveness=s.aggressiveness, start_ms=s.start_ms, stop_ms=s.stop_ms,
                                         min_volume=s.min_volume)
            model = ModelSilence(complete_ms=s.complete_ms, incomplete_ms=s.incomplete_ms) if self._use_model else None
            self._use_text = s.end_of_turn == "text"
            strategy: SilenceStrategy = model if model is not None else FixedSilence()
            if self._use_text:
                strategy = TextSilence(complete_ms=s.complete_ms, incomplete_ms=s.incomplete_ms, model=model)
            self.endpointing = Endpointing(EndpointingParams(silence_ms=s.silence_ms, max_turn_ms=s.max_turn_ms),
                                           strategy=strategy, next_turn=self._next_turn)
        except ValueError as exc:
            from pipeline.errors import ConfigError

            raise ConfigError(str(exc)) from exc
        self.turn_model: TurnModel | None = turn_model
        self.vad: Vad | None = None
        self._rate = 0
        self._bytes_per_ms = 0.0
        self._turn = 0  # the call's turn now open (0: none)
        self._turn_onset_ms = 0.0
        self._recent = bytearray()  # the last WINDOW_S of caller audio, for the turn model
        self._recent_max = 0
        self._pause_started = False  # a pause of the open turn began in this frame
        self._held: list[EndpointingEvent] = []  # decided in on_event, pushed by process

    def _next_turn(self) -> int:
        return self.ctx.next_turn()

    def latency_ms(self) -> tuple[float, float]:
        # Speech is confirmed one start window after its onset; the turn ends after the
        # stop window and the silence window.
        s = self.settings
        longest = max(s.silence_ms, s.incomplete_ms) if self._use_model or self._use_text else s.silence_ms
        return (s.start_ms, s.stop_ms + longest)

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        if type(frame) is AudioFormat and frame.stream == "in":
            if frame.sample_rate not in VAD_RATES:
                raise FrameError(f"VAD needs one of {sorted(VAD_RATES)} Hz, got {frame.sample_rate}: "
                                 "put a 'resample' node before it")
            self.vad = Vad(self._vad_params, frame.sample_rate, classifier=await self._classifier(frame.sample_rate))
            self._rate = frame.sample_rate
            self._bytes_per_ms = frame.bytes_per_ms
            self._recent_max = int(WINDOW_S * 1000 * frame.bytes_per_ms)
            if self._use_model and self.turn_model is None:
                self.turn_model = await self.run_blocking(load_smart_turn)
        elif type(frame) is EndOfStream and self.vad is not None:
            # The caller hung up mid-turn: close the turn so its words are not lost.
            now_ms = self.ctx.audio_ms
            closing = self._on_vad(self.vad.close(now_ms), now_ms)
            end_of_time = now_ms + self.settings.silence_ms + self.settings.max_turn_ms
            closing += [f for ep in self.endpointing.tick(end_of_time) for f in self._turn_frames(ep)]
            for control in closing:
                await self.push(control)
        return None

    async def process(self, frame: InputAudio) -> None:
        vad = self.vad
        if vad is None:
            raise FrameError("caller audio before its AudioFormat")
        pcm = frame.pcm
        if len(pcm) % 2:
            raise FrameError(f"audio frame of {len(pcm)} bytes is not whole PCM16 samples")
        ctx = self.ctx
        start_ms = ctx.audio_ms
        ctx.audio_ms = now_ms = start_ms + len(pcm) / self._bytes_per_ms
        if self.turn_model is not None:
            self._recent += pcm
            del self._recent[: max(0, len(self._recent) - self._recent_max)]
        self._pause_started = False
        held, self._held = self._held, []
        for control in [f for ep in held for f in self._turn_frames(ep)]:
            await self.push(control)
        for control in self._on_vad(vad.feed(pcm, now_ms), start_ms):
            await self.push(control)  # TurnStart goes before the audio it starts with
        await self.push(frame)
        events = self.endpointing.tick(now_ms)
        if self._pause_started and self.endpointing.state is TurnState.PAUSED:
            probability = await self._ask_model(now_ms)
            if probability is not None:
                events += self.endpointing.on_end_of_turn_probability(probability, now_ms)
        for ep in events:
            for control in self._turn_frames(ep):
                await self.push(control)  # TurnEnd goes after the audio that ended the turn

    def on_event(self, event: EventFrame) -> None:
        if type(event) is UserWords and self._use_text:
            assert isinstance(event, UserWords)
            if event.turn == self._turn and self._turn:
                now_ms = self.ctx.audio_ms
                # Events are synchronous: a turn the words end goes out with the next frame,
                # stamped with its exact audio time.
                self._held += self.endpointing.on_words(event.text, event.heard_ms, now_ms)

    async def _classifier(self, rate: int) -> Classifier | None:
        """The frame classifier for the configured engine (None: webrtcvad)."""
        if self.settings.engine != "silero":
            return None
        if rate not in SILERO_RATES:
            raise FrameError(f"Silero VAD needs 8000 or 16000 Hz, got {rate}: put a 'resample' node before it")
        model = await self.run_blocking(load_silero)
        if model is None:
            logger.warning("vad %s: Silero unavailable, using webrtcvad", self.name)
            return None
        return silero_classifier(model, rate)

    async def _ask_model(self, now_ms: float) -> float | None:
        """The end-of-turn model's verdict on the open turn's audio so far (off the loop)."""
        model = self.turn_model
        if model is None:
            return None
        turn_ms = now_ms - self._turn_onset_ms
        size = min(len(self._recent), int(turn_ms * self._bytes_per_ms) & ~1)
        pcm = bytes(self._recent[len(self._recent) - size :])
        try:
            return await self.run_blocking(_verdict, model, pcm, self._rate)
        except Exception as exc:  # a failing model leaves this pause to the silence window
            logger.warning("vad %s: end-of-turn model failed, silence window applies: %s", self.name, exc)
            return None

    def _on_vad(self, events: list[VadEvent], stream_ms: float) -> list[Frame]:
        """Feed VAD events to endpointing and emit the speaking events; return turn frames.

        ``stream_ms``: where in the audio stream the returned frames will sit.
        """
        out: list[Frame] = []
        for event in events:
            if isinstance(event, SpeechStarted):
                for ep in self.endpointing.on_speech_started(event.at_ms):
                    out += self._turn_frames(ep, stream_ms)
                self.emit(UserStartedSpeaking(at_ms=event.at_ms, turn=self._turn))
            elif isinstance(event, SpeechStopped):
                ended = self.endpointing.on_speech_stopped(event.at_ms)
                self._pause_started = True
                stopped_ns = self.ctx.clock.now_ns() - int((self.ctx.audio_ms - event.at_ms) * 1e6)
                self.emit(UserStoppedSpeaking(at_ms=event.at_ms, turn=self._turn, ts=stopped_ns))
                out += [f for ep in ended for f in self._turn_frames(ep)]
        return out

    def _turn_frames(self, event: EndpointingEvent, stream_ms: float | None = None) -> list[Frame]:
        if isinstance(event, TurnStarted):
            self._turn = event.turn_id  # the call's turn number (see _next_turn)
            self._turn_onset_ms = event.at_ms
            at = self.ctx.audio_ms if stream_ms is None else stream_ms
            return [TurnStart(at_ms=event.at_ms, stream_ms=at, turn=event.turn_id)]
        assert isinstance(event, TurnEnded)
        if event.turn_id == self._turn:
            self._turn = 0
        return [TurnEnd(at_ms=event.at_ms, reason=str(event.reason), turn=event.turn_id)]


def _verdict(model: TurnModel, pcm: bytes, rate: int) -> float:
    """Run ``model`` on PCM16 audio at ``rate`` (blocking; on the executor)."""
    audio: npt.NDArray[np.float32] = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
    if rate != MODEL_RATE:
        audio = soxr.resample(audio, rate, MODEL_RATE).astype(np.float32)
    return model(audio)
