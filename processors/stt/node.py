"""The STT processor: caller audio in, interim and final transcripts of each turn out.

Turn boundaries arrive in-band (``TurnStart``/``TurnEnd`` from the VAD node), in order
with the audio, so the recogniser sees exactly the audio of the turn. Audio outside a
turn is kept in a short pre-roll ring: the VAD declares speech only after its start
window, so the first syllables arrived before ``TurnStart`` and are fed from the ring.

Audio goes to the engine in batches of ``feed_ms`` (one executor hop per batch, not per
20 ms frame). ``TurnEnd`` runs ``finish()`` and pushes the ``FinalTranscript``. A turn
that is flushed, or a call that ends mid-turn, drops the utterance.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Annotated, Literal

from pipeline.errors import FrameError, ServiceError
from pipeline.frames import (
    AudioFormat,
    ControlFrame,
    FinalTranscript,
    InputAudio,
    InterimTranscript,
    TurnEnd,
    TurnStart,
)
from pipeline.offload import shared
from pipeline.processor import Processor
from pipeline.settings import Doc, Range

from .engine import Hypothesis, RecognizerStream, STTEngine

__all__ = ["STTProcessor", "STTSettings", "stt_engine_for"]

logger = logging.getLogger(__name__)

EngineName = Literal["pocketsphinx", "whisper"]


def stt_engine_for(name: EngineName) -> STTEngine:
    """The process-wide engine ``name`` (loaded on first use; blocking, call off-loop)."""
    return shared(("stt", name), lambda: _load(name))


def _load(name: EngineName) -> STTEngine:
    if name == "pocketsphinx":
        from .pocketsphinx_engine import PocketsphinxEngine

        return PocketsphinxEngine()
    if name == "whisper":
        from .whisper_engine import WhisperEngine

        return WhisperEngine(cpu_threads=1)  # parallelism comes from calls, not from one call
    raise ServiceError(f"unknown STT engine '{name}'")


@dataclass(frozen=True, kw_only=True)
class STTSettings:
    """Which local recogniser, and how audio is fed to it."""

    engine: Annotated[EngineName, Doc(
        "pocketsphinx (streaming, low latency) or whisper (tiny.en, accurate, after the turn ends)"
    )] = "pocketsphinx"
    preroll_ms: Annotated[int, Range(ge=0), Doc(
        "audio kept from before the VAD declared speech (cover the VAD start window)"
    )] = 400
    feed_ms: Annotated[int, Range(gt=0), Doc("audio batched per engine call")] = 100
    interim: Annotated[bool, Doc("push interim transcripts while the caller speaks")] = True


class STTProcessor(Processor):
    """Recognises each user turn with a local engine (see module docstring)."""

    consumes = (InputAudio,)
    produces = (InterimTranscript, FinalTranscript)
    io_bound = True
    Settings = STTSettings
    settings: STTSettings
    latency = (10.0, 500.0)

    def __init__(self, settings: STTSettings | None = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        self.engine: STTEngine | None = None
        self.stream: RecognizerStream | None = None
        self._rate = 0
        self._bytes_per_ms = 0.0
        self._preroll: collections.deque[bytes] = collections.deque()
        self._preroll_bytes = 0
        self._pending = bytearray()
        self._turn = 0
        self._turn_start_ms = 0.0
        self._audio_ms = 0.0  # call-audio time of the end of the last frame received
        self._last_interim = ""

    async def setup(self) -> None:
        self.engine = await self.run_blocking(stt_engine_for, self.settings.engine)
        self.stream = self.engine.open_stream()
        self._set_rate(self.engine.sample_rate)

    async def cleanup(self) -> None:
        close = getattr(self.stream, "close", None)
        if close is not None:
            close()

    def _set_rate(self, rate: int) -> None:
        self._rate = rate
        self._bytes_per_ms = rate * 2 / 1000

    async def on_control(self, frame: ControlFrame) -> None:
        if type(frame) is AudioFormat and frame.stream == "in":
            assert self.engine is not None
            if frame.sample_rate != self.engine.sample_rate or frame.channels != 1:
                raise FrameError(
                    f"{self.engine.name} needs {self.engine.sample_rate} Hz mono audio, got "
                    f"{frame.sample_rate} Hz x{frame.channels}: put a 'resample' node before it"
                )
        elif type(frame) is TurnStart:
            await self._begin(frame.turn)
        elif type(frame) is TurnEnd and frame.turn == self._turn:
            await self._finish()

    async def process(self, frame: InputAudio) -> None:
        pcm = frame.pcm
        if len(pcm) % 2:
            raise FrameError(f"audio frame of {len(pcm)} bytes is not whole PCM16 samples")
        self._audio_ms += len(pcm) / self._bytes_per_ms
        if not self._turn:
            self._remember(pcm)
            return
        self._pending += pcm
        if len(self._pending) >= self.settings.feed_ms * self._bytes_per_ms:
            await self._feed()

    def on_flush(self, turn: int) -> None:
        if self._turn and self._turn <= turn:
            self._drop_turn()

    async def _begin(self, turn: int) -> None:
        if self._turn:
            self._drop_turn()
        self._turn = turn
        self._last_interim = ""
        preroll = b"".join(self._preroll)
        self._turn_start_ms = self._audio_ms - len(preroll) / self._bytes_per_ms
        self._preroll.clear()
        self._preroll_bytes = 0
        self._pending = bytearray(preroll)
        assert self.stream is not None
        await self.run_blocking(self.stream.reset)

    async def _feed(self) -> None:
        chunk, self._pending = bytes(self._pending), bytearray()
        turn = self._turn
        assert self.stream is not None
        hyp = await self.run_blocking(self.stream.feed, chunk)
        if hyp is not None and self.settings.interim and turn == self._turn and not self.is_stale(turn):
            text = hyp.text.strip()
            if text and text != self._last_interim:
                self._last_interim = text
                await self.push(self._transcript(InterimTranscript, hyp, turn))

    async def _finish(self) -> None:
        turn = self._turn
        if self._pending:
            await self._feed()
        assert self.stream is not None
        hyp = await self.run_blocking(self.stream.finish)
        self._turn = 0
        if not self.is_stale(turn):
            await self.push(self._transcript(FinalTranscript, hyp, turn))

    def _transcript(
        self, kind: type[InterimTranscript] | type[FinalTranscript], hyp: Hypothesis, turn: int
    ) -> InterimTranscript | FinalTranscript:
        return kind(
            " ".join(hyp.text.split()),
            confidence=hyp.confidence,
            start_ms=int(self._turn_start_ms + hyp.start_ms),
            end_ms=int(self._turn_start_ms + hyp.end_ms),
            turn=turn,
        )

    def _drop_turn(self) -> None:
        self._turn = 0
        self._pending = bytearray()
        # The stream is reset at the next TurnStart, on the executor, not here on the loop.

    def _remember(self, pcm: bytes) -> None:
        self._preroll.append(pcm)
        self._preroll_bytes += len(pcm)
        limit = self.settings.preroll_ms * self._bytes_per_ms
        while self._preroll and self._preroll_bytes - len(self._preroll[0]) >= limit:
            self._preroll_bytes -= len(self._preroll.popleft())
