"""Calls per process: how many concurrent local calls one worker carries, and at what cost.

Question
    With N calls in one process and one event loop (N = 1, 10, 50, 100, 200), does every
    call still get its audio on time? What do a call's set-up and its memory cost? This is
    the baseline the ACS density target (>= 200 calls per core on the media path, < 5 MB
    per call) is measured against.

Method
    N calls are started at once (one task each, as a worker does when N callers ring
    together), on the real clock, uvloop, in one process. Two stacks:

    * ``media``: the media path alone: a scripted caller on an 8 kHz line -> resample
      8k->16k -> VAD + endpointing -> barge-in -> a table "STT" (the script's text at each
      turn end) -> the rules brain -> sentences -> a TTS from a cache (each clause's
      audio rendered once per process) -> resample 16k->8k -> the caller's paced playout.
    * ``speech``: ``config/pipelines/local.yaml`` unchanged (pocketsphinx, Piper), its
      caller's script pre-rendered once.

    Each caller says ``--turns`` lines and waits for each answer. Measured per N:

    * event-loop lag: a probe task asks to wake every 5 ms and records how late it woke
      (p50, p99, max), over the whole run;
    * outbound frames late: frames sent more than 5 ms after their 20 ms slot, over all
      frames sent; and the slots the shared pacer skipped because the loop slept through
      them (a skipped slot is a 20 ms gap on every line that was playing);
    * call set-up: from the call's start to its ``Start`` event (every node set up),
      p50/p99;
    * CPU: process time (all threads, the simulated callers included) over wall time;
    * RSS per call: resident memory with all N calls running, minus before, over N
      (models are loaded once per process, by a warm-up call, before the baseline).

    ``.venv/bin/python perf/calls.py [--stack media speech] [--calls 1 10 50 100 200]
    [--turns 2] [--json PATH]``

Result
    2 shared cores, Python 3.11.7, uvloop, ``--turns 2`` (callers and calls in one process)::

        stack  N    loop lag p50/p99/max ms   frames >5 ms late   set-up p50/p99 ms   RSS/call   CPU
        media    1    0.11 / 0.52 /  2.7          0 /    367          0.30 /  0.30       60 KiB   0.01
        media   10    0.11 / 0.81 /  1.8          0 /  3,670          1.30 /  1.84      277 KiB   0.02
        media   50    0.11 / 2.36 / 16.1          0 / 18,350          5.76 /  8.01      238 KiB   0.07
        media  100    0.12 / 4.56 / 16.6        700 / 36,700         11.7  / 15.3       235 KiB   0.14
        media  200    0.13 / 10.8 / 71.5      5,400 / 73,400         54.1  / 61.7       104 KiB   0.29
        speech   1    0.11 / 3.54 / 60.9          0 /    703          2.22 /  2.22        2 MiB   0.09
        speech  10    0.13 / 37.6 /  347         94 /  7,073         16.6  / 29.9        91 MiB   0.69

    No slot was skipped on the media path. Set-up is the time from a call's start to its
    ``Start`` with all N starting in the same instant, so it grows with N; one call's own
    set-up is about 0.3 ms of loop time. On the media path the CPU is low (0.29 cores
    for 200 calls, simulated callers included) but all calls' work falls on the same
    20 ms tick (the simulated callers are paced by the same pacer), so the last frames of
    a tick go out 5-10 ms after their slot: 7 % of frames at N = 200. The RSS per call is
    mostly two soxr filter states (33 + 51 KiB) and the answer's audio waiting in the
    playout. The speech stack is bounded by pocketsphinx: ~90 MiB per concurrently
    speaking caller, and it holds the GIL while it decodes and while a decoder is built
    (0.2-1.4 s), which is the 347 ms loop stall at N = 10 (issue 15's Whisper default
    releases the GIL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import build_graph, load_pipeline  # noqa: E402
from pipeline.context import CallContext  # noqa: E402
from pipeline.frames import (  # noqa: E402
    AudioFormat,
    ControlFrame,
    EventFrame,
    FinalTranscript,
    InputAudio,
    OutputAudio,
    Start,
    TTSText,
    TurnEnd,
)
from pipeline.graph import Graph  # noqa: E402
from pipeline.processor import Processor  # noqa: E402
from pipeline.runner import CallRunner  # noqa: E402
from processors.audio.bargein_node import BargeInProcessor  # noqa: E402
from processors.audio.resample import OUTPUT_QUALITY, Resampler  # noqa: E402
from processors.audio.resample_node import ResampleProcessor, ResampleSettings  # noqa: E402
from processors.audio.vad_node import VADProcessor  # noqa: E402
from processors.llm.rules import RulesBrain, RulesBrainSettings  # noqa: E402
from processors.text.sentences_node import SentencesProcessor  # noqa: E402
from transports.local.script import Utterance, render_script  # noqa: E402
from transports.local.speech import SpeechCaller, SpeechCallerSettings  # noqa: E402
from transports.pacer import pacer_for  # noqa: E402

LOCAL = ROOT / "config" / "pipelines" / "local.yaml"
LINES = ("I want to file a claim for my car accident", "What are your opening hours", "Thank you goodbye")
RULES = {
    r"\b(claim|accident)\b": "I am sorry to hear that. I can start a claim for you. What is your policy number?",
    r"\b(hours|open)\b": "We are open from eight to eight, Monday to Saturday.",
    r"\b(bye|thank)\b": "Thank you for calling. Goodbye!",
}
PROBE_MS = 5.0


class TableSTT(Processor):
    """Stands where STT stands: at each turn end, the script's line for that turn."""

    consumes = (InputAudio,)
    produces = (FinalTranscript,)

    def __init__(self, lines: tuple[str, ...]) -> None:
        super().__init__(name="stt")
        self.lines = lines
        self.said = 0

    async def process(self, frame: InputAudio) -> None:
        return  # audio ends here, as in a real recogniser

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        if type(frame) is TurnEnd and self.said < len(self.lines):
            self.said += 1
            await self.push(FinalTranscript(self.lines[self.said - 1], turn=frame.turn))
        return None


class CachedTTS(Processor):
    """A TTS whose every clause was rendered once per process (Piper), played from memory."""

    consumes = (TTSText,)
    produces = (TTSText, OutputAudio)
    io_bound = True

    def __init__(self, cache: dict[str, bytes]) -> None:
        super().__init__(name="tts")
        self.cache = cache
        self._announced = False

    async def process(self, frame: TTSText) -> None:
        if not self._announced:
            self._announced = True
            await self.push(AudioFormat(16000, stream="out"))
        await self.push(frame)
        pcm = self.cache.get(frame.text, b"")
        for i in range(0, len(pcm), 3200):  # 100 ms chunks at 16 kHz, as a streaming TTS delivers
            await self.push(OutputAudio(pcm[i:i + 3200], turn=frame.turn))
            # A real TTS awaits its engine between chunks: other tasks (the pacer) run
            # there. Without this, 200 answers starting together hold the loop ~0.5 s.
            await asyncio.sleep(0)


def render_cache(texts: list[str]) -> dict[str, bytes]:
    """Each clause the brain can say, synthesised once with Piper at 16 kHz (blocking)."""
    from processors.text.aggregator import SentenceAggregator
    from processors.tts.node import engine_for

    engine = engine_for("piper")
    cache: dict[str, bytes] = {}
    for text in texts:
        aggregator = SentenceAggregator(first_clause_min_words=4)
        clauses = [c for token in text.split() for c in aggregator.push(token + " ")]
        rest = aggregator.flush()
        for clause in [*clauses, *([rest] if rest else [])]:
            pcm = b"".join(engine.synthesize(clause))
            resampler = Resampler(engine.sample_rate, 16000, OUTPUT_QUALITY)
            cache[clause] = resampler.process(pcm) + resampler.flush()
    return cache


def media_graph(script: list[Utterance], cache: dict[str, bytes], turns: int) -> tuple[Graph, SpeechCaller]:
    caller = SpeechCaller(SpeechCallerSettings(sample_rate=8000), name="caller")
    caller.set_script(script[:turns])
    graph = Graph("media")
    graph.chain(
        caller,
        ResampleProcessor(ResampleSettings(rate=16000, stream="in"), name="resample_in"),
        VADProcessor(name="vad"),
        BargeInProcessor(name="barge_in"),
        TableSTT(tuple(u.text for u in script[:turns])),
        RulesBrain(RulesBrainSettings(rules=RULES), name="brain"),
        SentencesProcessor(name="sentences"),
        CachedTTS(cache),
        ResampleProcessor(ResampleSettings(rate=8000, stream="out"), name="resample_out"),
        caller,
    )
    return graph, caller


def speech_graph(script: list[Utterance], turns: int) -> tuple[Graph, SpeechCaller]:
    graph = build_graph(load_pipeline(LOCAL))
    caller = graph.nodes["caller"]
    assert isinstance(caller, SpeechCaller)
    caller.set_script(script[:turns])
    return graph, caller


class LineMeter:
    """Watches one caller's outbound line: how late each frame was sent after its slot.

    Wraps the transport's tick and wire methods on the instance; the caller keeps no copy
    of the audio it hears (a test caller's recording would dominate its memory).
    """

    def __init__(self, caller: SpeechCaller) -> None:
        self.caller = caller
        self.frames = 0
        self.late = 0
        self.max_late_ms = 0.0
        self._slot = 0
        on_tick = caller._on_tick

        def tick(slot_ns: int) -> None:
            self._slot = slot_ns
            on_tick(slot_ns)

        async def send_audio(pcm: bytes) -> None:
            late_ms = (caller.ctx.clock.now_ns() - self._slot) / 1e6
            self.frames += 1
            if late_ms > 5.0:
                self.late += 1
            self.max_late_ms = max(self.max_late_ms, late_ms)

        caller._on_tick = tick  # type: ignore[method-assign]
        caller.send_audio = send_audio  # type: ignore[method-assign]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class LagProbe:
    """Asks to wake every PROBE_MS; records how late each wake-up was (ms)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._stop = False

    async def run(self) -> None:
        period = PROBE_MS / 1000
        clock = time.perf_counter  # uvloop's loop.time() has 1 ms resolution
        while not self._stop:
            due = clock() + period
            await asyncio.sleep(period)
            self.lags.append(max(0.0, (clock() - due) * 1000))

    def stop(self) -> None:
        self._stop = True


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run_batch(n: int, make: Callable[[], tuple[Graph, SpeechCaller]], timeout: float) -> dict[str, Any]:
    """Start ``n`` calls at once and measure them (see the module docstring)."""
    pacer = pacer_for(CallContext().clock)
    before = pacer.stats()
    rss0 = rss_bytes()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    probe = LagProbe()
    probe_task = asyncio.create_task(probe.run())
    setups: list[float] = []
    rss_peak = rss0
    meters: list[LineMeter] = []
    callers: list[SpeechCaller] = []
    runners: list[CallRunner] = []
    for _ in range(n):
        graph, caller = make()
        callers.append(caller)
        meters.append(LineMeter(caller))
        runner = CallRunner(graph)
        started = time.perf_counter()

        def on_event(event: EventFrame, started: float = started) -> None:
            if type(event) is Start:
                setups.append((time.perf_counter() - started) * 1000)

        graph.watch_events(on_event)
        runners.append(runner)
    tasks = [asyncio.create_task(r.run(timeout=timeout)) for r in runners]
    while not all(t.done() for t in tasks):
        await asyncio.sleep(0.5)
        rss_peak = max(rss_peak, rss_bytes())
    results = [t.result() for t in tasks]
    probe.stop()
    await probe_task
    after = pacer.stats()
    cpu_share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    frames_sent = sum(m.frames for m in meters)
    late_ticks = after.late_ticks - before.late_ticks
    ticks = after.ticks - before.ticks
    return {
        "calls": n,
        "ended": {reason: sum(r.reason == reason for r in results) for reason in {r.reason for r in results}},
        "errors": sum(len(r.errors) for r in results),
        "loop_lag_ms": {"p50": round(pct(probe.lags, 50), 2), "p99": round(pct(probe.lags, 99), 2),
                        "max": round(max(probe.lags, default=0.0), 2)},
        "pacer": {"ticks": ticks, "late_ticks": late_ticks, "missed_slots": after.missed_slots - before.missed_slots,
                  "max_late_ms": round(after.max_late_ms, 2)},
        "frames_sent": frames_sent,
        "frames_late_5ms": sum(m.late for m in meters),
        "frame_max_late_ms": round(max((m.max_late_ms for m in meters), default=0.0), 2),
        "setup_ms": {"p50": round(pct(setups, 50), 2), "p99": round(pct(setups, 99), 2)},
        "rss_per_call_kib": round((rss_peak - rss0) / n / 1024, 1),
        # CPU of the whole process (all threads, callers included) over the run, in cores.
        "cpu_cores": round(cpu_share, 2),
        "turns_answered": sum(sum(1 for a in c.line.answers.values() if a.ended) for c in callers),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    script8 = await loop.run_in_executor(None, lambda: render_script(LINES, sample_rate=8000))
    script16 = await loop.run_in_executor(None, lambda: render_script(LINES, sample_rate=16000))
    cache = await loop.run_in_executor(None, render_cache, list(RULES.values()) + ["You said."])
    out: dict[str, Any] = {"turns": args.turns, "stacks": {}}
    for stack in args.stack:
        if stack == "media":
            def make() -> tuple[Graph, SpeechCaller]:
                return media_graph(script8, cache, args.turns)
        else:
            def make() -> tuple[Graph, SpeechCaller]:
                return speech_graph(script16, args.turns)
        await run_batch(1, make, args.timeout)  # warm-up: models load once per process
        rows = []
        for n in args.calls:
            if stack == "speech" and n > args.max_speech_calls:
                continue
            row = await run_batch(n, make, args.timeout)
            rows.append(row)
            lag, setup = row["loop_lag_ms"], row["setup_ms"]
            print(f"{stack:6} N={n:4}  lag p50 {lag['p50']:6.2f} p99 {lag['p99']:7.2f} max {lag['max']:7.1f} ms"
                  f" | frames late {row['frames_late_5ms']:5}/{row['frames_sent']:6}, slots skipped "
                  f"{row['pacer']['missed_slots']:4} | setup p50 {setup['p50']:7.2f} p99 {setup['p99']:7.2f} ms"
                  f" | {row['rss_per_call_kib']:8.1f} KiB/call | cpu {row['cpu_cores']:4.2f} cores"
                  f" | ended {row['ended']} errors {row['errors']}", flush=True)
        out["stacks"][stack] = rows
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", nargs="+", choices=("media", "speech"), default=["media", "speech"])
    parser.add_argument("--calls", nargs="+", type=int, default=[1, 10, 50, 100, 200])
    parser.add_argument("--max-speech-calls", type=int, default=10,
                        help="largest N for the speech stack (pocketsphinx costs ~18%% of a core per speaking caller)")
    parser.add_argument("--turns", type=int, default=2, choices=(1, 2, 3))
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(main_async(args))
    except ImportError:
        result = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
