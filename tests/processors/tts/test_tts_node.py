"""TTSProcessor: clause text then its audio; stops mid-sentence on a flush; falls back."""

from __future__ import annotations

import asyncio

from pipeline import CallContext, Graph, run_call
from pipeline.frames import AudioFormat, FlushStart, OutputAudio, TTSText
from pipeline.offload import blocking_executor
from pipeline.testing import Collector, Feeder, run_processor
from processors.tts.node import TTSProcessor, TTSSettings

SENTENCE = "I am sorry to hear about your accident, I can start a claim for you right away."


def audio_ms(frames: list[object], rate: int) -> float:
    return sum(len(f.pcm) for f in frames if isinstance(f, OutputAudio)) / (rate * 2 / 1000)


async def test_piper_speaks_a_sentence_of_plausible_length_with_text_first() -> None:
    node = TTSProcessor(TTSSettings(engine="piper"))
    out, result = await run_processor(node, [TTSText(SENTENCE, turn=1)])
    assert result.errors == ()
    fmt = [f for f in out.controls if isinstance(f, AudioFormat)]
    assert fmt == [AudioFormat(22050, stream="out")]
    assert isinstance(out.frames[0], TTSText) and out.frames[0].text == SENTENCE
    ms = audio_ms(out.frames, 22050)
    assert 3000 <= ms <= 8000  # 16 words at 2-5 words a second
    assert all(f.turn == 1 for f in out.frames)


async def test_espeak_and_empty_or_markup_text() -> None:
    node = TTSProcessor(TTSSettings(engine="espeak"))
    out, result = await run_processor(node, [TTSText("", turn=1), TTSText("<b>**Hello**</b> there.", turn=2)])
    assert result.errors == ()
    assert audio_ms([f for f in out.frames if f.turn == 1], node.engine.sample_rate) == 0  # type: ignore[union-attr]
    assert 400 <= audio_ms([f for f in out.frames if f.turn == 2], node.engine.sample_rate) <= 2500  # type: ignore[union-attr]


async def test_flush_stops_synthesis_mid_answer() -> None:
    long_text = " ".join([SENTENCE] * 6)
    node = TTSProcessor(TTSSettings(engine="piper"), name="tts")
    flushed = asyncio.Event()

    class FlushOnFirstAudio(Collector):
        async def process(self, frame):  # type: ignore[no-untyped-def]
            await super().process(frame)
            if isinstance(frame, OutputAudio) and not flushed.is_set():
                flushed.set()
                self.emit(FlushStart(turn=1))

    sink = FlushOnFirstAudio()
    graph = Graph()
    graph.chain(Feeder([TTSText(long_text, turn=1), TTSText("And this is the next answer.", turn=2)]), node, sink)
    result = await run_call(graph, CallContext(), timeout=30)
    assert result.reason == "eos"
    turn1 = [f for f in sink.frames if isinstance(f, OutputAudio) and f.turn == 1]
    assert len(turn1) == 1  # one sentence chunk got out; the other five never did
    assert node.synthesised_ms < audio_ms(turn1, 22050) * 2.5
    assert audio_ms([f for f in sink.frames if f.turn == 2], 22050) > 800  # the node went on working


async def test_unknown_voice_falls_back_to_espeak() -> None:
    node = TTSProcessor(TTSSettings(engine="piper", voice="/nonexistent/voice.onnx", fallback="espeak"))
    out, _ = await run_processor(node, [TTSText("Hello there.", turn=1)])
    assert node.engine is not None and node.engine.name == "espeak"
    assert audio_ms(out.frames, node.engine.sample_rate) > 300


async def test_synthesis_runs_one_sentence_per_step_queued_under_the_call() -> None:
    node = TTSProcessor(TTSSettings(engine="espeak"))
    text = "Your claim is open. An agent will call you. Goodbye."
    out, result = await run_processor(node, [TTSText(text, turn=1)], ctx=CallContext("tts-steps"))
    assert result.errors == ()
    assert len([f for f in out.frames if isinstance(f, OutputAudio)]) == 3
    # One step loads the engine, one per sentence, one finds the end of the text: no
    # step holds a thread for a whole answer.
    assert blocking_executor().wait_stats("tts-steps").steps == 5
