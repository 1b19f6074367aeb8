"""The TTS audio cache: fixed texts synthesised once per worker, replayed at once, bounded by bytes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Generator, Sequence

import pytest

from pipeline import CallContext, Graph, run_call
from pipeline.frames import FlushStart, OutputAudio, TTSText
from pipeline.models import shared
from pipeline.offload import blocking_executor
from pipeline.testing import Collector, Feeder, run_processor
from processors.tts.cache import AudioCache, cache_key, worker_cache
from processors.tts.espeak_engine import EspeakEngine
from processors.tts.node import TTSProcessor, TTSSettings
from processors.tts.silence import LEAD_MS, trim_edges

PROMPT = "Welcome to Contoso insurance. Press one for claims, two for opening hours."
SENTENCES = ("Welcome to Contoso insurance.", "Press one for claims, two for opening hours.")


class CountingEngine:
    """A real eSpeak voice that counts what it is asked to synthesise."""

    def __init__(self, voice: str = "en-us") -> None:
        self.inner = EspeakEngine(voice=voice)
        self.name = self.inner.name
        self.sample_rate = self.inner.sample_rate
        self.texts: list[str] = []

    def synthesize(self, text: str) -> Generator[bytes, None, None]:
        self.texts.append(text)
        yield from self.inner.synthesize(text)


def counting_voice(espeak_voice: str = "en-us") -> tuple[str, CountingEngine]:
    """A voice name no other test uses, whose engine (from the worker's model cache) counts."""
    name = f"counting-{uuid.uuid4().hex[:8]}"
    engine = CountingEngine(espeak_voice)
    assert shared(("tts", "espeak", name), lambda: engine) is engine
    return name, engine


def pcm_of(frames: Sequence[object], turn: int) -> bytes:
    return b"".join(f.pcm for f in frames if isinstance(f, OutputAudio) and f.turn == turn)


# --- the cache itself ---------------------------------------------------------------------


def test_least_recently_used_entries_are_evicted_to_stay_under_the_byte_bound() -> None:
    cache = AudioCache(max_bytes=1000)
    keys = [("espeak", "v", 22050, f"text {i}") for i in range(4)]
    for key in keys[:3]:
        assert cache.put(key, bytes(300))
    assert cache.get(keys[0]) == bytes(300)  # now the most recently used
    assert cache.put(keys[3], bytes(400))  # 1300 bytes: the least recently used (1) goes
    assert keys[1] not in cache and keys[0] in cache and keys[2] in cache and keys[3] in cache
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.evictions) == (3, 1000, 1)
    assert cache.put(keys[1], bytes(1000))  # exactly the bound: everything else goes
    assert cache.stats().entries == 1 and cache.stats().bytes == 1000
    assert not cache.put(keys[2], bytes(1001)) and not cache.put(keys[2], b"")  # never kept
    assert cache.stats().bytes == 1000 and (cache.stats().hits, cache.stats().misses) == (1, 0)


def test_keys_separate_engines_voices_and_rates_and_ignore_spacing() -> None:
    us, gb = EspeakEngine(voice="en-us"), EspeakEngine(voice="en-gb-x-rp")
    assert cache_key(us, "en-us", "Hello  there. ") == ("espeak", "en-us", us.sample_rate, "Hello there.")
    assert cache_key(us, "en-us", "Hello there.") != cache_key(gb, "en-gb-x-rp", "Hello there.")


def test_the_worker_cache_is_one_and_grows_to_the_largest_bound() -> None:
    cache = worker_cache(1_000_000)
    bound = cache.max_bytes
    assert worker_cache(1) is cache and cache.max_bytes == bound
    assert worker_cache(bound + 10).max_bytes == bound + 10


def test_a_bound_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="positive bound"):
        AudioCache(0)


# --- in the TTS node ----------------------------------------------------------------------


async def test_a_prefilled_prompt_starts_without_synthesis_and_with_the_same_bytes() -> None:
    voice, engine = counting_voice()
    settings = TTSSettings(engine="espeak", voice=voice, cache=True, prefill=(PROMPT,))
    first = TTSProcessor(settings)
    _, result1 = await run_processor(first, [], ctx=CallContext("cache-first"))
    assert result1.errors == ()
    assert engine.texts == list(SENTENCES)  # set-up synthesised each sentence once

    call_id = f"cache-second-{uuid.uuid4().hex[:6]}"
    second = TTSProcessor(settings)
    frames = [TTSText(SENTENCES[0], turn=1), TTSText(SENTENCES[1], turn=1)]
    out2, result2 = await run_processor(second, frames, ctx=CallContext(call_id))
    assert result2.errors == ()
    assert engine.texts == list(SENTENCES)  # nothing synthesised again
    assert second.cached_clauses == 2 and second.synthesised_ms == 0
    # One executor step in the whole call: the engine look-up at set-up. No synthesis step.
    assert blocking_executor().wait_stats(call_id).steps == 1
    # The very audio the set-up synthesised (eSpeak varies a little from one synthesis to the next),
    # its leading silence trimmed as every unit's is.
    stored = [worker_cache(1).get(cache_key(engine, voice, s)) for s in SENTENCES]
    assert all(stored)
    rate = engine.sample_rate
    assert pcm_of(out2.frames, 1) == b"".join(trim_edges(s, rate, lead_ms=LEAD_MS, trail_ms=None)
                                              for s in stored if s)
    assert [f.text for f in out2.frames if isinstance(f, TTSText)] == list(SENTENCES)  # words before audio


async def test_calls_setting_up_together_share_one_synthesis_of_each_prompt() -> None:
    voice, engine = counting_voice()
    settings = TTSSettings(engine="espeak", voice=voice, cache=True, prefill=(PROMPT,))
    results = await asyncio.gather(*(run_processor(TTSProcessor(settings), []) for _ in range(5)))
    assert all(r.errors == () for _, r in results)
    assert sorted(engine.texts) == sorted(SENTENCES)


async def test_a_clause_spoken_whole_is_kept_and_a_different_voice_does_not_reuse_it() -> None:
    us_voice, us = counting_voice("en-us")
    gb_voice, gb = counting_voice("de")
    text = "Your claim number is four five six."
    out1, _ = await run_processor(TTSProcessor(TTSSettings(engine="espeak", voice=us_voice, cache=True)),
                                  [TTSText(text, turn=1)])
    out2, _ = await run_processor(TTSProcessor(TTSSettings(engine="espeak", voice=us_voice, cache=True)),
                                  [TTSText(text, turn=1)])
    out3, _ = await run_processor(TTSProcessor(TTSSettings(engine="espeak", voice=gb_voice, cache=True)),
                                  [TTSText(text, turn=1)])
    assert us.texts == [text] and gb.texts == [text]  # one synthesis per voice
    assert pcm_of(out2.frames, 1) == pcm_of(out1.frames, 1)
    assert pcm_of(out3.frames, 1) != pcm_of(out1.frames, 1) and len(pcm_of(out3.frames, 1)) > 0


async def test_without_cache_every_call_synthesises() -> None:
    voice, engine = counting_voice()
    for _ in range(2):
        await run_processor(TTSProcessor(TTSSettings(engine="espeak", voice=voice)), [TTSText("Hello there.", turn=1)])
    assert engine.texts == ["Hello there.", "Hello there."]


async def test_a_clause_cut_by_a_flush_is_not_kept() -> None:
    voice, engine = counting_voice()
    long_text = " ".join(["This sentence is long enough to take a while to say."] * 3)
    node = TTSProcessor(TTSSettings(engine="espeak", voice=voice, cache=True), name="tts")

    class FlushOnFirstAudio(Collector):
        async def process(self, frame):  # type: ignore[no-untyped-def]
            await super().process(frame)
            if isinstance(frame, OutputAudio) and frame.turn == 1:
                self.emit(FlushStart(turn=1))

    graph = Graph()
    graph.chain(Feeder([TTSText(long_text, turn=1)]), node, FlushOnFirstAudio())
    result = await run_call(graph, CallContext(), timeout=30)
    assert result.reason == "eos"
    assert cache_key(engine, voice, long_text) not in worker_cache(1)
    await run_processor(TTSProcessor(TTSSettings(engine="espeak", voice=voice, cache=True)),
                        [TTSText(long_text, turn=1)])
    assert engine.texts == [long_text, long_text]  # the cut clause was synthesised again, whole
