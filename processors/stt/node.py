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

``engine: azure`` hosts a push-based service instead (``azure_engine.AzureRecognizer``,
connection settings from ``AZURE_SPEECH_*``): every frame of the line is pushed to it as it
arrives, its results come back on the loop and ``azure_turns.AzureTurns`` maps its phrases
to our turns; transcripts go out through the node's own queue. The audio of the open turn
(pre-roll included) is kept until its final, so when the service fails mid-call the node
posts the failure (a non-fatal ``ErrorEvent`` with a ``ServiceError``), opens the
``fallback`` engine in its worker (woken by an empty audio frame), feeds it that audio and
carries on with it for the rest of the call: the turn is not lost.

The phrase list follows the agent in charge: on ``AgentSwitch`` the recogniser's list
becomes the node's ``phrases`` plus the agent's (``AgentSwitch.phrases``). Applying it
restarts the recogniser (``AzureRecognizer.set_phrases``), so it waits for a quiet moment:
at once when no caller turn is open, else when the open turn's final transcript is out. A
switch to the list in use does nothing. The embedded engines take no phrase list: they
ignore ``phrases`` and ``AgentSwitch``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Annotated, Literal

from pipeline.errors import ConfigError, FatalError, FrameError, ServiceError
from pipeline.frames import (
    BACKCHANNEL,
    AgentSwitch,
    AudioFormat,
    ControlFrame,
    ErrorEvent,
    EventFrame,
    FinalTranscript,
    Frame,
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

from .azure_engine import AzureRecognizer, AzureResult
from .azure_turns import AzureTurns
from .engine import Hypothesis, RecognizerStream, STTEngine

__all__ = ["STTProcessor", "STTSettings", "stt_engine_for"]

logger = logging.getLogger(__name__)

EngineName = Literal["pocketsphinx", "whisper"]
AZURE_RATE = 16000  # the line after resample_in; the service also takes 8 kHz, unneeded here


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
    """Which recogniser, and how audio is fed to it."""

    engine: Annotated[Literal["pocketsphinx", "whisper", "azure"], Doc(
        "whisper (tiny.en decoded incrementally: hears real 8 kHz phone speech, WER ~0.06), "
        "pocketsphinx (streaming and cheap, but WER ~0.9 on real narrowband speech) or "
        "azure (Azure AI Speech via AZURE_SPEECH_*; falls back to 'fallback' if it fails)"
    )] = "pocketsphinx"
    fallback: Annotated[Literal["pocketsphinx", "whisper", "none"], Doc(
        "engine used when the chosen one fails to load or (azure) fails mid-call (logged); "
        "none: the call fails to start (or, azure failing mid-call, ends)"
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
    language: Annotated[str, Doc("azure: recognition language (BCP-47); empty: AZURE_SPEECH_LANGUAGE or en-US")] = ""
    segmentation_silence_ms: Annotated[int, Range(ge=100, le=5000), Doc(
        "azure: silence that ends a phrase; keep it under the VAD's turn silence so the "
        "final is there when the turn ends"
    )] = 500
    phrases: Annotated[tuple[str, ...], Doc(
        "azure: phrase list biasing recognition (names, product words); the agent in charge adds its own"
    )] = ()
    final_timeout_ms: Annotated[int, Range(ge=0, le=10000), Doc(
        "azure: call audio after a turn ends without a final before it is completed from the last hypothesis"
    )] = 1500


class STTProcessor(Processor):
    """Recognises each user turn with a local engine or Azure AI Speech (see module docstring)."""

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
        self._fed_bytes = 0  # bytes of the open turn fed to the stream (from _turn_start_ms)
        self._decoding_heard_ms = 0.0  # call-audio time up to which the batch decoding hears
        self._last_interim = ""
        self.azure: AzureRecognizer | None = None
        self._turns: AzureTurns | None = None
        self._turn_audio = bytearray()  # azure: the open turn's audio, replayed on fallback
        self._azure_failed = False
        self._azure_error = ""
        self._phrases_due: tuple[str, ...] | None = None  # azure: a new agent's list, applied when quiet

    async def setup(self) -> None:
        name = self.settings.engine
        if name == "azure":
            try:
                await self._start_azure()
                return
            except (ConfigError, ServiceError) as exc:
                if self.settings.fallback == "none":
                    raise ServiceError(f"STT engine 'azure' failed to start: {exc}") from exc
                logger.warning("STT engine 'azure' failed to start (%s): using '%s' for this call",
                               exc, self.settings.fallback)
                name = self.settings.fallback
        await self._open_embedded(name)

    async def _open_embedded(self, name: EngineName) -> None:
        engine, self.stream = await self.run_blocking(_open, name, self.settings.fallback, self.settings.processes)
        self.engine = engine
        self._bytes_per_ms = engine.sample_rate * 2 / 1000

    async def _start_azure(self) -> None:
        from processors.azure_speech.config import AzureSpeechSettings

        s = self.settings
        speech = AzureSpeechSettings.from_env(overrides={"language": s.language} if s.language else None)
        token = None
        if speech.auth == "entra":
            from processors.azure_speech.config import EntraToken

            assert speech.resource_id is not None
            resource_id = speech.resource_id
            token = shared(("azure-speech-token", resource_id), lambda: EntraToken(resource_id)).get
        self.azure = AzureRecognizer(speech, self._azure_result, sample_rate=AZURE_RATE, token=token,
                                     segmentation_silence_ms=s.segmentation_silence_ms,
                                     phrases=self._phrases_due or s.phrases)
        self._phrases_due = None
        self._turns = AzureTurns(self._send_transcript, final_timeout_ms=s.final_timeout_ms, preroll_ms=s.preroll_ms,
                                 interim=s.interim)
        self._bytes_per_ms = AZURE_RATE * 2 / 1000
        try:
            await self.azure.start()
        except BaseException:
            self.azure = self._turns = None
            raise

    def _send_transcript(self, frame: Frame) -> None:
        self.enqueue(frame)

    def _azure_result(self, result: AzureResult) -> None:
        """On the loop: a result of the recogniser (see AzureRecognizer)."""
        if result.kind == "failed":
            # The fallback opens in the worker, in order with the audio: an empty frame wakes
            # it even when no more audio comes (the caller went quiet).
            self._azure_failed = True
            self._azure_error = result.error
            self.enqueue(InputAudio(b""))
        elif self._turns is not None:
            self._turns.result(result)
            self._apply_phrases()

    def on_event(self, event: EventFrame) -> None:
        if isinstance(event, AgentSwitch) and self.settings.engine == "azure":
            self._phrases_due = tuple(dict.fromkeys((*self.settings.phrases, *event.phrases)))
            self._apply_phrases()

    def _apply_phrases(self) -> None:
        """Give the recogniser the agent's phrase list if one is due and no caller turn is open."""
        if self._phrases_due is None or self.azure is None or self._turns is None or self._turns.turn:
            return
        phrases, self._phrases_due = self._phrases_due, None
        self.azure.set_phrases(phrases)

    async def _fall_back(self) -> None:
        """The service failed: carry on with the embedded engine, replaying the open turn."""
        azure, turns = self.azure, self._turns
        assert azure is not None and turns is not None
        self.azure = self._turns = None
        self._azure_failed = False
        failure = ServiceError(f"azure speech failed mid-call: {self._azure_error}")
        # On the bus as a non-fatal error, as any node's failure: the call's report shows it.
        self.emit(ErrorEvent(node=self.name, message=str(failure), fatal=False, error=failure, turn=turns.turn))
        if self.settings.fallback == "none":
            await azure.close()
            raise FatalError("STT engine 'azure' failed mid-call and no fallback is set: the call cannot hear")
        logger.warning("STT: azure failed mid-call; '%s' takes over with %d ms of the open turn",
                       self.settings.fallback, len(self._turn_audio) / self._bytes_per_ms)
        await azure.close()
        await self._open_embedded(self.settings.fallback)
        if turns.turn:
            self._turn = turns.turn
            self._pending = bytearray(self._turn_audio)
            self._fed_bytes = 0
            if turns.waiting:
                await self._finish()
        self._turn_audio = bytearray()

    async def cleanup(self) -> None:
        if self.azure is not None:
            await self.azure.close()
        await self._settle()
        close = getattr(self.stream, "close", None)
        if close is not None:
            # Ending an open utterance is decoder work: off the loop, and never refused.
            await asyncio.wrap_future(blocking_executor().submit_cleanup(self.ctx.call_id, close))

    async def on_control(self, frame: ControlFrame) -> None:
        if self._turns is not None:
            await self._azure_control(frame)
            return
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

    async def _azure_control(self, frame: ControlFrame) -> None:
        turns = self._turns
        assert turns is not None
        if type(frame) is AudioFormat and frame.stream == "in":
            if frame.sample_rate != AZURE_RATE or frame.channels != 1:
                raise FrameError(f"azure is fed {AZURE_RATE} Hz mono audio, got {frame.sample_rate} Hz "
                                 f"x{frame.channels}: put a 'resample' node before it")
        elif type(frame) is TurnStart:
            preroll = b"".join(self._preroll)
            self._preroll.clear()
            self._preroll_bytes = 0
            self._turn_audio = bytearray(preroll)
            self._turn_start_ms = frame.stream_ms - len(preroll) / self._bytes_per_ms
            turns.begin(frame.turn, frame.stream_ms)
        elif type(frame) is TurnEnd:
            assert self.azure is not None
            turns.end(frame.turn, self.azure.pushed_ms)
            self._apply_phrases()

    async def _azure_audio(self, pcm: bytes) -> None:
        azure, turns = self.azure, self._turns
        assert azure is not None and turns is not None
        azure.push(pcm)
        if turns.turn:
            self._turn_audio += pcm
        else:
            self._turn_audio = bytearray()
            self._remember(pcm)
        turns.tick(azure.pushed_ms)
        self._apply_phrases()
        if self._azure_failed:
            await self._fall_back()

    async def process(self, frame: InputAudio) -> None:
        pcm = frame.pcm
        if len(pcm) % 2:
            raise FrameError(f"audio frame of {len(pcm)} bytes is not whole PCM16 samples")
        if self.azure is not None:
            await self._azure_audio(pcm)
            return
        if not self._turn:
            self._remember(pcm)
            if self._dropped:
                await self._reset()
            return
        self._pending += pcm
        await self._pump()

    def on_flush(self, turn: int) -> None:
        if self._turns is not None:
            self._turns.drop(turn)
            self._apply_phrases()
            return
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
        self._fed_bytes = 0

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
        self._fed_bytes += len(chunk)
        self._decoding_heard_ms = self._turn_start_ms + self._fed_bytes / self._bytes_per_ms
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
            if text:
                # barge-in's proof of a real interruption; the VAD node's text end of turn (an
                # unchanged text says it now covers the audio up to heard_ms)
                self.emit(UserWords(text=text, turn=turn, heard_ms=self._decoding_heard_ms))
            if text and text != self._last_interim:
                self._last_interim = text
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
