"""Engine overhead: voicegraph and Pipecat on the same line of 5 pass-through nodes.

Question
    What does the engine itself cost per frame, per node, and what latency does it add
    to one 20 ms audio frame crossing 5 nodes? Measured side by side with Pipecat 1.14
    in one process, on one event loop (uvloop), with the same frames and the same method.

Method
    A source pushes 20 ms frames of 16 kHz mono PCM16 (640 bytes) through
    ``source -> N pass-through nodes -> sink``; the sink counts them (and does not
    forward them). Frames are built before the clock starts.

    * Throughput: the source pushes ``--frames`` frames as fast as the engine takes them;
      the clock runs from the first push until the sink has seen the last frame. Per-hop
      overhead = (time per frame with N=5 - time per frame with N=0) / 5, the same
      formula for both engines, so the source, the sink and the engine's fixed costs
      cancel out. 5 repeats per configuration, configurations interleaved so they share
      the machine's noise; the median of the per-repeat figures is reported.
    * Latency: one frame every 20 ms (paced with ``asyncio.sleep`` to an absolute
      schedule); latency = ``perf_counter_ns()`` when the sink receives the frame minus
      ``perf_counter_ns()`` just before the source pushes it. Median and p99 over
      min(300, frames/10) frames (at least 20), N=5, plus N=0 for reference.

    Configurations:

    * voicegraph direct: ``processors.basic.Passthrough`` nodes; each node calls the
      next one directly (no queue, no task hop).
    * voicegraph queued: the same nodes with ``io_bound = True``: a bounded
      ``FrameQueue`` and a worker task in front of every pass-through node.
    * pipecat minimal: ``FrameProcessor`` subclasses that call
      ``super().process_frame()`` and ``push_frame()``, in a ``Pipeline`` run by
      ``PipelineWorker(pipeline, enable_rtvi=False, enable_turn_tracking=False,
      idle_timeout_secs=None, check_dangling_tasks=False)`` under
      ``WorkerRunner(handle_sigint=False)``. Frames enter with ``worker.queue_frame()``
      (the worker's push queue; Pipecat's input transports also hand audio over through
      a queue and a task), the run ends with an ``EndFrame``. ``InputAudioRawFrame`` is
      a ``SystemFrame``: it crosses each processor's input queue and is handled by that
      processor's input task.
    * pipecat default: ``PipelineWorker(pipeline)`` with every default (RTVI processor
      and observer, turn tracking, the 300 s idle monitor, dangling-task check); all of
      it runs offline, nothing had to be turned off. Same runner.

    * Source yields (extra column): the throughput test again with frames/5 frames and
      a source that yields to the loop after each frame, so every queue stays about one
      frame deep and each queue hop costs a task wake-up that is not shared.

    A Pipecat processor always receives through its own queue, the sink included, so
    Pipecat's latency figures include the sink's queue hop and the worker's push queue
    (and, in the default configuration, the RTVI processor); the per-hop formula
    cancels those. Both engines run on uvloop (``uvloop.run``), one loop for the whole
    run; loguru (Pipecat's logger) is silenced. Back to back, queues fill and a
    queue-based engine amortises a task wake-up over many frames; the latency test, one
    frame every 20 ms through empty queues, is the real-time case.

Result
    ``python perf/overhead.py``, two runs (10,000 frames; 2 vCPUs, AMD EPYC, a shared and
    noisy VM; Python 3.11.7, uvloop 0.23.0, pipecat-ai 1.14.0), microseconds:

    ==================  =============  ===============  =============  ===============  =============
    configuration       per hop        5-hop median     5-hop p99      0-hop median     per hop,
                                                                                        source yields
    ==================  =============  ===============  =============  ===============  =============
    voicegraph direct   0.50 / 0.70    34 / 38          94 / 56        16 / 18          0.55 / 0.45
    voicegraph queued   0.87 / 0.82    100 / 121        145 / 159      15 / 15          2.2 / 2.4
    pipecat minimal     8.4 / 8.4      382 / 383        488 / 502      252 / 253        10.4 / 10.3
    pipecat default     16.2 / 19.0    613 / 609        761 / 734      397 / 399        16.2 / 15.7
    ==================  =============  ===============  =============  ===============  =============

    Pipecat minimal over voicegraph direct: 12-17x per hop, 10-11x the 5-hop median
    latency (5-9x p99); over voicegraph queued: about 10x per hop, 3-4x the latency.
    Pipecat's defaults (the RTVI, turn-tracking and idle observers, each fed through its
    own queue and task) double its per-hop cost.

    Half of voicegraph's 5-hop latency is there with no node at all (0-hop median
    ~16 us): code that runs once every 20 ms starts with cold caches on this VM (a
    trivial chain of six awaits takes ~15 us after a 20 ms pause and ~1.5 us when
    repeated at once). The 5 direct hops add ~4 us each when cold (0.5 us hot). A queue
    hop costs 0.9 us back to back, ~2 us one frame deep, and ~17-21 us cold, one frame
    every 20 ms: that is the price of ``io_bound``, and why nodes that do not wait on I/O
    are called directly.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from pipeline import Graph, Processor, run_call  # noqa: E402
from pipeline.frames import InputAudio  # noqa: E402
from processors.basic import Passthrough  # noqa: E402

HOPS = 5
SAMPLE_RATE = 16_000
FRAME_MS = 20
PCM = bytes(SAMPLE_RATE * FRAME_MS // 1000 * 2)  # 640 bytes of 20 ms silence
REPEATS = 5
INTERVAL_S = FRAME_MS / 1000

perf_ns = time.perf_counter_ns


@dataclass(frozen=True, slots=True)
class Throughput:
    """One throughput run: frames the sink saw and the time from first push to last receipt."""

    sent: int
    received: int
    elapsed_ns: int

    @property
    def ns_per_frame(self) -> float:
        return self.elapsed_ns / self.sent


@dataclass(frozen=True, slots=True)
class Latency:
    """One latency run: per-frame push and receipt times."""

    sent: int
    received: int
    latencies_ns: tuple[int, ...]


# --- voicegraph ------------------------------------------------------------------------


class QueuedPassthrough(Passthrough):
    """A pass-through node behind a queue and a worker task."""

    io_bound = True


class _VGSource(Processor):
    produces = (InputAudio,)

    def __init__(self, frames: Sequence[InputAudio], interval_s: float | None, yields: bool) -> None:
        super().__init__(name="src")
        self.frames = frames
        self.interval_s = interval_s
        self.yields = yields
        self.t0 = 0
        self.pushed: list[int] = []

    async def run(self) -> None:
        if self.interval_s is None:
            push = self.push
            self.t0 = perf_ns()
            if self.yields:
                for frame in self.frames:
                    await push(frame)
                    await asyncio.sleep(0)
            else:
                for frame in self.frames:
                    await push(frame)
            return
        loop = asyncio.get_running_loop()
        start = loop.time() + self.interval_s
        pushed = self.pushed
        for i, frame in enumerate(self.frames):
            delay = start + i * self.interval_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            pushed.append(perf_ns())
            await self.push(frame)


class _VGSink(Processor):
    consumes = (InputAudio,)

    def __init__(self, record: bool) -> None:
        super().__init__(name="sink")
        self.count = 0
        self.last = 0
        self.record = record
        self.received: list[int] = []

    async def process(self, frame: InputAudio) -> None:
        now = perf_ns()
        self.count += 1
        self.last = now
        if self.record:
            self.received.append(now)


async def _vg_run(
    hops: int, n: int, queued: bool, interval_s: float | None, yields: bool = False
) -> tuple[_VGSource, _VGSink]:
    frames = [InputAudio(PCM) for _ in range(n)]
    node = QueuedPassthrough if queued else Passthrough
    src = _VGSource(frames, interval_s, yields)
    sink = _VGSink(record=interval_s is not None)
    graph = Graph("overhead")
    graph.chain(src, *(node(name=f"p{i}") for i in range(hops)), sink)
    result = await run_call(graph, timeout=600)
    if result.reason != "eos" or result.errors:
        raise RuntimeError(f"voicegraph run ended with {result.reason}: {result.errors}")
    return src, sink


async def vg_throughput(hops: int, n: int, *, queued: bool = False, yields: bool = False) -> Throughput:
    """Push ``n`` frames back to back through ``hops`` pass-through nodes.

    ``yields``: the source yields to the event loop after each frame, so queues stay
    about one frame deep instead of filling up.
    """
    src, sink = await _vg_run(hops, n, queued, None, yields)
    return Throughput(sent=n, received=sink.count, elapsed_ns=sink.last - src.t0)


async def vg_latency(hops: int, n: int, *, queued: bool = False, interval_s: float = INTERVAL_S) -> Latency:
    """Push one frame every ``interval_s`` and time each one from push to sink."""
    src, sink = await _vg_run(hops, n, queued, interval_s)
    lat = tuple(r - p for p, r in zip(src.pushed, sink.received, strict=False))
    return Latency(sent=n, received=sink.count, latencies_ns=lat)


# --- pipecat (imported lazily: the voicegraph half runs without it) ---------------------

_PC: dict[str, Any] = {}


def _pipecat() -> dict[str, Any]:
    """Import Pipecat, silence its logger, and define the pass-through and sink processors."""
    if _PC:
        return _PC
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from loguru import logger

    logger.remove()
    from pipecat.frames.frames import EndFrame, InputAudioRawFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.workers.runner import WorkerRunner

    class PCPassthrough(FrameProcessor):
        async def process_frame(self, frame: Any, direction: Any) -> None:
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)

    class PCSink(FrameProcessor):
        def __init__(self, expected: int, record: bool) -> None:
            super().__init__(name="sink")
            self.expected = expected
            self.record = record
            self.count = 0
            self.last = 0
            self.received: list[int] = []
            self.done = asyncio.Event()

        async def process_frame(self, frame: Any, direction: Any) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, InputAudioRawFrame):  # counted here, not forwarded
                now = perf_ns()
                self.count += 1
                self.last = now
                if self.record:
                    self.received.append(now)
                if self.count == self.expected:
                    self.done.set()
            else:  # lifecycle frames (start, end) must reach the worker
                await self.push_frame(frame, direction)

    import pipecat

    _PC.update(
        EndFrame=EndFrame,
        InputAudioRawFrame=InputAudioRawFrame,
        Pipeline=Pipeline,
        PipelineWorker=PipelineWorker,
        WorkerRunner=WorkerRunner,
        PCPassthrough=PCPassthrough,
        PCSink=PCSink,
        version=getattr(pipecat, "__version__", None) or _dist_version("pipecat-ai"),
    )
    return _PC


def _dist_version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


MINIMAL = {
    "enable_rtvi": False,
    "enable_turn_tracking": False,
    "idle_timeout_secs": None,
    "check_dangling_tasks": False,
}
DEFAULT: dict[str, Any] = {}


async def _pc_run(
    hops: int, n: int, config: dict[str, Any], interval_s: float | None, yields: bool = False
) -> tuple[int, list[int], Any]:
    pc = _pipecat()
    frames = [pc["InputAudioRawFrame"](audio=PCM, sample_rate=SAMPLE_RATE, num_channels=1) for _ in range(n)]
    sink = pc["PCSink"](n, record=interval_s is not None)
    pipeline = pc["Pipeline"]([*(pc["PCPassthrough"](name=f"p{i}") for i in range(hops)), sink])
    worker = pc["PipelineWorker"](pipeline, **config)
    runner = pc["WorkerRunner"](handle_sigint=False)
    started = asyncio.Event()

    async def _started(_worker: Any, _frame: Any) -> None:
        started.set()

    worker.add_event_handler("on_pipeline_started", _started)
    await runner.add_workers(worker)
    run = asyncio.ensure_future(runner.run())
    try:
        await asyncio.wait_for(started.wait(), 30)
        t0 = 0
        pushed: list[int] = []
        queue_frame = worker.queue_frame
        if interval_s is None:
            t0 = perf_ns()
            if yields:
                for frame in frames:
                    await queue_frame(frame)
                    await asyncio.sleep(0)
            else:
                for frame in frames:
                    await queue_frame(frame)
        else:
            loop = asyncio.get_running_loop()
            start = loop.time() + interval_s
            for i, frame in enumerate(frames):
                delay = start + i * interval_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                pushed.append(perf_ns())
                await queue_frame(frame)
        await asyncio.wait_for(sink.done.wait(), 600)
        await queue_frame(pc["EndFrame"]())
        await asyncio.wait_for(asyncio.shield(run), 60)
    finally:
        if not run.done():
            await runner.cancel()
            await asyncio.wait_for(run, 30)
    return t0, pushed, sink


async def pc_throughput(hops: int, n: int, config: dict[str, Any], *, yields: bool = False) -> Throughput:
    """Queue ``n`` frames back to back into a Pipecat worker with ``hops`` pass-through processors."""
    t0, _, sink = await _pc_run(hops, n, config, None, yields)
    return Throughput(sent=n, received=sink.count, elapsed_ns=sink.last - t0)


async def pc_latency(hops: int, n: int, config: dict[str, Any], *, interval_s: float = INTERVAL_S) -> Latency:
    """Queue one frame every ``interval_s`` and time each one from ``queue_frame`` to the sink."""
    _, pushed, sink = await _pc_run(hops, n, config, interval_s)
    lat = tuple(r - p for p, r in zip(pushed, sink.received, strict=False))
    return Latency(sent=n, received=sink.count, latencies_ns=lat)


# --- the benchmark ----------------------------------------------------------------------

ThroughputFn = Callable[[int, int, bool], Awaitable[Throughput]]
LatencyFn = Callable[[int, int], Awaitable[Latency]]


@dataclass(frozen=True, slots=True)
class Config:
    """One engine configuration: how to run its throughput and latency tests."""

    key: str
    label: str
    throughput: ThroughputFn  # (hops, frames, source yields after each frame)
    latency: LatencyFn  # (hops, frames)


def voicegraph_configs(interval_s: float = INTERVAL_S) -> list[Config]:
    """voicegraph direct and queued; ``interval_s`` paces the latency test."""
    return [
        Config(
            "voicegraph",
            "voicegraph direct",
            lambda h, n, y: vg_throughput(h, n, yields=y),
            lambda h, n: vg_latency(h, n, interval_s=interval_s),
        ),
        Config(
            "voicegraph_queued",
            "voicegraph queued",
            lambda h, n, y: vg_throughput(h, n, queued=True, yields=y),
            lambda h, n: vg_latency(h, n, queued=True, interval_s=interval_s),
        ),
    ]


def pipecat_configs(interval_s: float = INTERVAL_S) -> list[Config]:
    """Pipecat minimal and default (imports Pipecat when run)."""
    return [
        Config(
            "pipecat",
            "pipecat minimal",
            lambda h, n, y: pc_throughput(h, n, MINIMAL, yields=y),
            lambda h, n: pc_latency(h, n, MINIMAL, interval_s=interval_s),
        ),
        Config(
            "pipecat_default",
            "pipecat default",
            lambda h, n, y: pc_throughput(h, n, DEFAULT, yields=y),
            lambda h, n: pc_latency(h, n, DEFAULT, interval_s=interval_s),
        ),
    ]


def latency_frames(frames: int) -> int:
    """Frames of the latency test: min(300, frames/10), at least 20."""
    return max(20, min(300, frames // 10))


def yielding_frames(frames: int) -> int:
    """Frames of the source-yields throughput test: frames/5, at least 20."""
    return max(20, frames // 5)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


def _check(config: Config, what: str, run: Throughput | Latency) -> None:
    if run.received != run.sent:
        raise RuntimeError(f"{config.label} {what}: the sink saw {run.received} of {run.sent} frames")


async def _per_hop(config: Config, frames: int, yields: bool) -> tuple[float, float, float]:
    """(per-hop us, per-frame us with 0 hops, per-frame us with HOPS hops) from one pair of runs."""
    gc.collect()
    t0 = await config.throughput(0, frames, yields)
    _check(config, "throughput", t0)
    gc.collect()
    t5 = await config.throughput(HOPS, frames, yields)
    _check(config, "throughput", t5)
    return (t5.ns_per_frame - t0.ns_per_frame) / HOPS / 1000, t0.ns_per_frame / 1000, t5.ns_per_frame / 1000


async def measure(
    configs: Sequence[Config],
    *,
    frames: int,
    repeats: int = REPEATS,
    lat_frames: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the throughput and latency tests for ``configs``; figures in microseconds."""
    say = progress or (lambda _msg: None)
    lat_frames = lat_frames or latency_frames(frames)
    y_frames = yielding_frames(frames)
    warm = min(frames, 1000)
    for config in configs:  # warm-up: imports, code paths, allocator
        for hops in (0, HOPS):
            for yields in (False, True):
                _check(config, "warm-up", await config.throughput(hops, warm, yields))
        _check(config, "warm-up", await config.latency(HOPS, min(lat_frames, 10)))
    say(f"warm-up done; throughput: {repeats} x {frames} frames (+ {y_frames} with a yielding source) per config")

    runs: dict[str, dict[str, list[float]]] = {
        c.key: {"hop": [], "f0": [], "f5": [], "hop_y": [], "f0_y": [], "f5_y": []} for c in configs
    }
    for r in range(repeats):
        order = list(configs) if r % 2 == 0 else list(reversed(configs))
        for config in order:
            acc = runs[config.key]
            hop, f0, f5 = await _per_hop(config, frames, False)
            acc["hop"].append(hop)
            acc["f0"].append(f0)
            acc["f5"].append(f5)
            hop, f0, f5 = await _per_hop(config, y_frames, True)
            acc["hop_y"].append(hop)
            acc["f0_y"].append(f0)
            acc["f5_y"].append(f5)
        last = ", ".join(f"{c.key} {runs[c.key]['hop'][-1]:.2f}" for c in configs)
        say(f"repeat {r + 1}/{repeats}, per hop us: {last}")

    say(f"latency: {lat_frames} frames every {FRAME_MS} ms per configuration, {HOPS} hops and 0 hops")
    lat5: dict[str, list[float]] = {}
    lat0: dict[str, list[float]] = {}
    for config in configs:
        gc.collect()
        run5 = await config.latency(HOPS, lat_frames)
        _check(config, "latency", run5)
        lat5[config.key] = [ns / 1000 for ns in run5.latencies_ns]
        gc.collect()
        run0 = await config.latency(0, lat_frames)
        _check(config, "latency", run0)
        lat0[config.key] = [ns / 1000 for ns in run0.latencies_ns]

    med = statistics.median
    out: dict[str, dict[str, Any]] = {}
    for config in configs:
        acc = runs[config.key]
        out[config.key] = {
            "per_hop_us": round(med(acc["hop"]), 3),
            "latency_5hop_median_us": round(med(lat5[config.key]), 1),
            "latency_5hop_p99_us": round(percentile(lat5[config.key], 99), 1),
            "latency_0hop_median_us": round(med(lat0[config.key]), 1),
            "latency_0hop_p99_us": round(percentile(lat0[config.key], 99), 1),
            "per_frame_0hop_us": round(med(acc["f0"]), 3),
            "per_frame_5hop_us": round(med(acc["f5"]), 3),
            "per_hop_us_source_yields": round(med(acc["hop_y"]), 3),
            "per_frame_0hop_us_source_yields": round(med(acc["f0_y"]), 3),
            "per_frame_5hop_us_source_yields": round(med(acc["f5_y"]), 3),
            "per_hop_us_repeats": [round(v, 3) for v in acc["hop"]],
        }
    return out


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 1) if b > 0 else None


def report(
    results: dict[str, dict[str, Any]], *, frames: int, lat_frames: int, pipecat_version: str | None
) -> dict[str, Any]:
    """The JSON document: the required keys first, then the extras."""
    vg, vq, pc = results["voicegraph"], results["voicegraph_queued"], results.get("pipecat")
    doc: dict[str, Any] = {
        "voicegraph": {k: vg[k] for k in ("per_hop_us", "latency_5hop_median_us", "latency_5hop_p99_us")},
    }
    if pc is not None:
        doc["pipecat"] = {k: pc[k] for k in ("per_hop_us", "latency_5hop_median_us", "latency_5hop_p99_us")}
    doc["queued_per_hop_us"] = vq["per_hop_us"]
    doc["voicegraph_queued"] = {k: v for k, v in vq.items() if k != "per_hop_us_repeats"}
    if "pipecat_default" in results:
        doc["pipecat_default"] = {k: v for k, v in results["pipecat_default"].items() if k != "per_hop_us_repeats"}
    if pc is not None:
        doc["ratios"] = {
            "pipecat_over_voicegraph_per_hop": _ratio(pc["per_hop_us"], vg["per_hop_us"]),
            "pipecat_over_voicegraph_latency_median": _ratio(
                pc["latency_5hop_median_us"], vg["latency_5hop_median_us"]
            ),
            "pipecat_over_voicegraph_latency_p99": _ratio(pc["latency_5hop_p99_us"], vg["latency_5hop_p99_us"]),
            "pipecat_over_voicegraph_queued_per_hop": _ratio(pc["per_hop_us"], vq["per_hop_us"]),
            "pipecat_over_voicegraph_queued_latency_median": _ratio(
                pc["latency_5hop_median_us"], vq["latency_5hop_median_us"]
            ),
        }
    doc["details"] = results
    doc["env"] = {
        "python": platform.python_version(),
        "loop": _loop_name(),
        "pipecat": pipecat_version,
        "frames": frames,
        "latency_frames": lat_frames,
        "repeats": REPEATS,
        "hops": HOPS,
        "cpus": _cpus(),
    }
    return doc


def _loop_name() -> str:
    try:
        import uvloop

        return f"uvloop {getattr(uvloop, '__version__', '?')}"
    except ImportError:
        return "asyncio"


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


COLUMNS = (
    ("per_hop_us", 10, 2),
    ("latency_5hop_median_us", 22, 1),
    ("latency_5hop_p99_us", 19, 1),
    ("latency_0hop_median_us", 22, 1),
    ("per_hop_us_source_yields", 24, 2),
)


def table(results: dict[str, dict[str, Any]], labels: dict[str, str]) -> str:
    """The results as a fixed-width text table, one row per configuration."""
    head = f"{'configuration':<18}" + "".join(f" {name:>{width}}" for name, width, _ in COLUMNS)
    lines = [head, "-" * len(head)]
    for key, row in results.items():
        lines.append(f"{labels[key]:<18}" + "".join(f" {row[name]:>{width}.{prec}f}" for name, width, prec in COLUMNS))
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    configs = voicegraph_configs()
    version: str | None = None
    if not args.voicegraph_only:
        version = _pipecat()["version"]
        configs += pipecat_configs()
    lat_frames = latency_frames(args.frames)
    results = await measure(
        configs, frames=args.frames, lat_frames=lat_frames, progress=lambda m: print(m, file=sys.stderr, flush=True)
    )
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if leftover:
        print(f"warning: tasks still running: {[t.get_name() for t in leftover]}", file=sys.stderr)
    labels = {c.key: c.label for c in configs}
    doc = report(results, frames=args.frames, lat_frames=lat_frames, pipecat_version=version)
    print(table(results, labels))
    if "ratios" in doc:
        r = doc["ratios"]
        print(
            f"\npipecat minimal / voicegraph direct: per hop {r['pipecat_over_voicegraph_per_hop']}x, "
            f"5-hop latency median {r['pipecat_over_voicegraph_latency_median']}x, "
            f"p99 {r['pipecat_over_voicegraph_latency_p99']}x"
        )
        print(
            f"pipecat minimal / voicegraph queued: per hop {r['pipecat_over_voicegraph_queued_per_hop']}x, "
            f"5-hop latency median {r['pipecat_over_voicegraph_queued_latency_median']}x"
        )
    e = doc["env"]
    print(
        f"\n{e['frames']} frames x {REPEATS} repeats; latency over {e['latency_frames']} frames; "
        f"Python {e['python']}, {e['loop']}, pipecat {e['pipecat']}, {e['cpus']} CPUs"
    )
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=10_000, help="frames per throughput run (default 10000)")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this path")
    parser.add_argument("--voicegraph-only", action="store_true", help="skip Pipecat (not installed, or not wanted)")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be positive")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        doc = asyncio.run(_main(args))
    else:
        doc = uvloop.run(_main(args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
