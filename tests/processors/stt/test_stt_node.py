"""STTProcessor: a turn's audio (with pre-roll) in, interim and final transcripts out."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import replace
from typing import Any

import pocketsphinx
import pytest

from pipeline.clock import VirtualClock
from pipeline.context import CallContext
from pipeline.errors import ServiceError
from pipeline.frames import (
    AudioFormat,
    FinalTranscript,
    FlushStart,
    Frame,
    InputAudio,
    InterimTranscript,
    TurnEnd,
    TurnStart,
)
from pipeline.graph import Graph
from pipeline.offload import FairExecutor
from pipeline.runner import run_call
from pipeline.testing import Collector, Feeder, drive, run_processor
from processors.stt import node as stt_node
from processors.stt.engine import Hypothesis
from processors.stt.node import STTProcessor, STTSettings
from processors.stt.pocketsphinx_engine import PocketsphinxEngine, PocketsphinxStream
from processors.stt.wer import wer
from tests.processors.stt.speech import frames, silence, utterance

SENTENCE = "I want to file a claim for my car accident"


def turn_frames(text: str, turn: int, *, lead_ms: int = 600) -> list[Frame]:
    """Audio with the turn opened 200 ms after the speech onset, as the VAD does."""
    speech = utterance(text, pad_ms=0)
    chunks = list(frames(silence(lead_ms) + speech + silence(300)))
    opened = (lead_ms + 200) // 20
    out: list[Frame] = [InputAudio(c) for c in chunks[:opened]]
    out.append(TurnStart(turn=turn, at_ms=lead_ms, stream_ms=opened * 20))
    out += [InputAudio(c) for c in chunks[opened:]]
    out.append(TurnEnd(turn=turn))
    return out


async def test_final_transcript_of_a_turn_uses_the_preroll() -> None:
    out, result = await run_processor(STTProcessor(), [AudioFormat(16000), *turn_frames(SENTENCE, 1)])
    assert result.reason == "eos" and result.errors == ()
    finals = [f for f in out.frames if isinstance(f, FinalTranscript)]
    assert len(finals) == 1 and finals[0].turn == 1
    assert wer(SENTENCE, finals[0].text) <= 0.3, finals[0].text
    assert 300 <= finals[0].start_ms <= 900 and finals[0].end_ms > finals[0].start_ms
    interims = [f for f in out.frames if isinstance(f, InterimTranscript)]
    assert interims and all(f.turn == 1 for f in interims)
    assert out.frames.index(interims[0]) < out.frames.index(finals[0])
    # Audio stops at the STT: only transcripts go on.
    assert not [f for f in out.frames if isinstance(f, InputAudio)]


async def test_without_preroll_the_first_words_are_lost() -> None:
    out, _ = await run_processor(STTProcessor(STTSettings(preroll_ms=0)), [AudioFormat(16000), *turn_frames(SENTENCE, 1)])
    final = next(f for f in out.frames if isinstance(f, FinalTranscript))
    with_preroll, _ = await run_processor(STTProcessor(), [AudioFormat(16000), *turn_frames(SENTENCE, 1)])
    full = next(f for f in with_preroll.frames if isinstance(f, FinalTranscript))
    assert wer(SENTENCE, final.text) > wer(SENTENCE, full.text)


async def test_flushed_turn_produces_no_transcript_and_the_next_turn_works() -> None:
    frames_ = [AudioFormat(16000), *turn_frames(SENTENCE, 1)]
    frames_.insert(len(frames_) - 5, FlushStart(turn=1))  # barge-in before the turn ended
    frames_ += turn_frames("yes please transfer me to an agent", 2)
    out, _ = await run_processor(STTProcessor(), frames_)
    finals = [f for f in out.frames if isinstance(f, FinalTranscript)]
    assert [f.turn for f in finals] == [2]
    assert wer("yes please transfer me to an agent", finals[0].text) <= 0.35


async def test_wrong_rate_and_odd_sizes_are_reported_not_fatal() -> None:
    frames_ = [AudioFormat(8000), InputAudio(b"\x00" * 3), *turn_frames("my policy number is four five six", 1)]
    out, result = await run_processor(STTProcessor(name="stt"), frames_)
    assert result.reason == "eos"
    assert any("needs 16000 Hz mono audio, got 8000 Hz" in e.message for e in result.errors)
    assert any("3 bytes is not whole PCM16 samples" in e.message for e in result.errors)
    assert len([f for f in out.frames if isinstance(f, FinalTranscript)]) == 1


async def test_empty_turn_gives_an_empty_final() -> None:
    out, _ = await run_processor(STTProcessor(STTSettings(preroll_ms=0)),
                                 [AudioFormat(16000), TurnStart(turn=1), TurnEnd(turn=1)])
    finals = [f for f in out.frames if isinstance(f, FinalTranscript)]
    assert [(f.turn, f.text) for f in finals] == [(1, "")]


async def test_whisper_transcribes_the_turn_incrementally() -> None:
    node = STTProcessor(STTSettings(engine="whisper"))
    out, result = await run_processor(node, [AudioFormat(16000), *turn_frames(SENTENCE, 1)])
    assert result.errors == ()
    finals = [f for f in out.frames if isinstance(f, FinalTranscript)]
    assert len(finals) == 1 and wer(SENTENCE, finals[0].text) <= 0.1, finals[0].text
    interims = [f for f in out.frames if isinstance(f, InterimTranscript)]
    # How many depends on how the batches grow while decodes run (exact counts on
    # paced audio: tests/processors/stt/test_whisper.py); at least the first decode's.
    assert interims and all(f.turn == 1 for f in interims)
    assert out.frames.index(interims[-1]) < out.frames.index(finals[0])


async def test_an_engine_that_fails_to_load_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = stt_node.stt_engine_for

    def broken_whisper(name: Any) -> Any:
        if name == "whisper":
            raise FileNotFoundError("no CTranslate2 Whisper model in /nowhere")
        return real(name)

    monkeypatch.setattr(stt_node, "stt_engine_for", broken_whisper)
    with caplog.at_level(logging.WARNING, logger="processors.stt.node"):
        out, result = await run_processor(STTProcessor(STTSettings(engine="whisper")),
                                          [AudioFormat(16000), *turn_frames(SENTENCE, 1)])
    assert result.reason == "eos" and result.errors == ()
    assert [r.getMessage() for r in caplog.records] == [
        "STT engine 'whisper' failed to load (no CTranslate2 Whisper model in /nowhere): using 'pocketsphinx' "
        "for this call"
    ]
    final = next(f for f in out.frames if isinstance(f, FinalTranscript))
    assert wer(SENTENCE, final.text) <= 0.3, final.text


async def test_without_a_fallback_a_failed_load_is_a_named_service_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: Any) -> Any:
        raise OSError("model.bin: truncated")

    monkeypatch.setattr(stt_node, "stt_engine_for", broken)
    with pytest.raises(ServiceError, match=r"STT engine 'whisper' failed to load: model\.bin: truncated"):
        stt_node._open("whisper", "none")


async def test_transcript_times_are_placed_by_the_turn_start_not_by_counting_audio() -> None:
    # The same turn, as if 5 s of call audio had gone by before it (the VAD says so in
    # TurnStart.stream_ms; the STT saw none of that audio).
    frames_ = [AudioFormat(16000), *turn_frames(SENTENCE, 1)]
    later = [replace(f, stream_ms=f.stream_ms + 5000) if isinstance(f, TurnStart) else f for f in frames_]
    out, _ = await run_processor(STTProcessor(), frames_)
    out_later, _ = await run_processor(STTProcessor(), later)
    final = next(f for f in out.frames if isinstance(f, FinalTranscript))
    final_later = next(f for f in out_later.frames if isinstance(f, FinalTranscript))
    assert final_later.text == final.text
    assert (final_later.start_ms, final_later.end_ms) == (final.start_ms + 5000, final.end_ms + 5000)


@pytest.fixture
def fresh_engine(monkeypatch: pytest.MonkeyPatch) -> tuple[PocketsphinxEngine, list[str]]:
    """A pocketsphinx engine with no decoder yet, used by every STT node; and a log of
    where decoders were built and streams opened ("loop" or the executor thread's name)."""
    log: list[str] = []
    loop_thread = threading.current_thread()
    real = pocketsphinx.Decoder

    def where(what: str) -> None:
        thread = threading.current_thread()
        log.append(f"{what} on {'loop' if thread is loop_thread else thread.name}")

    def decoder(**config: Any) -> Any:
        where("decoder built")
        return real(**config)

    monkeypatch.setattr(pocketsphinx, "Decoder", decoder)
    engine = PocketsphinxEngine(prewarm=0)
    open_stream = engine.open_stream

    def opening() -> PocketsphinxStream:
        where("stream opened")
        return open_stream()

    monkeypatch.setattr(engine, "open_stream", opening)
    monkeypatch.setattr(stt_node, "stt_engine_for", lambda name: engine)
    return engine, log


async def test_setup_builds_no_decoder_and_nothing_runs_on_the_loop(
    fresh_engine: tuple[PocketsphinxEngine, list[str]],
) -> None:
    engine, log = fresh_engine
    quiet = [AudioFormat(16000), *(InputAudio(c) for c in frames(silence(200)))]
    # Ten calls start at once; nobody speaks.
    await asyncio.gather(*(run_processor(STTProcessor(), quiet) for _ in range(10)))
    assert len(log) == 10 and all(entry.startswith("stream opened on vg-blocking") for entry in log)
    # One caller speaks: one decoder, built in the executor, given back when the turn ends.
    log.clear()
    out, _ = await run_processor(STTProcessor(), [AudioFormat(16000), *turn_frames(SENTENCE, 1)])
    assert [entry.split("-")[0] for entry in log] == ["stream opened on vg", "decoder built on vg"]
    assert engine.idle_decoders == 1
    assert any(isinstance(f, FinalTranscript) for f in out.frames)


async def test_a_flushed_turn_gives_its_decoder_back_at_the_next_frame(
    fresh_engine: tuple[PocketsphinxEngine, list[str]],
) -> None:
    engine, _ = fresh_engine
    node = STTProcessor()
    node.ctx = CallContext()
    await node.setup()
    await node.on_control(TurnStart(turn=1))
    for chunk in frames(utterance(SENTENCE)[:16000]):
        await node.process(InputAudio(chunk))
    assert engine.idle_decoders == 0  # the caller is speaking: the decoder is borrowed
    node.on_flush(1)  # a barge-in, on the loop: no decoder work here
    assert engine.idle_decoders == 0
    await node.process(InputAudio(silence(20)))
    assert engine.idle_decoders == 1
    await node.cleanup()


async def test_audio_collects_while_a_batch_decodes_so_the_recogniser_keeps_up(
    fresh_engine: tuple[PocketsphinxEngine, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = FairExecutor(1, name="test-stt")
    monkeypatch.setattr(stt_node, "blocking_executor", lambda: executor)
    started, release = threading.Event(), threading.Event()

    def busy() -> None:  # another call's long step holds the only thread
        started.set()
        release.wait(10)

    executor.submit("other-call", busy)
    assert started.wait(10)
    node = STTProcessor()
    node.ctx = CallContext()
    await node.setup()
    assert node.stream is not None
    batches: list[int] = []  # bytes per feed
    feed = node.stream.feed

    def counting(pcm: bytes) -> Hypothesis | None:
        batches.append(len(pcm))
        return feed(pcm)

    monkeypatch.setattr(node.stream, "feed", counting)
    monkeypatch.setattr(node, "emit", lambda event: None)  # no graph to hear its UserWords
    speech = utterance(SENTENCE)
    chunks = list(frames(speech))
    await node.on_control(TurnStart(turn=1))
    for chunk in chunks[:50]:  # one second arrives while the executor is busy
        await node.process(InputAudio(chunk))  # never waits for the decoder
    assert batches == []
    release.set()
    for chunk in chunks[50:]:
        await node.process(InputAudio(chunk))
    await node.on_control(TurnEnd(turn=1))
    # The first batch waited; the 0.9 s that came meanwhile went as one batch, not nine.
    assert batches[:1] == [100 * 32] and batches[1] >= 900 * 32  # 32 bytes per ms
    assert sum(batches) == len(speech)
    await node.cleanup()
    executor.shutdown()


class PacedFeeder(Feeder):
    """Pushes each audio frame when its 20 ms are due on the call's clock, as a line does."""

    async def run(self) -> None:
        due = self.ctx.clock.now_ns()
        for frame in self.frames:
            if isinstance(frame, InputAudio):
                due += 20_000_000
                await self.ctx.clock.sleep_until(due)
            await self.push(frame)


async def test_whisper_interims_flow_while_the_caller_speaks_on_the_virtual_clock() -> None:
    speech = utterance(SENTENCE, pad_ms=0) + utterance("yes please transfer me to an agent", pad_ms=0)
    chunks = list(frames(silence(600) + speech + silence(600)))  # 4.4 s of speech, no pause
    opened = (600 + 200) // 20  # the VAD opens the turn 200 ms into the speech
    script: list[Frame] = [AudioFormat(16000), *(InputAudio(c) for c in chunks[:opened])]
    script.append(TurnStart(turn=1, at_ms=600, stream_ms=opened * 20))
    script += [InputAudio(c) for c in chunks[opened:]]
    script.append(TurnEnd(turn=1))
    clock = VirtualClock(start_ns=0)
    graph = Graph("paced-stt")
    collector = Collector()
    graph.chain(PacedFeeder(script), STTProcessor(STTSettings(engine="whisper")), collector)
    call = asyncio.ensure_future(run_call(graph, CallContext(clock=clock), timeout=120))
    await drive(clock, call)
    assert call.result().errors == ()
    speech_end_ns = (600 + len(speech) // 32) * 1_000_000
    interims = [f for f in collector.frames if isinstance(f, InterimTranscript)]
    during = [f for f in interims if f.ts <= speech_end_ns]
    # A decode per 800 ms of speech: 5 in 4.4 s, each with new words. On the virtual
    # clock the batches, so the decodes, fall at the same audio times on every run.
    assert len(during) == 5
    assert [f.ts for f in during] == sorted(f.ts for f in during)
    final = next(f for f in collector.frames if isinstance(f, FinalTranscript))
    # Decodes take no virtual time: the final comes with the TurnEnd, after the last frame.
    assert final.ts == len(chunks) * 20_000_000
    assert wer(f"{SENTENCE} yes please transfer me to an agent", final.text) <= 0.15, final.text
