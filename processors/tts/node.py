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
it at set-up, off the loop (concurrent calls wait for one synthesis of each). So are the
fixed texts of the brain that feeds the node (``prefill_brain``, on by default and even
with ``cache: false``, which then keeps nothing else): its ``greeting``, ``apology`` and
``filler``, cut as the ``sentences`` node before it will cut them, so every call of a
worker, the first included, greets from the cache.

With ``engine: azure`` (``processors.tts.azure_engine``) the clause is synthesised by Azure
AI Speech and streamed on the loop as the service sends it (no executor thread waits on
the network); the voice follows the agent in charge (on ``AgentSwitch``: ``azure.voices``
of the agent, else the ``voice`` of its agent file),
and a failure says the clause with ``fallback`` (Piper in ``config/pipelines/azure.yaml``).

Silence at joins (``trim_joins``, see ``processors.tts.silence``): each unit's leading
silence is cut to 20 ms, and a unit that ends inside a sentence (a reply's short first
piece) keeps only 40 ms of its trailing silence, so the split is not heard as a pause.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Literal

from pipeline.errors import ServiceError
from pipeline.frames import AgentSwitch, AudioFormat, EventFrame, OutputAudio, TTSText
from pipeline.models import shared
from pipeline.offload import iterate_blocking
from pipeline.processor import Processor
from pipeline.settings import Doc, Range
from processors.text.aggregator import ends_sentence, split_sentences
from processors.text.sentences_node import SentencesProcessor

from .azure_engine import AzureTTSEngine, AzureTTSSettings
from .cache import AudioCache, cache_key, worker_cache
from .engine import TTSEngine
from .silence import JOIN_TRAIL_MS, LEAD_MS, trim_edges

__all__ = ["TTSProcessor", "TTSSettings", "engine_for"]

logger = logging.getLogger(__name__)

EngineName = Literal["piper", "espeak", "azure"]


def engine_for(name: EngineName, voice: str = "", azure: AzureTTSSettings | None = None) -> TTSEngine:
    """The process-wide engine ``name`` (loaded on first use; blocking, call off-loop)."""
    if name == "azure":
        from .azure_engine import load_azure

        settings = azure or AzureTTSSettings()
        return shared(("tts", name, voice, settings.key()), lambda: load_azure(voice, settings))
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
    """Which voice speaks the bot's clauses."""

    engine: Annotated[EngineName, Doc("piper (natural), espeak (instant) or azure (Azure AI Speech)")] = "piper"
    voice: Annotated[str, Doc("a Piper .onnx path, an eSpeak voice name or an Azure voice (blank: the default)")] = ""
    fallback: Annotated[EngineName | None, Doc("the engine used when the first one fails (null: none)")] = "espeak"
    cache: Annotated[bool, Doc(
        "keep clauses spoken whole in the worker's audio cache and say repeats from it at once")] = False
    cache_mb: Annotated[float, Range(gt=0), Doc(
        "bound of the worker's audio cache in MB, shared by every call (the largest asked for wins)")] = 32.0
    prefill: Annotated[tuple[str, ...], Doc(
        "texts synthesised into the cache at set-up, cut into sentences as the 'sentences' node does with "
        "first_clause_min_words: 0 (needs cache: true)")] = ()
    prefill_brain: Annotated[bool, Doc(
        "synthesise the greeting, apology and filler of the brain upstream into the worker's cache at set-up, "
        "cut as its sentences node cuts them, and say them from it (with cache: false too)")] = True
    trim_joins: Annotated[bool, Doc(
        "cut each unit's leading silence to 20 ms and, after a unit cut mid-sentence, its trailing silence "
        "to 40 ms")] = True
    azure: Annotated[AzureTTSSettings, Doc(
        "the Azure engine's style, rate, pitch, line rate and voice per agent")] = field(
        default_factory=AzureTTSSettings)


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
        self._agent_voice = ""  # an Azure voice chosen for the agent in charge (AgentSwitch)

    async def setup(self) -> None:
        try:
            self.engine = await self.run_blocking(engine_for, self.settings.engine, self.settings.voice,
                                                  self.settings.azure)
        except Exception as exc:
            if self.settings.fallback is None or self.settings.fallback == self.settings.engine:
                raise
            logger.error("%s: %s engine failed to load (%s); using %s", self.name, self.settings.engine, exc,
                         self.settings.fallback)
            self.engine = await self.run_blocking(engine_for, self.settings.fallback, "")
        units = self._brain_units() if self.settings.prefill_brain else []
        if self.settings.cache:
            units = [unit for text in self.settings.prefill for unit in split_sentences(" ".join(text.split()))] + units
        if self.settings.cache or units:
            self._cache = worker_cache(int(self.settings.cache_mb * 1_000_000))
            await self._prefill(self._cache, self.engine, units)

    async def _prefill(self, cache: AudioCache, engine: TTSEngine, units: list[str]) -> None:
        voice = self._voice(engine)
        for unit in dict.fromkeys(units):  # once each, in order
            await cache.fill(cache_key(engine, voice, unit), partial(self.run_blocking, _render, engine, unit))

    def _brain_units(self) -> list[str]:
        """The units the upstream brain's fixed texts will reach this node as.

        A fixed text is said as a reply of its own (a greeting; an apology or a filler
        with nothing said before it), cut by the upstream ``sentences`` node's rule, or
        after other words of the reply, where it starts at a sentence: both cuts are kept.
        """
        nodes = _upstream_nodes(self)
        texts = [text for node in nodes for field in _FIXED_TEXTS
                 if isinstance(text := getattr(node.settings, field, None), str) and text.strip()]
        cutters = [node.aggregator for node in nodes if isinstance(node, SentencesProcessor)]
        if not texts or not cutters:
            return []  # no sentences node: the texts do not reach this node as known units
        rule = cutters[0]
        units: list[str] = []
        for text in texts:
            alone = rule.copy()
            units += alone.push(" ".join(text.split()))
            rest = alone.flush()
            units += [rest] if rest else []
            units += split_sentences(text)
        return units

    def _voice(self, engine: TTSEngine) -> str:
        if engine.name != self.settings.engine:
            return ""
        return self._agent_voice or self.settings.voice

    def on_event(self, event: EventFrame) -> None:
        if isinstance(event, AgentSwitch) and self.settings.engine == "azure":
            # Only Azure takes a voice per clause; a local engine keeps the pipeline's voice.
            self._agent_voice = self.settings.azure.voices.get(event.agent_to, "") or event.voice

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
        # Audio is cached untrimmed; trimming depends on where the unit falls in a reply.
        trim = self.settings.trim_joins
        lead: float | None = LEAD_MS if trim else None
        trail: float | None = JOIN_TRAIL_MS if trim and not ends_sentence(text) else None
        key = cache_key(engine, self._voice(engine), text) if cache is not None else None
        keep = self.settings.cache and key is not None  # with cache: false only the brain's texts are in it
        if cache is not None and key is not None:
            cached = cache.get(key)
            if cached is not None:
                self.cached_clauses += 1
                self.cached_ms += len(cached) / (rate * 2 / 1000)
                await self._push_audio(trim_edges(cached, rate, lead_ms=lead, trail_ms=trail), rate, turn)
                return
        spoken: list[bytes] = []
        # With an end to trim, each chunk waits for the next (a unit cut mid-sentence is
        # one sentence's part: one chunk, so nothing waits); without, chunks go at once.
        held = b""
        chunks: AsyncIterator[bytes]
        if isinstance(engine, AzureTTSEngine):  # network-bound: streamed on the loop, no executor thread
            chunks = engine.stream(text, engine.voice_named(self._agent_voice) if self._agent_voice else None)
        else:
            chunks = iterate_blocking(self.ctx.call_id, lambda: engine.synthesize(text))
        async for pcm in self.interruptible(chunks, turn):
            if not pcm:
                continue
            self.synthesised_ms += len(pcm) / (rate * 2 / 1000)
            if keep:
                spoken.append(pcm)
            if lead is not None:
                pcm, lead = trim_edges(pcm, rate, lead_ms=lead, trail_ms=None), None
            if trail is None:
                await self._push_audio(pcm, rate, turn)
                continue
            if held:
                await self._push_audio(held, rate, turn)
            held = pcm
        if held and not self.is_stale(turn):
            await self._push_audio(trim_edges(held, rate, lead_ms=None, trail_ms=trail), rate, turn)
        if keep and cache is not None and key is not None and spoken and not self.is_stale(turn):
            cache.put(key, b"".join(spoken))  # spoken whole: a flush would have cut it short

    async def _push_audio(self, pcm: bytes, rate: int, turn: int) -> None:
        if rate != self._rate:
            self._rate = rate
            await self.push(AudioFormat(rate, stream="out"))
        await self.push(OutputAudio(pcm, turn=turn))


#: Settings of a brain whose texts are said word for word (``processors.llm``).
_FIXED_TEXTS = ("greeting", "apology", "filler")


def _upstream_nodes(node: Processor) -> list[Processor]:
    """Every node that feeds ``node`` in its wired graph, nearest first."""
    found: list[Processor] = []
    frontier = [node]
    while frontier:
        current = frontier.pop(0)
        for feeder in current.feeders():
            if feeder is not node and feeder not in found:
                found.append(feeder)
                frontier.append(feeder)
    return found


def _render(engine: TTSEngine, text: str) -> bytes:
    """All of ``text``'s audio in one blocking step (a prefill sentence)."""
    return b"".join(engine.synthesize(text))
