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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pipeline.errors import FrameError
from pipeline.frames import (
    AudioFormat,
    ControlFrame,
    EndOfStream,
    Frame,
    InputAudio,
    TurnEnd,
    TurnStart,
    UserStartedSpeaking,
    UserStoppedSpeaking,
)
from pipeline.processor import Processor
from pipeline.settings import Doc, Range

from .endpointing import Endpointing, EndpointingEvent, EndpointingParams, TurnEnded, TurnStarted
from .vad import VAD_RATES, SpeechStarted, SpeechStopped, Vad, VadEvent, VadParams

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


class VADProcessor(Processor):
    """Speech detection and turn endpointing (see module docstring)."""

    consumes = (InputAudio,)
    produces = (InputAudio,)
    Settings = VADSettings
    settings: VADSettings

    def __init__(self, settings: VADSettings | None = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        s = self.settings
        try:
            self._vad_params = VadParams(aggressiveness=s.aggressiveness, start_ms=s.start_ms, stop_ms=s.stop_ms,
                                         min_volume=s.min_volume)
            self.endpointing = Endpointing(EndpointingParams(silence_ms=s.silence_ms, max_turn_ms=s.max_turn_ms),
                                           next_turn=self._next_turn)
        except ValueError as exc:
            from pipeline.errors import ConfigError

            raise ConfigError(str(exc)) from exc
        self.vad: Vad | None = None
        self._bytes_per_ms = 0.0
        self._turn = 0  # the call's turn now open (0: none)

    def _next_turn(self) -> int:
        return self.ctx.next_turn()

    def latency_ms(self) -> tuple[float, float]:
        # Speech is confirmed one start window after its onset; the turn ends after the
        # stop window and the silence window.
        s = self.settings
        return (s.start_ms, s.stop_ms + s.silence_ms)

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        if type(frame) is AudioFormat and frame.stream == "in":
            if frame.sample_rate not in VAD_RATES:
                raise FrameError(f"VAD needs one of {sorted(VAD_RATES)} Hz, got {frame.sample_rate}: "
                                 "put a 'resample' node before it")
            self.vad = Vad(self._vad_params, frame.sample_rate)
            self._bytes_per_ms = frame.bytes_per_ms
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
        for control in self._on_vad(vad.feed(pcm, now_ms), start_ms):
            await self.push(control)  # TurnStart goes before the audio it starts with
        await self.push(frame)
        for ep in self.endpointing.tick(now_ms):
            for control in self._turn_frames(ep):
                await self.push(control)  # TurnEnd goes after the audio that ended the turn

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
                stopped_ns = self.ctx.clock.now_ns() - int((self.ctx.audio_ms - event.at_ms) * 1e6)
                self.emit(UserStoppedSpeaking(at_ms=event.at_ms, turn=self._turn, ts=stopped_ns))
                out += [f for ep in ended for f in self._turn_frames(ep)]
        return out

    def _turn_frames(self, event: EndpointingEvent, stream_ms: float | None = None) -> list[Frame]:
        if isinstance(event, TurnStarted):
            self._turn = event.turn_id  # the call's turn number (see _next_turn)
            at = self.ctx.audio_ms if stream_ms is None else stream_ms
            return [TurnStart(at_ms=event.at_ms, stream_ms=at, turn=event.turn_id)]
        assert isinstance(event, TurnEnded)
        if event.turn_id == self._turn:
            self._turn = 0
        return [TurnEnd(at_ms=event.at_ms, reason=str(event.reason), turn=event.turn_id)]
