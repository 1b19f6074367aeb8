"""ProcessPoolEngine: pocketsphinx in worker processes, on the Piper test speech."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pipeline.errors import ServiceError
from pipeline.frames import AudioFormat, FinalTranscript, InterimTranscript
from pipeline.testing import run_processor
from processors.stt.engine import Hypothesis, RecognizerStream, STTEngine
from processors.stt.node import STTProcessor, STTSettings
from processors.stt.pocketsphinx_engine import PocketsphinxEngine
from processors.stt.procpool import ProcessPoolEngine, ProcessStream, WorkerDied
from processors.stt.whisper_engine import WhisperEngine
from tests.processors.stt.speech import SENTENCES, utterance
from tests.processors.stt.test_stt_node import SENTENCE, turn_frames

BATCH = 3200  # 100 ms, the STT node's feed_ms


@pytest.fixture(scope="module")
def engine() -> Iterator[ProcessPoolEngine]:
    pool = ProcessPoolEngine(PocketsphinxEngine, processes=2)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def local() -> PocketsphinxEngine:
    return PocketsphinxEngine(prewarm=1)


def recognise(stream: RecognizerStream, pcm: bytes) -> list[Hypothesis]:
    """Every hypothesis of ``pcm`` fed in 100 ms batches: the interims, then the final."""
    hyps = [stream.feed(pcm[i : i + BATCH]) for i in range(0, len(pcm), BATCH)]
    return [h for h in hyps if h is not None] + [stream.finish()]


@functools.cache
def expected(sentence: str) -> list[Hypothesis]:
    """What the in-process engine hears in ``sentence`` (a fresh decoder, like a worker's)."""
    with PocketsphinxEngine(prewarm=1).open_stream() as stream:
        return recognise(stream, utterance(sentence))


def test_hosted_engine_hears_exactly_what_the_in_process_one_hears(engine: ProcessPoolEngine) -> None:
    assert isinstance(engine, STTEngine)
    assert (engine.name, engine.sample_rate, engine.processes) == ("pocketsphinx", 16000, 2)
    # One stream, three utterances, as one caller's turns (each turn starts from the
    # channel mean the caller's previous turn left, in the worker as in-process).
    with engine.open_stream() as hosted, PocketsphinxEngine(prewarm=1).open_stream() as in_process:
        assert isinstance(hosted, RecognizerStream) and hosted.sample_rate == 16000
        for sentence in SENTENCES:
            pcm = utterance(sentence)
            assert recognise(hosted, pcm) == recognise(in_process, pcm)
    assert expected(SENTENCES[2])[-1].text == "yes please transfer me to an agent"
    assert len(expected(SENTENCES[0])) >= 5  # interims came through, not just the final


def test_whisper_can_be_hosted_too() -> None:
    whisper = functools.partial(WhisperEngine, cpu_threads=1)
    pool = ProcessPoolEngine(whisper, processes=1)
    try:
        assert (pool.name, pool.sample_rate) == ("whisper", 16000)
        pcm = utterance(SENTENCES[0])
        with pool.open_stream() as hosted:
            heard = recognise(hosted, pcm)
        assert heard == recognise(whisper().open_stream(), pcm)
        assert heard[-1].final and "claim for my car accident" in heard[-1].text.lower()
    finally:
        pool.close()


def test_many_streams_at_once_each_get_their_own_text(engine: ProcessPoolEngine) -> None:
    streams = [engine.open_stream() for _ in range(6)]
    # Least-loaded pinning: three streams per worker.
    assert sorted(streams[i].pid or 0 for i in range(6)) == sorted(engine.pids * 3)
    sentences = [SENTENCES[i % 3] for i in range(6)]

    def speak(i: int) -> list[Hypothesis]:
        pcm = utterance(sentences[i])
        return [h for h in (streams[i].feed(pcm[k : k + 640]) for k in range(0, len(pcm), 640)) if h] + [
            streams[i].finish()
        ]

    with ThreadPoolExecutor(6) as threads:  # six executor threads sharing two pipes
        heard = list(threads.map(speak, range(6)))
    for i in range(6):
        assert heard[i][-1] == expected(sentences[i])[-1], i
        assert [h.text for h in heard[i]][-1] == expected(sentences[i])[-1].text
    for stream in streams:
        stream.close()


def test_a_killed_worker_fails_only_its_streams_and_is_replaced() -> None:
    pool = ProcessPoolEngine(PocketsphinxEngine, processes=2)
    try:
        a, b = pool.open_stream(), pool.open_stream()
        assert a.pid is not None and b.pid is not None and a.pid != b.pid
        dead = a.pid
        one, two = utterance(SENTENCES[2]), utterance(SENTENCES[1])
        a.feed(one[:16000])
        b.feed(two[:16000])
        os.kill(dead, signal.SIGKILL)

        with pytest.raises(WorkerDied, match=rf"pocketsphinx worker process {dead} died \(killed by SIGKILL\)"):
            a.feed(one[16000:32000])
        assert isinstance(WorkerDied("x"), ServiceError)  # the STT node reports it, the call goes on
        assert a.feed(one[32000:]) is None  # the rest of the lost utterance is dropped
        with pytest.raises(WorkerDied, match="died"):
            a.finish()  # no transcript of half a turn
        # The other worker's stream never noticed.
        for i in range(16000, len(two), BATCH):
            b.feed(two[i : i + BATCH])
        assert b.finish() == expected(SENTENCES[1])[-1]
        # The dead worker was reaped and replaced; the failed stream's next utterance and a
        # new stream both run on the replacement.
        assert dead not in pool.pids and len(pool.pids) == 2 and b.pid in pool.pids
        assert dead not in [p.pid for p in multiprocessing.active_children()]
        assert recognise(a, one) == expected(SENTENCES[2])
        assert a.pid in pool.pids and a.pid != b.pid
        with pool.open_stream() as c:
            assert recognise(c, utterance(SENTENCES[0])) == expected(SENTENCES[0])
    finally:
        pool.close()


def test_streams_between_utterances_move_to_the_new_worker_without_an_error() -> None:
    pool = ProcessPoolEngine(PocketsphinxEngine, processes=1)
    try:
        speaking, listening, ending = pool.open_stream(), pool.open_stream(), pool.open_stream()
        recognise(listening, utterance(SENTENCES[1]))  # a turn done: between utterances now
        speaking.feed(utterance(SENTENCES[0])[:16000])
        dead = speaking.pid
        assert dead is not None
        os.kill(dead, signal.SIGKILL)
        speaking.reset()  # a barge-in on a dead worker: the utterance is gone anyway
        ending.close()  # a call ending on a dead worker
        assert ending.closed
        # Nothing of the listening stream was lost: its next turn simply runs elsewhere.
        heard = recognise(listening, utterance(SENTENCES[2]))
        assert heard[-1].text == "yes please transfer me to an agent"
        assert listening.pid != dead and listening.pid in pool.pids
        assert recognise(speaking, utterance(SENTENCES[2])) == expected(SENTENCES[2])
        speaking.close()
        listening.close()
    finally:
        pool.close()


def test_close_leaves_no_child_processes() -> None:
    pool = ProcessPoolEngine(PocketsphinxEngine, processes=2)
    pids = pool.pids
    stream = pool.open_stream()
    stream.feed(utterance(SENTENCES[0])[:16000])  # mid-utterance
    assert set(pids) <= {p.pid for p in multiprocessing.active_children()}
    pool.close()
    assert not {p.pid for p in multiprocessing.active_children()} & set(pids)
    for pid in pids:  # reaped, not zombies: the pids are gone from the process table
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    with pytest.raises(WorkerDied, match="stopped"):
        stream.feed(bytes(640))
    with pytest.raises(WorkerDied, match="closed"):
        pool.open_stream()


def test_closing_the_last_reference_stops_the_workers() -> None:
    pool = ProcessPoolEngine(PocketsphinxEngine, processes=1)
    pids = pool.pids
    del pool
    assert not {p.pid for p in multiprocessing.active_children()} & set(pids)


def test_an_engine_that_cannot_load_fails_at_construction_with_its_reason() -> None:
    broken = functools.partial(PocketsphinxEngine, options={"hmm": "/nonexistent/model"})
    with pytest.raises(WorkerDied, match=r"could not load its engine: .*") as failure:
        ProcessPoolEngine(broken, processes=1)
    assert "STT worker process" in str(failure.value)


def test_bad_input_is_refused_like_in_process(engine: ProcessPoolEngine) -> None:
    stream = engine.open_stream()
    with pytest.raises(ValueError, match="even number of bytes, got 641"):
        stream.feed(bytes(641))
    assert recognise(stream, utterance(SENTENCES[2])) == expected(SENTENCES[2])
    stream.close()
    with pytest.raises(RuntimeError, match="closed"):
        stream.feed(bytes(640))
    stream.close()  # idempotent


async def count_ticks_while(run: Callable[[], Any]) -> int:
    """Ticks of a 10 ms ticker on the loop while ``run()`` runs on another thread."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as thread:
        decoding = loop.run_in_executor(thread, run)
        ticks = 0
        while not decoding.done():
            ticks += 1
            await asyncio.sleep(0.01)
        await decoding
    return ticks


async def test_the_loop_keeps_ticking_while_a_worker_decodes(engine: ProcessPoolEngine) -> None:
    long_utterance = b"".join(utterance(s) for s in SENTENCES)  # 8.5 s: ~1 s of decoding
    hosted, in_process = engine.open_stream(), PocketsphinxEngine(prewarm=1).open_stream()
    for stream in (hosted, in_process):
        stream.feed(long_utterance[:BATCH])  # the decoder is borrowed: the next feed is pure decoding
    # In-process, pocketsphinx holds the GIL for the whole batch: the loop runs at most
    # once or twice (measured 1). In a worker process the loop ticks on (measured ~100).
    assert await count_ticks_while(lambda: in_process.feed(long_utterance)) <= 2
    assert await count_ticks_while(lambda: hosted.feed(long_utterance)) >= 20
    for stream in (hosted, in_process):
        stream.finish()
        stream.close()


async def test_the_stt_node_decodes_in_worker_processes_when_asked() -> None:
    frames = [AudioFormat(16000), *turn_frames(SENTENCE, 1)]
    hosted = STTProcessor(STTSettings(processes=1))
    out, result = await run_processor(hosted, frames)
    local, _ = await run_processor(STTProcessor(), frames)
    assert result.errors == ()
    assert isinstance(hosted.engine, ProcessPoolEngine) and isinstance(hosted.stream, ProcessStream)
    node = out.frames
    final = next(f for f in node if isinstance(f, FinalTranscript))
    assert final == next(f for f in local.frames if isinstance(f, FinalTranscript))
    assert [f for f in node if isinstance(f, InterimTranscript)]
