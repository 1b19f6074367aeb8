"""The TTS processor: clauses in, the bot's audio out, stoppable mid-sentence.

Each ``TTSText`` clause is forwarded ahead of its audio, so the transport's playout can
tell which words each piece of audio carries (what the caller heard, on barge-in). The
engine runs in the bounded executor via ``iterate_blocking``; a flush of the clause's
turn closes the stream, so synthesis stops at the next chunk and nothing more is pushed.

Engines load once per process and are shared by every call (``engine_for``). If the
configured engine cannot load or fails on a clause, the processor falls back to eSpeak
NG, which is always there, so the caller still hears an answer.

With ``cache: true`` the node uses the worker's audio cache (``processors.tts.cache``):
a clause already in it is pushed at once, with no synthesis and no executor step; a
clause synthesised whole is kept for the next call; ``prefill`` texts are synthesised into
it at set-up, off the loop (concurrent calls wait for one synthesis of each).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Literal

from pipeline.errors import ServiceError
from pipeline.frames import AudioFormat, OutputAudio, TTSText
from pipeline.models import shared
from pipeline.offload import iterate_blocking
from pipeline.processor import Processor
from pipeline.settings import Doc, Range
from processors.text.aggregator import split_sentences

from .cache import AudioCache, cache_key, worker_cache
from .engine import TTSEngine

__all__ = ["TTSProcessor", "TTSSettings", "engine_for"]

logger = logging.getLogger(__name__)

EngineName = Literal["piper", "espeak"]


def engine_for(name: EngineName, voice: str = "") -> TTSEngine:
    """The process-wide engine ``name`` (loaded on first use; blocking, call off-loop)."""
    return shared(("tts", name, voice), lambda: _load(name, voice))


def _load(name: EngineName, voice: str) -> TTSEngine:
    if name == "piper":
        from .piper_engine import PiperEngine

        # One ORT thread per synthesis: parallelism comes from calls, not from one call.
        return PiperEngine(model_path=voice or None, threads=1)
    if name == "espeak":
        from .espeak_engine import EspeakEngine

        return EspeakEngine(voice=voice or "en-us")
    raise ServiceError(f"unknown TTS engine '{name}'")


@dataclass(frozen=True, kw_only=True)
class TTSSettings:
    """Which local voice speaks the bot's clauses."""

    engine: Annotated[EngineName, Doc("piper (natural) or espeak (instant)")] = "piper"
    voice: Annotated[str, Doc("a Piper .onnx path or an eSpeak voice name (blank: the bundled default)")] = ""
    fallback: Annotated[EngineName | None, Doc("the engine used when the first one fails (null: none)")] = "espeak"
    cache: Annotated[bool, Doc(
        "keep clauses spoken whole in the worker's audio cache and say repeats from it at once")] = False
    cache_mb: Annotated[float, Range(gt=0), Doc(
        "bound of the worker's audio cache in MB, shared by every call (the largest asked for wins)")] = 32.0
    prefill: Annotated[tuple[str, ...], Doc(
        "texts synthesised into the cache at set-up, cut into sentences as the 'sentences' node does with "
        "first_clause_min_words: 0 (needs cache: true)")] = ()


class TTSProcessor(Processor):
    """Synthesises each clause with a local engine (see module docstring)."""

    consumes = (TTSText,)
    produces = (TTSText, OutputAudio)
    io_bound = True
    Settings = TTSSettings
    settings: TTSSettings
    latency = (5.0, 250.0)

    def __init__(self, settings: TTSSettings | None = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        self.engine: TTSEngine | None = None
        self._rate = 0
        self._cache: AudioCache | None = None
        self.synthesised_ms = 0.0
        #: Clauses said from the cache, and their audio.
        self.cached_clauses = 0
        self.cached_ms = 0.0

    async def setup(self) -> None:
        try:
            self.engine = await self.run_blocking(engine_for, self.settings.engine, self.settings.voice)
        except Exception as exc:
            if self.settings.fallback is None or self.settings.fallback == self.settings.engine:
                raise
            logger.error("%s: %s engine failed to load (%s); using %s", self.name, self.settings.engine, exc,
                         self.settings.fallback)
            self.engine = await self.run_blocking(engine_for, self.settings.fallback, "")
        if self.settings.cache:
            self._cache = worker_cache(int(self.settings.cache_mb * 1_000_000))
            await self._prefill(self.engine, self._voice(self.engine))

    async def _prefill(self, engine: TTSEngine, voice: str) -> None:
        cache = self._cache
        assert cache is not None
        for text in self.settings.prefill:
            for unit in split_sentences(" ".join(text.split())):
                await cache.fill(cache_key(engine, voice, unit), partial(self.run_blocking, _render, engine, unit))

    def _voice(self, engine: TTSEngine) -> str:
        return self.settings.voice if engine.name == self.settings.engine else ""

    async def process(self, frame: TTSText) -> None:
        turn = frame.turn
        await self.push(frame)  # the words first, then their audio
        engine = self.engine
        assert engine is not None, "setup() loads the engine"
        try:
            await self._speak(engine, frame.text, turn)
        except Exception as exc:
            if self.is_stale(turn) or self.settings.fallback is None:
                raise
            logger.error("%s: %s failed on %r (%s); falling back to %s", self.name, engine.name, frame.text[:60],
                         exc, self.settings.fallback)
            fallback = await self.run_blocking(engine_for, self.settings.fallback, "")
            await self._speak(fallback, frame.text, turn)

    async def _speak(self, engine: TTSEngine, text: str, turn: int) -> None:
        rate = engine.sample_rate
        cache = self._cache
        key = cache_key(engine, self._voice(engine), text) if cache is not None else None
        if cache is not None and key is not None:
            cached = cache.get(key)
            if cached is not None:
                self.cached_clauses += 1
                self.cached_ms += len(cached) / (rate * 2 / 1000)
                await self._push_audio(cached, rate, turn)
                return
        spoken: list[bytes] = []
        chunks = iterate_blocking(self.ctx.call_id, lambda: engine.synthesize(text))
        async for pcm in self.interruptible(chunks, turn):
            if not pcm:
                continue
            self.synthesised_ms += len(pcm) / (rate * 2 / 1000)
            if key is not None:
                spoken.append(pcm)
            await self._push_audio(pcm, rate, turn)
        if cache is not None and key is not None and spoken and not self.is_stale(turn):
            cache.put(key, b"".join(spoken))  # spoken whole: a flush would have cut it short

    async def _push_audio(self, pcm: bytes, rate: int, turn: int) -> None:
        if rate != self._rate:
            self._rate = rate
            await self.push(AudioFormat(rate, stream="out"))
        await self.push(OutputAudio(pcm, turn=turn))


def _render(engine: TTSEngine, text: str) -> bytes:
    """All of ``text``'s audio in one blocking step (a prefill sentence)."""
    return b"".join(engine.synthesize(text))
