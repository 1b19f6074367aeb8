"""Azure AI Speech recognition: what our adapter adds, what the loop feels, what a recogniser costs.

Question
    Through the real Speech SDK against the local peer with its delays at zero: how long
    from the SDK handing a final result to our callback until the ``FinalTranscript``
    leaves the STT node (the bridge, ``AzureTurns`` and the node's queue)? How late does
    the event loop run while recognisers stream? How much CPU and memory does one
    concurrent recogniser cost (the SDK is native code with its own threads), for 1, 10
    and 50 calls in one process: this bounds how many Azure-backed calls a worker holds.

Method
    The peer (``voicegraph peer speech``, pocketsphinx behind it) runs in a separate
    process, so this process holds only the calls. Each call is a graph
    ``line -> stt (engine: azure) -> probe``: the line paces 20 ms frames at real time
    (600 ms of silence, a 2.3 s Piper sentence, then silence; ``TurnStart`` 200 ms into
    the speech and ``TurnEnd`` 600 ms after it, as the VAD would), calls start spread over
    one second, and each call ends when its final arrives.

    * Hand-off -> frame out (``handoff_ms``): ``perf_counter_ns`` when the SDK's thread
      enters our ``recognized`` callback, to the probe receiving the ``FinalTranscript``
      of that text; per final.
    * Loop lag (``lag_ms``): a task asks to wake every 10 ms; lag is how late it woke.
      ``idle_lag_ms``: the same with no call running (the shared machine's own noise).
    * CPU: this process's CPU seconds over the run, divided by the calls and the run's
      seconds (``cpu_pct_per_call``: percent of one core per concurrent recogniser).
    * Set-up (``start_ms``): ``AzureRecognizer.start()`` (create the recogniser, connect,
      start continuous recognition: the SDK connects here, not at the first audio), the
      first in the process and the median of the next nine.
    * Memory: ``VmRSS`` before the first recogniser and its peak during the run (sampled
      every 10 ms by the lag task), per call; ``Threads`` from ``/proc/self/status``.

Result
    ``python perf/azure_stt.py`` (1, 10, 50 calls, 2 of them speaking; 2 vCPUs shared with
    other jobs, Python 3.11.7, azure-cognitiveservices-speech 1.53.0), two runs:

    ==========================================  ========  ========
    figure                                      run 1     run 2
    ==========================================  ========  ========
    idle loop lag, p99 / max (ms)               3.4/7.4   29.8/61.9
    hand-off -> FinalTranscript out, 1 call     0.37      0.27
    hand-off -> FinalTranscript out, 10 calls   0.24      0.19
    hand-off -> FinalTranscript out, 50 calls   0.61      0.60
    loop lag p99 / max, 1 call (ms)             6.0/7.7   3.5/58.6
    loop lag p99 / max, 10 calls (ms)           4.1/12.1  4.5/14.9
    loop lag p99 / max, 50 calls (ms)           2.2/4.6   2.1/14.1
    CPU per call, % of a core, 1 / 10 / 50      5.3/1.1/0.7  5.2/1.0/0.7
    RSS per call (MB), 1 / 10 / 50              13.6/0.8/0.8 13.8/0.8/0.8
    SDK threads per call, 1 / 10 / 50           3/3.4/3.0    4/3.4/3.0
    ==========================================  ========  ========

    A third run, with set-up timed: ``AzureRecognizer.start()`` took 309 ms for the first
    recogniser of the process and 0.7 ms (median of 9) after it; the SDK connects in the
    background, before the first audio (tests/azure_speech/test_azure_stt.py). ``warm_up()``
    pays the first one when the app starts; hand-off figures were 0.36/0.29/0.34 ms.

    The adapter adds well under a millisecond between the SDK and the node's output. A
    streaming recogniser costs ~0.7 % of a core, ~0.8 MB and 3 native threads once the
    SDK is loaded (the first one carries the library, ~13 MB, and its start-up CPU); at
    that rate CPU, not memory, bounds a worker: ~140 streaming calls per core before the
    pipeline's own work. Loop lag during recognition stayed within the idle machine's noise
    (run 2's idle max was 62 ms). In the one run made before the recogniser was released
    in the executor (``azure_engine._stop``), the worst lag (58-60 ms, 1 and 10 calls)
    fell as the calls ended, where the last reference to each recogniser was dropped on
    the loop; releasing one joins the SDK's threads. After the change the calls' ends no
    longer stand out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.frames import AudioFormat, FinalTranscript, Frame, InputAudio, TurnEnd, TurnStart  # noqa: E402
from pipeline.graph import Graph  # noqa: E402
from pipeline.processor import Processor  # noqa: E402
from pipeline.runner import run_call  # noqa: E402
from processors.stt import azure_engine  # noqa: E402
from processors.stt.node import STTProcessor, STTSettings  # noqa: E402
from tests.processors.stt.speech import frames, silence, utterance  # noqa: E402

SENTENCE = "yes please transfer me to an agent"
HANDOFF: dict[str, int] = {}  # final text -> perf_counter_ns when the SDK handed it to us


def status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def instrument() -> None:
    """Stamp each final as the SDK's thread enters our callback (before the bridge)."""
    original = azure_engine.AzureRecognizer._from_sdk

    def stamped(self: azure_engine.AzureRecognizer, generation: int, kind: str, evt: Any) -> None:
        if kind == "final":
            HANDOFF[f"{id(self)}:{evt.result.text}"] = time.perf_counter_ns()
        original(self, generation, kind, evt)

    azure_engine.AzureRecognizer._from_sdk = stamped  # type: ignore[method-assign]


def script(speaks: bool) -> list[Frame]:
    """A speaking call's turn, or the same length of silence (the SDK streams the same bytes)."""
    speech = utterance(SENTENCE, pad_ms=0)
    if not speaks:
        return [AudioFormat(16000), *(InputAudio(c) for c in frames(silence(600 + len(speech) // 32 + 1400)))]
    chunks = list(frames(silence(600) + speech + silence(1400)))
    # TurnEnd 300 ms after the speech, before the service's 500 ms segmentation silence: the
    # final arrives after it, so the hand-off figure is the adapter's, not a wait for TurnEnd.
    opened, ended = (600 + 200) // 20, (600 + len(speech) // 32 + 300) // 20
    out: list[Frame] = [InputAudio(c) for c in chunks]
    out.insert(ended, TurnEnd(turn=1, at_ms=ended * 20))
    out.insert(opened, TurnStart(turn=1, at_ms=600, stream_ms=opened * 20))
    return [AudioFormat(16000), *out]


class Line(Processor):
    produces = (InputAudio,)

    def __init__(self, frames: list[Frame], delay_s: float, done: asyncio.Event, speaks: bool) -> None:
        super().__init__(name="line")
        self.frames, self.delay_s, self.done, self.speaks = frames, delay_s, done, speaks

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time() + self.delay_s
        audio = 0
        for frame in self.frames:
            if isinstance(frame, InputAudio):
                await asyncio.sleep(max(0.0, start + audio * 0.02 - loop.time()))  # the line's pace
                audio += 1
            await self.push(frame)
        while self.speaks and not self.done.is_set():  # a line never stops: silence until the final
            await asyncio.sleep(max(0.0, start + audio * 0.02 - loop.time()))
            audio += 1
            await self.push(InputAudio(silence(20)))
            if audio > 1000:
                break


class Probe(Processor):
    consumes = (FinalTranscript,)

    def __init__(self, node: STTProcessor, done: asyncio.Event, out: list[float]) -> None:
        super().__init__(name="probe")
        self.node, self.done, self.out = node, done, out

    async def process(self, frame: FinalTranscript) -> None:
        now = time.perf_counter_ns()
        sent = HANDOFF.get(f"{id(self.node.azure)}:{frame.text}")
        if sent is not None:
            self.out.append((now - sent) / 1e6)
        self.done.set()


async def run_calls(n: int, speakers: int) -> dict[str, Any]:
    lags: list[tuple[float, float]] = []  # (lag, seconds since start)
    handoffs: list[float] = []
    rss0, peak = status("VmRSS"), status("VmRSS")
    threads0, peak_threads = status("Threads"), status("Threads")
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal peak, peak_threads
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not stop.is_set():
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            lags.append(((loop.time() - due) * 1000, due - t0))
            peak, peak_threads = max(peak, status("VmRSS")), max(peak_threads, status("Threads"))

    speaking, quiet = script(True), script(False)
    graphs = []
    for i in range(n):
        done = asyncio.Event()
        node = STTProcessor(STTSettings(engine="azure", fallback="none"))
        graph = Graph(f"azure-{i}")
        speaks = i < speakers
        line = Line(speaking if speaks else quiet, i / max(n, 1), done, speaks)
        graph.chain(line, node, Probe(node, done, handoffs))
        graphs.append(graph)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    tick = asyncio.create_task(ticker())
    results = await asyncio.gather(*(run_call(g, timeout=120) for g in graphs))
    stop.set()
    await tick
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    errors = sum(len(r.errors) for r in results)
    by_lag = sorted(lags)
    worst = by_lag[-1] if by_lag else (float("nan"), 0.0)
    return {
        f"calls_{n}_speaking": min(n, speakers),
        f"calls_{n}_finals": len(handoffs),
        f"calls_{n}_errors": errors,
        f"calls_{n}_handoff_ms_median": statistics.median(handoffs) if handoffs else float("nan"),
        f"calls_{n}_handoff_ms_max": max(handoffs) if handoffs else float("nan"),
        f"calls_{n}_lag_ms_p99": by_lag[int(len(by_lag) * 0.99)][0] if by_lag else float("nan"),
        f"calls_{n}_lag_ms_max": worst[0],
        f"calls_{n}_lag_max_at_s": worst[1],
        f"calls_{n}_cpu_pct_per_call": 100 * cpu / wall / n,
        f"calls_{n}_rss_mb_per_call": (peak - rss0) / 1024 / n,
        f"calls_{n}_threads_per_call": (peak_threads - threads0) / n,
    }


async def start_times(host: str, runs: int = 10) -> dict[str, float]:
    """How long ``AzureRecognizer.start()`` takes (create, connect, start): a call's set-up."""
    from processors.azure_speech.config import AzureSpeechSettings

    times = []
    for _ in range(runs):
        rec = azure_engine.AzureRecognizer(AzureSpeechSettings(auth="host", host=host), lambda r: None)
        t0 = time.perf_counter()
        await rec.start()
        times.append((time.perf_counter() - t0) * 1000)
        await rec.close()
    return {"start_ms_first": times[0], "start_ms_median": statistics.median(times[1:])}


async def baseline_lag(seconds: float = 3.0) -> dict[str, float]:
    """The same 10 ms ticker with no call running: the machine's own noise."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    end = loop.time() + seconds
    while loop.time() < end:
        due = loop.time() + 0.01
        await asyncio.sleep(0.01)
        lags.append((loop.time() - due) * 1000)
    lags.sort()
    return {"idle_lag_ms_p99": lags[int(len(lags) * 0.99)], "idle_lag_ms_max": lags[-1]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    peer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicegraph.cli", "peer", "speech", "--port", str(port),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert peer.stdout is not None
        await peer.stdout.readline()  # the peer's banner
        for _ in range(100):  # until it listens
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        os.environ["AZURE_SPEECH_HOST"] = f"ws://127.0.0.1:{port}"
        instrument()
        utterance(SENTENCE, pad_ms=0)  # synthesise before measuring
        result: dict[str, Any] = {}
        result.update(await baseline_lag())
        result.update(await start_times(os.environ["AZURE_SPEECH_HOST"]))
        for n in args.calls:
            result.update(await run_calls(n, args.speakers))
        return result
    finally:
        peer.terminate()
        await peer.wait()


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 10, 50], help="concurrent calls per run")
    parser.add_argument("--speakers", type=int, default=2, help="calls that speak; the others stream silence")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    for key, value in result.items():
        print(f"{key:36} {value:10.2f}" if isinstance(value, float) else f"{key:36} {value:>10}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
