"""Does offloaded speech work stay off the event loop, and is the CPU shared fairly?

Question
    Many calls share one event loop and a small executor (one thread per core). Two
    things can make one call hurt every other: set-up work done on the loop (a
    pocketsphinx ``Decoder`` takes 0.3-1.4 s and ~90 MB to build), and offloaded jobs
    that hold an executor thread for a long time (a whole TTS answer as one job) while
    other calls' speech recognition waits behind them. How long does STT set-up hold
    the loop, how much memory does each open STT stream cost, and how long do calls'
    STT jobs wait for a thread while long answers are being synthesised?

Method
    1. Set-up: the pocketsphinx engine is loaded first (not counted). Then ``--calls``
       STT nodes are set up concurrently on one loop, the way a burst of calls starts.
       Reported: the loop thread's CPU time over the set-ups (``time.thread_time``), the
       longest loop stall a 5 ms heartbeat task saw, and the growth of resident memory
       divided by the number of nodes (streams open, nobody speaking).
    2. Fairness: 2 calls synthesise a long answer with Piper (``--sentences`` sentences
       in one ``TTSText``: the worst case, a brain that does not split its answer; the
       audio goes to a sink that takes it at once, so synthesis runs flat out) while
       ``--calls`` calls each recognise three spoken sentences fed in 20 ms frames at
       real-time pace, twice (two turns, 1 s apart). Every offloaded job is wrapped where
       it is submitted (the fair executor's submission, or ``Processor.run_blocking``
       before it existed) to record the time from submission to the job starting on a
       thread: the queue wait. Reported: p50, p99 and max of the wait over all STT jobs
       and the worst call's p99 and max; how long after its start each call could begin
       to speak (its set-up is offloaded too); and the delay from ``TurnEnd`` to the
       final transcript, for the first turn (when most callers' decoders must be built)
       and the second.
    Run the same script against the code before and after a change by pointing
    ``PYTHONPATH`` at each tree: ``PYTHONPATH=. .venv/bin/python perf/offload.py``.

Result (2 vCPUs shared with other jobs, load average 1.3-1.8 from them; Python 3.11.7;
8 calls, 2 answers of 40 sentences; three runs of each, alternating; ranges)
    Set-up, before -> after: 190-205 ms of loop CPU per call -> 0.1 ms; the longest
    loop stall while 8 calls set up 1.2-1.6 s -> 1 ms; memory per open stream 83 MB
    (a decoder each) -> 0 MB (a decoder is borrowed only while the caller speaks).
    Fairness, before: the two answers ran as two jobs holding both threads, so the STT
    calls' set-up waited for them: the calls could speak only 9-11 s after they started
    (worst wait of one job 8.3-10.1 s). They then ran alone: waits p50 41-46 ms, p99
    185-188 ms; final transcript 140-160 ms (turn 1) and 200-250 ms (turn 2) after
    TurnEnd. The answers took 10-13 s. Loop lag p99 58-69 ms, max 0.8-1.3 s.
    After: the calls speak 3-4 ms after they start, while the answers are synthesised.
    Waits p50 57-119 ms, p99 0.85-1.7 s (the tail is the first turn, when six of the
    eight callers' decoders are built: pocketsphinx builds one in 0.2-1.4 s and holds
    the GIL meanwhile); final transcript p50 150-730 ms on turn 1 and 164-920 ms on turn
    2 (the noisiest run had both high). The answers took 26-30 s (later sentences run
    on one thread, the other stays for waiting steps): still 4x faster than they play.
    Loop lag p99 102-126 ms, max 0.3-0.5 s: pocketsphinx holds the GIL while it
    decodes, and now decodes while the answers are synthesised, not after them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in here may download

SENTENCES = (
    "I want to file a claim for my car accident",
    "my policy number is four five six",
    "yes please transfer me to an agent",
)
RATE = 16000
FRAME = RATE * 2 // 50  # 20 ms of PCM16
PREROLL_MS = 200  # where the VAD would open the turn: one start window after the onset


def rss_mb() -> float:
    """Resident memory of this process, in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class Heartbeat:
    """A task that wakes every 5 ms and records how late each wake-up was (loop lag)."""

    def __init__(self) -> None:
        self.stalls_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def max_stall_ms(self) -> float:
        return max(self.stalls_ms, default=0.0)

    async def _beat(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            self.stalls_ms.append((time.perf_counter() - started - 0.005) * 1e3)

    def __enter__(self) -> Heartbeat:
        self._task = asyncio.get_running_loop().create_task(self._beat())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def measure_setup(calls: int) -> dict[str, float]:
    """Loop time and memory of ``calls`` concurrent STT set-ups."""
    from pipeline import CallContext
    from processors.stt.node import STTProcessor, stt_engine_for

    await asyncio.to_thread(stt_engine_for, "pocketsphinx")  # the model load is not set-up
    nodes = [STTProcessor(name=f"stt{i}") for i in range(calls)]
    for i, node in enumerate(nodes):
        node.ctx = CallContext(f"setup-{i}")
    rss_before = rss_mb()
    with Heartbeat() as heartbeat:
        await asyncio.sleep(0.02)
        cpu_before = time.thread_time()
        await asyncio.gather(*(node.setup() for node in nodes))
        loop_cpu = time.thread_time() - cpu_before
        await asyncio.sleep(0.02)
    figures = {
        "setup_loop_cpu_ms_per_call": loop_cpu * 1e3 / calls,
        "setup_max_loop_stall_ms": heartbeat.max_stall_ms,
        "rss_mb_per_open_stream": (rss_mb() - rss_before) / calls,
    }
    for node in nodes:
        await node.cleanup()
    return figures


def speech() -> bytes:
    """The three sentences spoken by Piper (noise off), 16 kHz, padded with silence."""
    import numpy as np
    import soxr

    from processors.tts.piper_engine import PiperEngine

    voice = PiperEngine(noise_scale=0.0, noise_w_scale=0.0)
    pad = np.zeros(RATE * 3 // 10, dtype=np.int16)
    out = []
    for sentence in SENTENCES:
        audio = np.frombuffer(b"".join(voice.synthesize(sentence)), dtype=np.int16)
        out += [pad, soxr.resample(audio, voice.sample_rate, RATE).astype(np.int16), pad]
    return np.concatenate(out).tobytes()


async def measure_fairness(calls: int, sentences: int) -> dict[str, Any]:
    """Queue wait of STT jobs, and final-transcript delay, while two long answers are
    synthesised."""
    from pipeline import CallContext, Graph, Processor, run_call
    from pipeline.frames import AudioFormat, FinalTranscript, InputAudio, TTSText, TurnEnd, TurnStart
    from pipeline.testing import Collector, Feeder
    from processors.stt.node import STTProcessor, stt_engine_for
    from processors.tts.node import TTSProcessor, engine_for

    await asyncio.to_thread(stt_engine_for, "pocketsphinx")
    await asyncio.to_thread(engine_for, "piper", "")
    pcm = speech()
    waits: dict[str, list[int]] = defaultdict(list)  # per STT call, ns from submit to start
    ended: dict[tuple[str, int], float] = {}  # (call, turn) -> when TurnEnd was sent
    finals: dict[int, list[float]] = defaultdict(list)  # turn -> ms from TurnEnd to the final
    speech_delay: list[float] = []  # ms from a call's start to its first audio frame

    def timed(call: str, fn: Any) -> Any:
        """``fn`` wrapped to record its queue wait."""
        submitted = time.perf_counter_ns()

        def job(*job_args: Any) -> Any:
            if call.startswith("stt-"):
                waits[call].append(time.perf_counter_ns() - submitted)
            return fn(*job_args)

        return job

    # Every offloaded job goes through one of these: the fair executor's submission
    # (after issue 12), or Processor.run_blocking into a plain thread pool (before).
    from pipeline import offload

    if hasattr(offload, "FairExecutor"):
        submit = offload.FairExecutor._submit

        def timed_submit(self: Any, key: Any, fn: Any, args: tuple[Any, ...], kind: Any) -> Any:
            return submit(self, key, timed(str(key), fn), args, kind)

        offload.FairExecutor._submit = timed_submit  # type: ignore[method-assign]
    else:
        original = Processor.run_blocking

        async def timed_run(self: Processor, fn: Any, *args: Any) -> Any:
            return await original(self, timed(self.ctx.call_id, fn), *args)

        Processor.run_blocking = timed_run  # type: ignore[method-assign]

    class PacedSpeech(Processor):
        """Two turns of speech, 1 s apart, in 20 ms frames at real-time pace."""

        produces = (InputAudio,)

        def __init__(self, created: float) -> None:
            super().__init__(name="speech")
            self.created = created

        async def run(self) -> None:
            await self.push(AudioFormat(RATE))
            loop = asyncio.get_running_loop()
            due = loop.time()
            speech_delay.append((time.perf_counter() - self.created) * 1e3)
            gap = bytes(RATE * 2)
            sent = 0
            for turn in (1, 2):
                for audio, opens in ((pcm, True), (gap, False)):
                    for i, start in enumerate(range(0, len(audio), FRAME)):
                        if opens and i == PREROLL_MS // 20:
                            await self.push(TurnStart(turn=turn, stream_ms=float(sent)))
                        frame = audio[start : start + FRAME]
                        await self.push(InputAudio(frame))
                        sent += len(frame) * 1000 // (RATE * 2)
                        due += 0.02
                        await asyncio.sleep(max(0.0, due - loop.time()))
                    if opens:
                        ended[self.ctx.call_id, turn] = time.perf_counter()
                        await self.push(TurnEnd(turn=turn))

    class Finals(Collector):
        async def process(self, frame: Any) -> None:
            if isinstance(frame, FinalTranscript):
                finals[frame.turn].append((time.perf_counter() - ended[self.ctx.call_id, frame.turn]) * 1e3)

    answer = " ".join(f"This is sentence number {n} of a long answer about your claim." for n in range(sentences))
    answer_s: list[float] = []

    async def tts_call(i: int) -> None:
        graph = Graph(f"tts{i}")
        graph.chain(Feeder([TTSText(answer, turn=1)]), TTSProcessor(name="tts"), Collector())
        started = time.perf_counter()
        await run_call(graph, CallContext(f"tts-{i}"), timeout=600)
        answer_s.append(time.perf_counter() - started)

    async def stt_call(i: int) -> None:
        graph = Graph(f"stt{i}")
        graph.chain(PacedSpeech(time.perf_counter()), STTProcessor(name="stt"), Finals())
        await run_call(graph, CallContext(f"stt-{i}"), timeout=600)

    with Heartbeat() as heartbeat:
        async with asyncio.TaskGroup() as group:
            for i in range(2):
                group.create_task(tts_call(i))
            await asyncio.sleep(0.5)  # the answers are being synthesised when the calls start
            for i in range(calls):
                group.create_task(stt_call(i))
    stalls = sorted(heartbeat.stalls_ms)

    every = sorted(w / 1e6 for ws in waits.values() for w in ws)
    per_call = [sorted(w / 1e6 for w in ws) for ws in waits.values()]
    return {
        "stt_jobs": len(every),
        "wait_p50_ms": percentile(every, 50),
        "wait_p99_ms": percentile(every, 99),
        "wait_max_ms": every[-1],
        "worst_call_p99_ms": max(percentile(ws, 99) for ws in per_call),
        "worst_call_max_ms": max(ws[-1] for ws in per_call),
        "speech_delay_max_ms": max(speech_delay),
        "final_turn1_p50_ms": percentile(sorted(finals[1]), 50),
        "final_turn1_max_ms": max(finals[1]),
        "final_turn2_p50_ms": percentile(sorted(finals[2]), 50),
        "final_turn2_max_ms": max(finals[2]),
        "answer_s": max(answer_s),
        "loop_lag_p99_ms": percentile(stalls, 99),
        "loop_lag_max_ms": stalls[-1],
    }


def percentile(ordered: list[float], p: float) -> float:
    """The ``p``th percentile of sorted values (nearest rank)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = await measure_setup(args.calls)
    figures.update(await measure_fairness(args.calls, args.sentences))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=8, help="concurrent STT calls")
    parser.add_argument("--sentences", type=int, default=40, help="sentences in each long answer")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    figures = asyncio.run(main_async(args))
    figures.update(calls=args.calls, sentences=args.sentences, cpus=os.cpu_count(), python=sys.version.split()[0])
    print(f"STT set-up of {args.calls} calls: {figures['setup_loop_cpu_ms_per_call']:.1f} ms of loop CPU per call, "
          f"longest loop stall {figures['setup_max_loop_stall_ms']:.0f} ms, "
          f"{figures['rss_mb_per_open_stream']:.1f} MB per open stream")
    print(f"STT queue wait with 2 long answers, {figures['stt_jobs']} jobs: p50 {figures['wait_p50_ms']:.1f} ms, "
          f"p99 {figures['wait_p99_ms']:.1f} ms, max {figures['wait_max_ms']:.1f} ms, "
          f"worst call's p99 {figures['worst_call_p99_ms']:.1f} ms and max {figures['worst_call_max_ms']:.1f} ms")
    print(f"  calls could speak {figures['speech_delay_max_ms']:.0f} ms after they started (worst); final "
          f"transcript after TurnEnd: turn 1 p50 {figures['final_turn1_p50_ms']:.0f} ms, max "
          f"{figures['final_turn1_max_ms']:.0f} ms; turn 2 p50 {figures['final_turn2_p50_ms']:.0f} ms, max "
          f"{figures['final_turn2_max_ms']:.0f} ms; the long answers took {figures['answer_s']:.1f} s")
    print(f"  event loop lag meanwhile: p99 {figures['loop_lag_p99_ms']:.1f} ms, "
          f"max {figures['loop_lag_max_ms']:.0f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
