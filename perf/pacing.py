"""Pacing the bot's audio: one sleeper per call, against one shared ticker per worker.

Question
    Every call sends one frame of bot audio per 20 ms. What does that pacing cost in loop
    wake-ups per tick and in CPU per call, for 1, 10 and 100 calls in one process, when
    each call sleeps until its own next frame (the design before ``transports.pacer``),
    and when one ticker wakes every call's playout at each tick (the design now)?

Method
    N calls run at once, each a real ``transports.base.Transport`` in a graph run by the
    call runner (``wire -> mute -> wire``), on the real monotonic clock. ``playing``: each
    plays one long bot response (buffered before the measurement, so every tick sends a
    frame); ``idle``: nothing to play (the caller is talking, or nobody is). The wire's
    ``send_audio`` only counts the frame: what is measured is pacing plus the playout's
    work, not a socket. Calls start spread over one 20 ms period, as real calls start at
    random instants.

    * before: the transport's playout task sleeps on the call's clock until its own next
      slot (``clock.sleep_until``) and takes a frame, as the speech caller did.
    * after: the base as it is: the shared pacer's one task sleeps; at each tick it calls
      every transport's tick function, which takes a frame from the playout (if any) and
      wakes that call's sender task to hand it to the wire.

    After 0.5 s of warm-up, for ``--seconds`` seconds:

    * CPU: ``time.process_time()`` over the window on uvloop (the production loop), as %
      of a core and as µs of CPU per call per second of audio. ``work`` is the playout's
      own share, measured apart: ``next_frame()`` plus the counting send in a tight loop,
      times 50 frames a second.
    * loop wake-ups per tick: the same run on asyncio's selector loop with a selector that
      counts the ``select()`` calls that let the loop sleep (timeout not 0): each is one
      wake-up. (uvloop cannot be instrumented this way.) Both loops wake for timers with
      about 1 ms resolution, so sleepers due within the same millisecond share a
      wake-up: with calls spread over 20 ms, N sleepers cost at most about 20 wake-ups
      per tick.
    * lateness: how late each sleep on the clock woke after its slot (the pacer's one
      sleep per tick, or each call's own): the share later than 5 ms, and the largest.
    * frames: bot frames sent per call per second (50 when nothing is missed).

    CPU: each case ``--repeats`` times, interleaved; medians are reported. Wake-ups: once
    (they do not vary).

    ``.venv/bin/python perf/pacing.py [--calls 1 10 100] [--seconds 4] [--repeats 3] [--json PATH]``

Result
    ``python perf/pacing.py`` on 2 shared vCPUs (AMD EPYC, a noisy VM; Python 3.11.7,
    uvloop 0.23.0), medians of 3 runs of 4 s; the playout's own work is 1.13 µs a frame
    (57 µs per call-second)::

        audio    calls  design  loop wake-ups  clock sleeps  CPU % of  CPU µs per  late %  max late  frames
                                  per tick      per tick   a core   call-second          ms  /call/s
        playing      1  before            1.0           1.0      0.87       8690.3     0.0      2.85     50.0
        playing      1  after             1.0           1.0      0.89       8881.6     0.0      3.43     50.0
        playing     10  before           8.36          10.0      2.55       2547.3    0.15      5.37     50.0
        playing     10  after             1.0           1.0      1.04       1036.3     0.0      1.94     50.0
        playing    100  before          16.83         99.99      7.46        745.8    0.07      5.65     50.0
        playing    100  after             1.0           1.0      2.64        264.4     0.0      3.81     50.0
        idle         1  before            1.0           1.0      0.41       4128.9     0.0      3.33      0.0
        idle         1  after             1.0           1.0      0.61       6057.8     0.0      3.44      0.0
        idle        10  before           9.21          10.0      2.21       2207.1     0.0      3.88      0.0
        idle        10  after             1.0           1.0      0.84        837.9     0.0      2.11      0.0
        idle       100  before          16.56        100.01      5.14        514.3    0.01      5.19      0.0
        idle       100  after             1.0           1.0      1.04        103.9     0.0      3.33      0.0

    One loop wake-up costs about 80 to 170 µs of CPU here: a single call pays that 50
    times a second whichever design (0.4 to 0.9 % of a core, the spread is the VM's
    noise). With calls spread over the period, one sleeper per call costs a wake-up per
    distinct millisecond: 8 to 9 per tick for 10 calls, 17 for 100 (the loop's 1 ms
    timer resolution coalesces the rest). The shared ticker costs one wake-up per tick
    for any number of calls: for 100 calls playing, 2.6 % of a core instead of 7.5 %
    (264 instead of 746 µs per call-second; what is left is mostly waking each call's
    sender task per frame, about 4 µs, and the playout's 1.1 µs); for 100 idle calls
    (nobody speaking to the caller), 1.0 % instead of 5.1 % (104 instead of 514 µs per
    call-second: an idle transport's tick is one function call and wakes no task). No
    slot was missed: every call sent its 50 frames a second in both designs, and no
    tick of the shared ticker ran more than 5 ms late.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import selectors
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.clock import MonotonicClock  # noqa: E402
from pipeline.context import CallContext  # noqa: E402
from pipeline.frames import InputAudio, OutputAudio  # noqa: E402
from pipeline.graph import Graph  # noqa: E402
from pipeline.processor import Processor  # noqa: E402
from pipeline.runner import run_call  # noqa: E402
from transports.base import Transport  # noqa: E402
from transports.pacer import LATE_MS  # noqa: E402
from transports.playout import Playout  # noqa: E402

RATE = 16000
PERIOD_NS = 20_000_000
WARMUP_S = 0.5


class CountingClock(MonotonicClock):
    """The real clock, keeping how late each sleep woke after its deadline."""

    def __init__(self) -> None:
        self.lateness_ns: list[int] = []

    async def sleep_until(self, deadline_ns: int) -> None:
        delay = deadline_ns - time.monotonic_ns()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        self.lateness_ns.append(time.monotonic_ns() - deadline_ns)


class CountingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Counts the selects that let the loop sleep: one loop wake-up each."""

    wakeups = 0

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None or timeout > 0:
            CountingSelector.wakeups += 1
        return super().select(timeout)  # type: ignore[no-any-return]


class Wire(Transport):
    """A wire that counts the frames it is sent; the call ends when ``stop`` is set."""

    def __init__(self, stop: asyncio.Event) -> None:
        super().__init__(name="line", sample_rate=RATE)
        self.stop = stop

    async def serve(self) -> None:
        await self.input_format(RATE)
        await self.stop.wait()

    async def send_audio(self, pcm: bytes) -> None:
        pass  # frames_sent counts them


class OwnSleeperWire(Wire):
    """The design before the shared pacer: the call's playout sleeps until its own slot."""

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            player = tasks.create_task(self._own_ticker())
            try:
                await self.serve()
            finally:
                player.cancel()

    async def _own_ticker(self) -> None:
        clock = self.ctx.clock
        slot = clock.now_ns()
        while True:
            await clock.sleep_until(slot)
            slot += PERIOD_NS
            frame, _ = self.playout.next_frame()  # events: only at the start, left out
            if frame is not None:
                await self.send_audio(frame)
                self.frames_sent += 1


class Mute(Processor):
    """Stands for the graph between the caller's audio and the bot's: nothing comes in."""

    consumes = (InputAudio,)
    produces = (OutputAudio,)


async def run_case(design: str, playing: bool, calls: int, seconds: float) -> dict[str, float]:
    """N calls of one design; the figures of one measurement window."""
    clock = CountingClock()
    stop = asyncio.Event()
    speech = b"\x10\x00" * int(RATE * (seconds + WARMUP_S + 1.0))
    wires: list[Wire] = []
    tasks = []
    for _ in range(calls):
        wire = (OwnSleeperWire if design == "before" else Wire)(stop)
        if playing:
            wire.playout.add_audio(1, speech)
        graph = Graph("pacing")
        graph.chain(wire, Mute(name="mute"), wire)
        tasks.append(asyncio.create_task(run_call(graph, CallContext(clock=clock))))
        wires.append(wire)
        await asyncio.sleep(PERIOD_NS / calls / 1e9)  # calls start spread over a period
    await asyncio.sleep(WARMUP_S)
    sent0 = sum(w.frames_sent for w in wires)
    wake0 = CountingSelector.wakeups
    clock.lateness_ns.clear()
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    wakeups = CountingSelector.wakeups - wake0
    sent = sum(w.frames_sent for w in wires) - sent0
    lateness = list(clock.lateness_ns)
    stop.set()
    await asyncio.gather(*tasks)
    ticks = wall / (PERIOD_NS / 1e9)
    late = sum(1 for ns in lateness if ns > LATE_MS * 1e6)
    return {
        "cpu_pct_core": round(100 * cpu / wall, 2),
        "cpu_us_per_call_s": round(cpu / wall / calls * 1e6, 1),
        "clock_sleeps_per_tick": round(len(lateness) / ticks, 2),
        "loop_wakeups_per_tick": round(wakeups / ticks, 2),
        "late_pct": round(100 * late / max(1, len(lateness)), 2),
        "max_late_ms": round(max(lateness, default=0) / 1e6, 2),
        "frames_per_call_s": round(sent / calls / wall, 1),
    }


def playout_work_us() -> float:
    """CPU µs per frame of the playout's own work (next_frame and a no-op send)."""
    playout = Playout(RATE, lead_ms=0)
    frames = 20_000
    playout.add_audio(1, b"\x10\x00" * (RATE // 50 * frames))

    async def send(pcm: bytes) -> None:
        pass

    def step() -> None:
        frame, _ = playout.next_frame()
        if frame is not None:
            coro = send(frame)
            try:
                coro.send(None)
            except StopIteration:
                pass

    t0 = time.process_time()
    for _ in range(frames):
        step()
    return (time.process_time() - t0) / frames * 1e6


def on_loop(kind: str, main: Callable[[], Coroutine[Any, Any, dict[str, float]]]) -> dict[str, float]:
    if kind == "uvloop":
        import uvloop

        return uvloop.run(main())
    loop = asyncio.SelectorEventLoop(CountingSelector())
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def measure(calls: list[int], seconds: float, repeats: int) -> dict[str, Any]:
    keys = [(state, n, design) for state in ("playing", "idle") for n in calls for design in ("before", "after")]
    runs: dict[tuple[str, int, str], list[dict[str, float]]] = {key: [] for key in keys}
    wakeups: dict[tuple[str, int, str], float] = {}
    for repeat in range(repeats):
        for state, n, design in keys:
            case = functools.partial(run_case, design, state == "playing", n, seconds)
            runs[state, n, design].append(on_loop("uvloop", case))
            if repeat == 0:
                wakeups[state, n, design] = on_loop("asyncio", case)["loop_wakeups_per_tick"]
    work = playout_work_us()
    cases = {}
    for key, rs in runs.items():
        row = {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}
        row["loop_wakeups_per_tick"] = wakeups[key]
        cases["/".join(map(str, key))] = row
    return {"seconds": seconds, "repeats": repeats, "playout_work_us_per_frame": round(work, 2),
            "playout_work_us_per_call_s": round(work * 50, 1), "cases": cases}


def render(result: dict[str, Any]) -> str:
    lines = [f"medians of {result['repeats']} runs of {result['seconds']} s; playout work alone: "
             f"{result['playout_work_us_per_frame']} µs a frame = {result['playout_work_us_per_call_s']} µs per "
             "call-second", "",
             "audio    calls  design  loop wake-ups  clock sleeps  CPU % of  CPU µs per  late %  max late  frames",
             "                          per tick      per tick   a core   call-second          ms  /call/s"]
    for name, c in result["cases"].items():
        state, n, design = name.split("/")
        lines.append(f"{state:<8} {n:>5}  {design:<6}  {c['loop_wakeups_per_tick']:>13}  "
                     f"{c['clock_sleeps_per_tick']:>12}  {c['cpu_pct_core']:>8}  {c['cpu_us_per_call_s']:>11}  "
                     f"{c['late_pct']:>6}  {c['max_late_ms']:>8}  {c['frames_per_call_s']:>7}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.calls, args.seconds, args.repeats)
    print(render(result), end="")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
