"""The STT processor: caller audio in, interim and final transcripts of each turn out.

Turn boundaries arrive in-band (``TurnStart``/``TurnEnd`` from the VAD node), in order
with the audio, so the recogniser sees exactly the audio of the turn. Audio outside a
turn is kept in a short pre-roll ring: the VAD declares speech only after its start
window, so the first syllables arrived before ``TurnStart`` and are fed from the ring.

Audio goes to the engine in batches of at least ``feed_ms`` (one executor step per
batch, not per 20 ms frame). One batch is decoded at a time, without holding up the
node: audio that arrives meanwhile collects for the next batch, so when the executor is
busy the batches grow and the recogniser keeps up with the caller instead of falling
further behind at every step. ``TurnEnd`` runs ``finish()`` and pushes the
``FinalTranscript``. A turn that is flushed, or a call that ends mid-turn, drops the
utterance.

Nothing here runs an engine on the loop, set-up included: the engine is loaded (once per
process) and the stream opened in one executor step. A pocketsphinx stream borrows a
decoder from the engine's pool only while an utterance is open, so a call that is not
speaking holds none; an utterance dropped by a flush is reset at the next frame, which
gives its decoder back.

Transcript times are call-audio times: ``TurnStart.stream_ms`` says where the turn starts
in the call's audio, and the pre-roll fed ahead of it starts that much earlier.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Annotated, Literal

from pipeline.errors import FrameError, ServiceError
from pipeline.frames import (
    BACKCHANNEL,
    AudioFormat,
    ControlFrame,
    FinalTranscript,
    InputAudio,
    InterimTranscript,
    TurnEnd,
    TurnStart,
    UserWords,
)
from pipeline.models import shared
from pipeline.offload import blocking_executor
from pipeline.processor import Processor
from pipeline.settings import Doc, Range

from .engine import Hypothesis, RecognizerStream, STTEngine

__all__ = ["STTProcessor", "STTSettings", "stt_engine_for"]

logger = logging.getLogger(__name__)

EngineName = Literal["pocketsphinx", "whisper"]


def stt_engine_for(name: EngineName) -> STTEngine:
    """The process-wide engine ``name`` (loaded on first use; blocking, call off-loop)."""
    return shared(("stt", name), lambda: _load(name))


def _engine(name: EngineName, processes: int) -> STTEngine:
    """The process-wide engine ``name``: in this process, or hosted by ``processes`` workers."""
    if not processes:
        return stt_engine_for(name)
    from .procpool import ProcessPoolEngine

    make = functools.partial(_load, name)
    return shared(("stt", name, processes), lambda: ProcessPoolEngine(make, processes=processes))


def _open(name: EngineName, fallback: EngineName | Literal["none"],
          processes: int = 0) -> tuple[STTEngine, RecognizerStream]:
    """The engine and a stream on it; a model that fails to load falls back, loudly."""
    try:
        engine = _engine(name, processes)
    except Exception as exc:  # a missing, corrupt or unloadable model: any library's error
        if fallback == "none" or fallback == name:
            raise ServiceError(f"STT engine '{name}' failed to load: {exc}") from exc
        logger.warning("STT engine '%s' failed to load (%s): using '%s' for this call", name, exc, fallback)
        engine = _engine(fallback, processes)
    return engine, engine.open_stream()


def _load(name: EngineName) -> STTEngine:
    if name == "pocketsphinx":
        from .pocketsphinx_engine import PocketsphinxEngine

        return PocketsphinxEngine()
    if name == "whisper":
        from .whisper_engine import WhisperEngine

        # One thread per decode: parallelism comes from calls, and on 2 cores a second
        # thread would take the core TTS needs (perf/stt_wer.py).
        return WhisperEngine(cpu_threads=1)
    raise ServiceError(f"unknown STT engine '{name}'")


@dataclass(frozen=True, kw_only=True)
class STTSettings:
    """Which local recogniser, and how audio is fed to it."""

    engine: Annotated[EngineName, Doc(
        "whisper (tiny.en decoded incrementally: hears real 8 kHz phone speech, WER ~0.06) or "
        "pocketsphinx (streaming and cheap, but WER ~0.9 on real narrowband speech)"
    )] = "pocketsphinx"
    fallback: Annotated[Literal["pocketsphinx", "whisper", "none"], Doc(
        "engine used when the chosen one fails to load (logged); none: the call fails to start"
    )] = "pocketsphinx"
    preroll_ms: Annotated[int, Range(ge=0), Doc(
        "audio kept from before the VAD declared speech (cover the VAD start window)"
    )] = 400
    feed_ms: Annotated[int, Range(gt=0), Doc(
        "smallest batch per engine call (audio that arrives while one decodes goes with the next)"
    )] = 100
    interim: Annotated[bool, Doc("push interim transcripts while the caller speaks")] = True
    processes: Annotated[int, Range(ge=0, le=32), Doc(
        "0: decode on this process's executor threads; N: in N worker processes (procpool.py), "
        "so a decode holding the GIL never stalls the event loop"
    )] = 0


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
        self._bytes_per_ms = 0.0
        self._preroll: collections.deque[bytes] = collections.deque()
        self._preroll_bytes = 0
        self._pending = bytearray()
        self._turn = 0
        self._turn_start_ms = 0.0  # call-audio time of the first byte fed for the turn
        self._dropped = False  # an utterance was dropped and the stream not reset yet
        self._decoding: Future[Hypothesis | None] | None = None  # the batch in the executor
        self._decoding_turn = 0
        self._last_interim = ""

    async def setup(self) -> None:
        engine, self.stream = await self.run_blocking(
            _open, self.settings.engine, self.settings.fallback, self.settings.processes)
        self.engine = engine
        self._bytes_per_ms = engine.sample_rate * 2 / 1000

    async def cleanup(self) -> None:
        await self._settle()
        close = getattr(self.stream, "close", None)
        if close is not None:
            # Ending an open utterance is decoder work: off the loop, and never refused.
            await asyncio.wrap_future(blocking_executor().submit_cleanup(self.ctx.call_id, close))

    async def on_control(self, frame: ControlFrame) -> None:
        if type(frame) is AudioFormat and frame.stream == "in":
            assert self.engine is not None
            if frame.sample_rate != self.engine.sample_rate or frame.channels != 1:
                raise FrameError(
                    f"{self.engine.name} needs {self.engine.sample_rate} Hz mono audio, got "
                    f"{frame.sample_rate} Hz x{frame.channels}: put a 'resample' node before it"
                )
        elif type(frame) is TurnStart:
            await self._begin(frame)
        elif type(frame) is TurnEnd and frame.turn == self._turn:
            assert isinstance(frame, TurnEnd)
            if frame.reason == BACKCHANNEL:
                await self._settle()
                self._drop_turn()  # barge-in: an "uh-huh" over the bot, not a turn to answer
            else:
                await self._finish()

    async def process(self, frame: InputAudio) -> None:
        pcm = frame.pcm
        if len(pcm) % 2:
            raise FrameError(f"audio frame of {len(pcm)} bytes is not whole PCM16 samples")
        if not self._turn:
            self._remember(pcm)
            if self._dropped:
                await self._reset()
            return
        self._pending += pcm
        await self._pump()

    def on_flush(self, turn: int) -> None:
        if self._turn and self._turn <= turn:
            self._drop_turn()

    async def _begin(self, start: TurnStart) -> None:
        if self._turn:
            self._drop_turn()
        if self._dropped:
            await self._reset()
        self._turn = start.turn
        self._last_interim = ""
        preroll = b"".join(self._preroll)
        self._turn_start_ms = start.stream_ms - len(preroll) / self._bytes_per_ms
        self._preroll.clear()
        self._preroll_bytes = 0
        self._pending = bytearray(preroll)

    async def _reset(self) -> None:
        self._dropped = False
        await self._settle()
        assert self.stream is not None
        await self.run_blocking(self.stream.reset)

    async def _pump(self) -> None:
        """Push the interim of a batch that finished decoding; start the next batch."""
        if self._decoding is not None:
            if not self._decoding.done():
                return  # the audio waits for the next batch
            await self._collect()
        if len(self._pending) >= self.settings.feed_ms * self._bytes_per_ms:
            self._start_batch()

    def _start_batch(self) -> None:
        chunk, self._pending = bytes(self._pending), bytearray()
        assert self.stream is not None
        self._decoding = blocking_executor().submit(self.ctx.call_id, self.stream.feed, chunk)
        self._decoding_turn = self._turn

    async def _collect(self) -> None:
        """Wait for the batch being decoded, if any, and push its interim."""
        decoding, self._decoding = self._decoding, None
        if decoding is None:
            return
        hyp = decoding.result() if decoding.done() else await asyncio.wrap_future(decoding)
        turn = self._decoding_turn
        if hyp is not None and self.settings.interim and turn == self._turn and not self.is_stale(turn):
            text = hyp.text.strip()
            if text and text != self._last_interim:
                self._last_interim = text
                self.emit(UserWords(text=text, turn=turn))  # barge-in's proof of a real interruption
                await self.push(self._transcript(InterimTranscript, hyp, turn))

    async def _settle(self) -> None:
        """Wait for the batch being decoded, if any, and drop it (its turn was dropped)."""
        decoding, self._decoding = self._decoding, None
        if decoding is not None:
            await asyncio.gather(asyncio.wrap_future(decoding), return_exceptions=True)

    async def _finish(self) -> None:
        turn = self._turn
        await self._collect()
        if self._pending:
            self._start_batch()
            await self._collect()
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
        # Reset at the next frame, in the executor: here (a flush) we are on the loop.
        self._dropped = True

    def _remember(self, pcm: bytes) -> None:
        self._preroll.append(pcm)
        self._preroll_bytes += len(pcm)
        limit = self.settings.preroll_ms * self._bytes_per_ms
        while self._preroll and self._preroll_bytes - len(self._preroll[0]) >= limit:
            self._preroll_bytes -= len(self._preroll.popleft())
