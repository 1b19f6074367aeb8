"""Silence at unit joins, and the brain's fixed texts prefilled into the TTS cache."""

from __future__ import annotations

import uuid
from collections.abc import Generator

import numpy as np

from pipeline import CallContext, Graph, run_call
from pipeline.frames import OutputAudio, TTSText
from pipeline.models import shared
from pipeline.testing import Collector, Feeder, run_processor
from processors.llm.rules import RulesBrain, RulesBrainSettings
from processors.text.sentences_node import SentencesProcessor
from processors.tts.espeak_engine import EspeakEngine
from processors.tts.node import TTSProcessor, TTSSettings
from processors.tts.piper_engine import PiperEngine
from processors.tts.silence import JOIN_TRAIL_MS, LEAD_MS, edge_silence_ms, trim_edges

HEAD, TAIL = "I am sorry to hear", "about your accident."


def deterministic_piper() -> tuple[str, PiperEngine]:
    """Piper with its noise off (same audio every time), under a voice name of its own."""
    name = f"quiet-piper-{uuid.uuid4().hex[:8]}"
    engine = PiperEngine(noise_scale=0.0, noise_w_scale=0.0, threads=1)
    assert shared(("tts", "piper", name), lambda: engine) is engine
    return name, engine


def test_piper_pads_each_unit_with_silence_that_trim_edges_cuts_to_the_bounds() -> None:
    _, piper = deterministic_piper()
    rate = piper.sample_rate
    pcm = b"".join(piper.synthesize(HEAD))
    lead, trail = edge_silence_ms(pcm, rate)
    assert 20 < lead < 120 and 100 < trail < 300  # what the voice adds around a clause (see silence.py)
    cut = trim_edges(pcm, rate, lead_ms=LEAD_MS, trail_ms=JOIN_TRAIL_MS)
    cut_lead, cut_trail = edge_silence_ms(cut, rate)
    assert cut_lead <= LEAD_MS + 5 and cut_trail <= JOIN_TRAIL_MS + 5  # to a 5 ms window
    # Only silence went: what is left is one slice of the original, shorter by the cut silence.
    assert cut in pcm
    assert len(pcm) - len(cut) >= int((lead - LEAD_MS + trail - JOIN_TRAIL_MS - 10) * rate / 1000) * 2


def test_trim_leaves_silence_and_an_untouched_edge_alone() -> None:
    rate = 16000
    silent = bytes(3200)
    assert trim_edges(silent, rate, lead_ms=0, trail_ms=0) == silent
    assert edge_silence_ms(silent, rate) == (100.0, 100.0)
    tone = (np.sin(np.arange(1600) / 5) * 8000).astype(np.int16).tobytes()
    padded = silent + tone + silent
    assert edge_silence_ms(padded, rate) == (100.0, 100.0)
    assert trim_edges(padded, rate, lead_ms=10, trail_ms=None) == padded[3200 - 320:]
    assert trim_edges(padded, rate, lead_ms=None, trail_ms=0) == silent + tone


async def test_a_join_inside_a_sentence_is_short_and_a_sentence_end_keeps_its_pause() -> None:
    voice, piper = deterministic_piper()
    rate = piper.sample_rate
    node = TTSProcessor(TTSSettings(engine="piper", voice=voice))
    out, result = await run_processor(node, [TTSText(HEAD, turn=1), TTSText(TAIL, turn=1)])
    assert result.errors == ()
    head, tail = [f.pcm for f in out.frames if isinstance(f, OutputAudio)]
    head_lead, head_trail = edge_silence_ms(head, rate)
    tail_lead, tail_trail = edge_silence_ms(tail, rate)
    assert head_lead <= LEAD_MS + 5 and tail_lead <= LEAD_MS + 5
    assert head_trail + tail_lead <= JOIN_TRAIL_MS + LEAD_MS + 10  # the join: ~60 ms, not ~250
    assert tail_trail > 100  # "accident." ends the sentence: Piper's pause stays
    # Off, the join carries Piper's own silence.
    plain = TTSProcessor(TTSSettings(engine="piper", voice=voice, trim_joins=False))
    out, _ = await run_processor(plain, [TTSText(HEAD, turn=1), TTSText(TAIL, turn=1)])
    head, tail = [f.pcm for f in out.frames if isinstance(f, OutputAudio)]
    assert edge_silence_ms(head, rate)[1] + edge_silence_ms(tail, rate)[0] > 150


class CountingEngine:
    def __init__(self) -> None:
        self.inner = EspeakEngine(voice="en-us")
        self.name, self.sample_rate = self.inner.name, self.inner.sample_rate
        self.texts: list[str] = []

    def synthesize(self, text: str) -> Generator[bytes, None, None]:
        self.texts.append(text)
        yield from self.inner.synthesize(text)


GREETING = "Thank you for calling Contoso insurance and its partners today. How can I help you?"
APOLOGY = "Sorry, something went wrong on my side. Could you say that again?"


async def test_the_brains_greeting_and_apology_are_prefilled_and_the_greeting_starts_without_synthesis() -> None:
    voice = f"counting-{uuid.uuid4().hex[:8]}"
    engine = CountingEngine()
    assert shared(("tts", "espeak", voice), lambda: engine) is engine

    def call_graph() -> tuple[Graph, TTSProcessor, Collector]:
        graph = Graph()
        # cache: false: the brain's fixed texts are cached all the same, and nothing else is.
        tts = TTSProcessor(TTSSettings(engine="espeak", voice=voice), name="tts")
        sink = Collector()
        graph.chain(Feeder([]), RulesBrain(RulesBrainSettings(greeting=GREETING, apology=APOLOGY)),
                    SentencesProcessor(), tts, sink)
        return graph, tts, sink

    graph, tts, sink = call_graph()
    result = await run_call(graph, CallContext(), timeout=30)
    assert result.errors == ()
    # Set-up synthesised the greeting as the sentences node cuts a reply's start ("...
    # insurance | and its partners today."), the apology likewise, and both as sentences.
    prefilled = ["Thank you for calling Contoso insurance", "and its partners today.", "How can I help you?",
                 "Thank you for calling Contoso insurance and its partners today.",
                 "Sorry, something went wrong", "on my side.", "Could you say that again?",
                 "Sorry, something went wrong on my side."]
    assert engine.texts == prefilled
    spoken = [f.text for f in sink.frames if isinstance(f, TTSText)]
    assert spoken == prefilled[:3]
    assert tts.cached_clauses == 3 and tts.synthesised_ms == 0  # the greeting, from the cache
    assert sum(len(f.pcm) for f in sink.frames if isinstance(f, OutputAudio)) > 0

    graph, tts, sink = call_graph()  # the next call of the worker: nothing is synthesised again
    assert (await run_call(graph, CallContext(), timeout=30)).errors == ()
    assert engine.texts == prefilled and tts.cached_clauses == 3

    # Other words are not kept with cache: false; with prefill_brain: false nothing is prefilled.
    said = "Your claim number is four five six."
    plain = TTSProcessor(TTSSettings(engine="espeak", voice=voice, prefill_brain=False))
    for _ in range(2):
        await run_processor(TTSProcessor(TTSSettings(engine="espeak", voice=voice)), [TTSText(said, turn=1)])
    await run_processor(plain, [TTSText(GREETING, turn=1)])
    assert engine.texts == [*prefilled, said, said, GREETING]
    assert plain.cached_clauses == 0
