"""Azure TTS adapter: the first-audio latency it adds, and what a synthesizer costs a worker.

Question
    How long from the Speech SDK handing over a clause's first audio (its ``synthesizing``
    event, on an SDK thread) to the TTS node's first ``OutputAudio`` frame reaching the
    next node, and does the bridge keep the event loop free while clauses stream? What
    does each pooled synthesizer (one WebSocket, the SDK's native threads) cost in memory,
    and each clause in CPU, with 1, 10 and 50 clauses synthesised at once in one process?

Method
    The speech peer (``SpeechPeer``) runs in a child process (``--serve-peer``, its
    delays at zero, eSpeak NG behind synthesis, 100 ms audio messages), so its CPU is not ours;
    the adapter talks to it through the real SDK (``AZURE_SPEECH_HOST``).

    * Hand-off -> frame (``handoff_us``): ``Feeder -> tts(engine: azure) -> sink``; the
      SDK callback stamps ``perf_counter_ns`` on a clause's first chunk, the sink stamps
      the first ``OutputAudio``; median/p95 over ``--clauses`` clauses, one at a time.
      ``first_audio_ms`` is the whole ``TTSText`` -> first ``OutputAudio`` for scale
      (it includes the peer's eSpeak run and loopback, not ours). ``wake_floor_us``: a
      plain thread's ``call_soon_threadsafe`` to the idle loop, the OS's share of it.
    * Loop lag (``lag_ms``): a probe asks to wake every 5 ms while the clauses stream.
    * Cost per synthesizer (``concurrency``): for N in ``--concurrent``, one engine with
      ``warm: N`` (N connected synthesizers); RSS growth per synthesizer after they
      connect; then N clauses at once (``stream``), process CPU time (user + system:
      the SDK's threads included) per clause and wall time of the batch.

Result
    ``python perf/azure_tts.py`` (50 clauses of 3.5 s; 2 vCPUs shared with other jobs,
    load 2 in run 1, 7 in run 2; Python 3.11, uvloop, SDK 1.53), with the peer sending
    each clause as one burst (``--peer-pace-ms 0``, the issue's "delays at zero") and
    paced at 20 ms per 100 ms message (``--peer-pace-ms 20``, closer to a voice streamed
    faster than real time); run 1 / run 2:

    ============================================  ===================  ===================
    figure                                        burst                paced 20 ms
    ============================================  ===================  ===================
    hand-off -> frame, median (us)                234 / 581            138 / 157
    hand-off -> frame, p95 (us)                   1,721 / 2,710        251 / 241
    plain thread -> loop wake, median (us)        56 / 73              72 / 70
    TTSText -> first OutputAudio, median (ms)     17.5 / 20.1          18.7 / 19.7
    loop lag while streaming, p99 (ms)            3.0 / 4.5            1.6 / 3.3
    RSS per synthesizer, 1 / 10 / 50 (KiB)        404-412 / 324-357 /  400-412 / 314-349 /
                                                  302-304              314-323
    CPU per clause, 1 / 10 / 50 (ms)              4-9 / 4-8 / 5-7      30 / 13 / 15
    50 clauses at once, wall (ms)                 459 / 496            1,013 / 1,061
    ============================================  ===================  ===================

    The adapter adds ~70-180 us over the OS's own wake-up of the loop when audio comes at
    a voice's pace. In a burst the SDK's thread raises one ``synthesizing`` event per
    message back to back, each taking the GIL, and the loop's thread waits for the burst
    (p95 1.7 ms): the cost is the SDK's, paid once per clause. A pooled synthesizer costs
    ~0.3-0.4 MiB (its native threads and buffers); 50 connected synthesizers and their
    clauses took the process from ~66 to ~115 MiB, and a clause ~7-30 ms of CPU (the SDK's
    threads included), so the adapter is not what bounds the calls a worker holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TEXT = "Thank you for calling, I can help you with your claim today."
PROBE_MS = 5.0


def serve_peer(port: int, pace_ms: float) -> None:
    """The child process: the synthesis service alone on ``port`` (eSpeak behind it)."""
    import uvicorn

    from processors.azure_speech.peer.app import SpeechPeer
    from processors.azure_speech.peer.synthesis import synthesis_state

    peer = SpeechPeer()
    synthesis_state(peer).settings.engine = "espeak"
    synthesis_state(peer).settings.pace_ms = pace_ms
    uvicorn.run(peer.app, host="127.0.0.1", port=port, log_level="warning")


@contextlib.asynccontextmanager
async def peer_process(pace_ms: float) -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve-peer", str(port),
                                                 "--peer-pace-ms", str(pace_ms))
    try:
        for _ in range(200):  # wait for the port to accept (the child imports the SDK-free peer)
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield f"ws://127.0.0.1:{port}"
    finally:
        child.terminate()
        await asyncio.wait_for(child.wait(), 10)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class LagProbe:
    def __init__(self) -> None:
        self.lags: list[float] = []
        self.stop = False

    async def run(self) -> None:
        while not self.stop:
            due = time.perf_counter() + PROBE_MS / 1000
            await asyncio.sleep(PROBE_MS / 1000)
            self.lags.append(max(0.0, (time.perf_counter() - due) * 1000))


async def handoff(clauses: int) -> dict[str, Any]:
    from pipeline import CallContext, Graph, run_call
    from pipeline.frames import OutputAudio, TTSText
    from pipeline.testing import Collector, Feeder
    from processors.tts import azure_synthesizer
    from processors.tts.node import TTSProcessor, TTSSettings

    handed: dict[int, int] = {}  # clause (1, 2, ...) -> its first hand-off
    begun: list[Any] = []  # the clauses' sinks, in the order the clauses began
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    originals = (azure_synthesizer.Synthesizer._on_audio, azure_synthesizer.Synthesizer.begin,
                 azure_synthesizer.Synthesizer._on_completed)

    def stamped(self: Any, event: Any) -> None:
        if self._sink is not None and self._sink in begun:
            handed.setdefault(begun.index(self._sink) + 1, time.perf_counter_ns())
        originals[0](self, event)

    def begin(self: Any, sink: Any, ssml: str) -> None:
        begun.append(sink)
        originals[1](self, sink, ssml)

    def completed(self: Any, event: Any) -> None:
        originals[2](self, event)
        loop.call_soon_threadsafe(done.set)

    azure_synthesizer.Synthesizer._on_audio = stamped  # type: ignore[method-assign]
    azure_synthesizer.Synthesizer.begin = begin  # type: ignore[method-assign]
    azure_synthesizer.Synthesizer._on_completed = completed  # type: ignore[method-assign]
    handoffs: list[float] = []
    firsts: list[float] = []
    probe = LagProbe()
    lag_task = asyncio.create_task(probe.run())
    node = TTSProcessor(TTSSettings(engine="azure", fallback=None, trim_joins=False, prefill_brain=False), name="tts")

    class Sink(Collector):
        async def process(self, frame: Any) -> None:
            if isinstance(frame, OutputAudio) and frame.turn not in seen:
                now = time.perf_counter_ns()
                seen[frame.turn] = now
                handoffs.append((now - handed[frame.turn]) / 1000)
                firsts.append((now - sent[frame.turn]) / 1e6)

    seen: dict[int, int] = {}
    sent: dict[int, int] = {}

    class Paced(Feeder):
        async def run(self) -> None:
            for turn in range(1, clauses + 1):
                done.clear()
                sent[turn] = time.perf_counter_ns()
                await self.push(TTSText(TEXT, turn=turn))
                await done.wait()  # one clause at a time: the next starts on an idle loop

    graph = Graph()
    graph.chain(Paced([]), node, Sink())
    result = await run_call(graph, CallContext("azure-tts-perf"), timeout=clauses * 10 + 30)
    probe.stop = True
    await lag_task
    azure_synthesizer.Synthesizer._on_audio = originals[0]  # type: ignore[method-assign]
    azure_synthesizer.Synthesizer.begin = originals[1]  # type: ignore[method-assign]
    azure_synthesizer.Synthesizer._on_completed = originals[2]  # type: ignore[method-assign]
    assert not result.errors, result.errors
    return {
        "clauses": clauses,
        "handoff_us": {"median": statistics.median(handoffs), "p95": pct(handoffs, 95), "max": max(handoffs)},
        "first_audio_ms": {"median": statistics.median(firsts), "p95": pct(firsts, 95)},
        "lag_ms": {"p50": pct(probe.lags, 50), "p99": pct(probe.lags, 99), "max": max(probe.lags)},
    }


async def wake_floor(samples: int) -> dict[str, float]:
    """A plain thread's ``call_soon_threadsafe`` to the loop, for scale: the part of the
    hand-off that is the OS waking the loop's thread, not the adapter."""
    import threading

    loop = asyncio.get_running_loop()
    lags: list[float] = []
    arrived = asyncio.Event()

    def arrive(sent: int) -> None:
        lags.append((time.perf_counter_ns() - sent) / 1000)
        arrived.set()

    for _ in range(samples):
        arrived.clear()
        def later() -> None:
            time.sleep(0.005)
            loop.call_soon_threadsafe(arrive, time.perf_counter_ns())

        thread = threading.Thread(target=later)
        thread.start()
        await arrived.wait()
        thread.join()
    return {"median": statistics.median(lags), "p95": pct(lags, 95)}


async def concurrency(n: int) -> dict[str, Any]:
    import azure.cognitiveservices.speech as speechsdk

    from processors.azure_speech.ssml import Voice
    from processors.tts.azure_engine import AzureTTSEngine, AzureTTSSettings

    host = os.environ["AZURE_SPEECH_HOST"]
    rss0 = rss_bytes()
    engine = await asyncio.to_thread(
        AzureTTSEngine, lambda: speechsdk.SpeechConfig(host=host, subscription="perf"), Voice(name="en-US-JennyNeural"),
        AzureTTSSettings(warm=n))
    rss1 = rss_bytes()

    async def one() -> int:
        return sum([len(chunk) async for chunk in engine.stream(TEXT)])

    cpu0, wall0 = cpu_s(), time.perf_counter()
    sizes = await asyncio.gather(*(one() for _ in range(n)))
    cpu1, wall1 = cpu_s(), time.perf_counter()
    rss2 = rss_bytes()
    engine.close()
    return {
        "synthesizers": n,
        "created": engine.created,
        "rss_per_synthesizer_kib": (rss1 - rss0) / n / 1024,
        "rss_after_clauses_mib": rss2 / 2**20,
        "cpu_ms_per_clause": (cpu1 - cpu0) * 1000 / n,
        "batch_wall_ms": (wall1 - wall0) * 1000,
        "audio_s_per_clause": statistics.mean(sizes) / 32000,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    async with peer_process(args.peer_pace_ms) as host:
        os.environ["AZURE_SPEECH_HOST"] = host
        os.environ.setdefault("AZURE_SPEECH_KEY", "perf")
        out: dict[str, Any] = {"handoff": await handoff(args.clauses), "wake_floor_us": await wake_floor(args.clauses)}
        out["concurrency"] = [await concurrency(n) for n in args.concurrent]
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clauses", type=int, default=50)
    parser.add_argument("--concurrent", type=int, nargs="*", default=[1, 10, 50])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--peer-pace-ms", type=float, default=0.0,
                        help="the peer's wait between 100 ms audio messages (0: a burst, as fast as it can)")
    parser.add_argument("--serve-peer", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_peer:
        serve_peer(args.serve_peer, args.peer_pace_ms)
        sys.exit(0)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    figures = asyncio.run(main(args))
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
