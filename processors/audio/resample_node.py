"""The resample processor: converts one audio stream (caller ``in`` or bot ``out``) to a rate.

The input rate comes from the stream's sticky ``AudioFormat``, which is rewritten to the
new rate on its way through. Quality defaults per direction (see ``resample.py``): LQ on
the caller's side (every held-back ms delays speech detection), HQ on the bot's side (a
person listens; TTS runs ahead of real time, which hides the delay). At the end of a
response the filter's tail is released; a barge-in drops it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Literal

from pipeline.errors import FrameError
from pipeline.frames import AudioFormat, ControlFrame, DataFrame, InputAudio, OutputAudio, ResponseEnd
from pipeline.processor import Processor
from pipeline.settings import Doc, OneOf

from .resample import INPUT_QUALITY, OUTPUT_QUALITY, SUPPORTED_RATES, Quality, Resampler

__all__ = ["ResampleProcessor", "ResampleSettings"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ResampleSettings:
    """Which stream to convert, to what rate, at what quality."""

    rate: Annotated[int, OneOf(*SUPPORTED_RATES), Doc("target sample rate, Hz")] = 16000
    stream: Annotated[Literal["in", "out"], Doc("which audio: the caller's (in) or the bot's (out)")] = "in"
    quality: Annotated[Literal["QQ", "LQ", "MQ", "HQ", "VHQ"] | None, Doc(
        "soxr preset; null: LQ for the caller's audio (less delay), HQ for the bot's (a person listens)"
    )] = None


class ResampleProcessor(Processor):
    """Streaming sample-rate conversion of one direction (see module docstring)."""

    consumes: tuple[type[DataFrame], ...] = (InputAudio, OutputAudio)  # narrowed per instance
    produces: tuple[type[DataFrame], ...] = (InputAudio, OutputAudio)
    Settings = ResampleSettings
    settings: ResampleSettings

    def __init__(self, settings: ResampleSettings | None = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        self._kind: type[InputAudio] | type[OutputAudio] = InputAudio if self.settings.stream == "in" else OutputAudio
        # Only this direction's audio is consumed; the other passes through untouched.
        self.consumes = self.produces = (self._kind,)
        self._quality: Quality = self.settings.quality or (INPUT_QUALITY if self.settings.stream == "in"
                                                           else OUTPUT_QUALITY)
        self.resampler: Resampler | None = None
        self._turn = 0

    def latency_ms(self) -> tuple[float, float]:
        if self.resampler is None:
            return (0.0, 40.0)
        return (self.resampler.delay_ms, self.resampler.max_delay_ms)

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        if type(frame) is AudioFormat and frame.stream == self.settings.stream:
            if frame.channels != 1:
                raise FrameError(f"only mono audio is supported, got {frame.channels} channels")
            current = self.resampler
            if current is None or current.in_rate != frame.sample_rate:
                self.resampler = Resampler(frame.sample_rate, self.settings.rate, self._quality)
            return AudioFormat(self.settings.rate, stream=frame.stream, turn=frame.turn)
        if type(frame) is ResponseEnd and self._kind is OutputAudio and self.resampler is not None:
            tail = self.resampler.flush()
            if tail and not self.is_stale(frame.turn):
                await self.push(OutputAudio(tail, turn=frame.turn))
        return None

    async def process(self, frame: InputAudio | OutputAudio) -> None:
        resampler = self.resampler
        if resampler is None:
            raise FrameError(f"{type(frame).__name__} before any AudioFormat for stream '{self.settings.stream}'")
        if len(frame.pcm) % 2:
            raise FrameError(f"audio frame of {len(frame.pcm)} bytes is not whole PCM16 samples")
        self._turn = frame.turn
        pcm = resampler.process(frame.pcm)
        if pcm is frame.pcm:
            await self.push(frame)
        elif pcm:
            await self.push(self._kind(pcm, turn=frame.turn))

    def on_flush_stop(self, turn: int) -> None:
        if self._kind is OutputAudio and self.resampler is not None and 0 < self._turn <= turn:
            # What the filter holds belongs to the interrupted answer: without a reset it
            # would play as a click at the start of the next one.
            self.resampler.reset()
            self._turn = 0
