"""What the event side-cars cost a call: CPU on the event loop per turn, Redis round trips
per turn, and voice-to-voice latency with and without them.

Question
    The fact tap, the CloudEvents bus and the recorder all run on the loop that carries
    the calls' audio. How many microseconds of that loop does one turn cost with each of
    them, how many Redis round trips does publishing take per turn, and does a spoken call
    answer any later when they are on?

Method
    Part A (``--calls`` x ``--turns`` synthetic turns, one process, one loop): each call
    is a small graph (a duplex line, a brain, a voice) whose probes and events are driven
    directly, with what one spoken turn of the embedded stack makes: 250 caller frames
    (5 s of 20 ms audio at 16 kHz), the end of speech, a final transcript, 20 LLM tokens,
    3 clauses, 150 bot audio frames, the response end, bot started and stopped speaking.
    Configurations: ``bare`` (no side-car: the driver's own cost, subtracted from the
    others), ``tap`` (FactTap and CallFacts, no sink), ``inprocess`` (plus the event bus
    with one in-process subscriber), ``redis`` (the bus on Redis Streams, a real
    ``redis-server`` on a loopback port, batch 100), ``recording`` (the tap plus the
    stereo recorder into a temp folder). CPU is ``time.process_time`` of the whole run,
    the bus drained and the files written (the writer thread's CPU included), per turn.
    Part B: ``perf/v2v.py``'s pipeline (local.yaml, Whisper tiny.en, rules brain, Piper)
    run ``--v2v-calls`` concurrent calls for ``--v2v-turns`` turns, ``without`` (the default
    tier: no events, no recording) and ``with`` (events to Redis Streams when
    redis-server is installed, else in-process, and every call recorded), alternated in
    the same run; voice-to-voice is the reports' ``first_audio_out``.

    ``.venv/bin/python perf/sidecars_events.py [--calls 100] [--turns 20] [--v2v-calls 2]
    [--v2v-turns 16] [--json PATH]``

Result
    One run, 2026-11-26, 2 cores shared with six other busy sessions (noisy), 100 calls x 20
    turns for part A, 2 concurrent calls x 16 turns per row for part B::

        us per turn (a 5 s turn: 250 caller frames, 150 bot frames, 20 tokens)
        mode        loop   side-car    cpu (process)  events  redis round trips/turn
        bare       274.3        0.0            274.3
        tap        355.8       81.5            355.8
        inprocess  373.1       98.8            373.1    4400
        recording  877.4      603.1           1872.3            (writer thread: ~1 ms/turn more)
        redis      452.0      177.7            452.0    4400   0.05 (batches of ~44 events)

        after the tap's short path for bot audio and one EVALSHA per Redis batch, same day:
        side-car loop us/turn: tap 52.1, inprocess 83.0, recording 417.7, redis 144.6

        voice-to-voice (first_audio_out), p50 / p90 ms, alternated in the same run
        without_0  809 / 1021    with_0  801 / 1178
        without_1  768 /  997    with_1  771 /  840

    The tap and the event bus cost ~0.1 ms of loop per turn (~0.15 ms with Redis Streams:
    the client's encoding and parsing). A batch is one round trip: bulk, 0.05 per turn; in a
    live call events come one at a time, so one round trip per event: a second run of part B
    (1 call, 6 turns, 17 events) made 2.67 round trips per turn, call start and end
    included. The recorder
    is the dearest side-car, 0.4-0.6 ms of loop per 5 s turn (about 0.01 % of a core per
    call), half of it appending caller frames. Voice-to-voice shows no difference with and without the
    side-cars (events to Redis Streams and every call recorded) beyond the run's noise
    (+/- 40 ms between rounds of the same configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "perf"))

from pipeline.context import CallContext  # noqa: E402
from pipeline.frames import (  # noqa: E402
    AudioFormat,
    BotStartedSpeaking,
    BotStoppedSpeaking,
    EventFrame,
    FinalTranscript,
    Frame,
    InputAudio,
    LLMToken,
    OutputAudio,
    ResponseEnd,
    Start,
    TTSText,
    UserStoppedSpeaking,
)
from pipeline.graph import Graph  # noqa: E402
from pipeline.processor import Processor  # noqa: E402
from processors.sidecars.events import EventBus, EventTransport, InProcessTransport  # noqa: E402
from processors.sidecars.facts import CallFacts, FactSink  # noqa: E402
from processors.sidecars.recording import CallRecording  # noqa: E402
from processors.sidecars.services import DataTier, install  # noqa: E402
from processors.sidecars.tap import CallMeta, FactTap  # noqa: E402

CALLER_FRAMES, BOT_FRAMES, TOKENS, CLAUSES = 250, 150, 20, 3
FRAME = bytes(640)  # 20 ms at 16 kHz


class Line(Processor):
    duplex = True
    produces = (InputAudio,)
    consumes = (OutputAudio,)


class Brain(Processor):
    produces = (FinalTranscript, LLMToken, TTSText)
    consumes = (InputAudio,)


class Voice(Processor):
    produces = (OutputAudio,)
    consumes = (TTSText,)


def call_graph() -> Graph:
    graph = Graph("bench")
    line = Line(name="line")
    graph.chain(line, Brain(name="brain"), Voice(name="voice"), line)
    return graph


class Driver:
    """Pushes one turn's frames through a graph's probes and events (what the nodes would)."""

    def __init__(self, graph: Graph, clock: list[int]) -> None:
        self.graph = graph
        self.clock = clock
        self.observers = {name: list(node._observers) for name, node in graph.nodes.items()}

    def frame(self, node: str, frame: Frame) -> None:
        for observe in self.observers[node]:
            observe(frame)

    def event(self, event: EventFrame) -> None:
        self.graph.broadcast(event)

    def turn(self, n: int) -> None:
        ms = 1_000_000
        for _ in range(CALLER_FRAMES):
            self.clock[0] += 20 * ms
            self.frame("line", InputAudio(FRAME, ts=self.clock[0]))
        self.event(UserStoppedSpeaking(turn=n, ts=self.clock[0]))
        self.frame("brain", FinalTranscript("I would like to file a claim for my car", turn=n, ts=self.clock[0]))
        for i in range(TOKENS):
            self.frame("brain", LLMToken(f" word{i}", turn=n, ts=self.clock[0]))
        for i in range(CLAUSES):
            self.frame("brain", TTSText(f"Clause number {i} of the answer.", turn=n, ts=self.clock[0]))
        for _ in range(BOT_FRAMES):
            self.frame("voice", OutputAudio(FRAME, turn=n, ts=self.clock[0]))
        self.frame("voice", ResponseEnd(turn=n))
        self.event(BotStartedSpeaking(turn=n, ts=self.clock[0]))
        self.clock[0] += BOT_FRAMES * 20 * ms
        self.event(BotStoppedSpeaking(turn=n, played_ms=BOT_FRAMES * 20.0, heard_text="The answer.",
                                      ts=self.clock[0]))


async def part_a(mode: str, calls: int, turns: int, redis_url: str | None, folder: Path) -> dict[str, Any]:
    bus: EventBus | None = None
    transport: EventTransport | None = None
    if mode == "inprocess":
        inproc = InProcessTransport()
        inproc.subscribe("count", lambda event: None)
        transport = inproc
    elif mode == "redis":
        from redis.asyncio import Redis

        from processors.sidecars.events_redis import RedisStreamsTransport

        assert redis_url is not None
        transport = RedisStreamsTransport(Redis.from_url(redis_url), maxlen=100_000)
    if transport is not None:
        bus = EventBus(transport, maxsize=1_000_000)
        await bus.start()
    emitted = 0
    started_cpu, started_loop, started_wall = time.process_time(), time.thread_time(), time.perf_counter()
    for c in range(calls):
        graph = call_graph()
        clock = [0]
        ctx = CallContext(f"bench-{mode}-{c}")
        now: Callable[[], float] = lambda clock=clock: clock[0] / 1e6  # noqa: E731
        sinks: list[FactSink] = [bus.sink()] if bus is not None else []
        tap = facts = recording = None
        if mode != "bare":
            facts = CallFacts(ctx.call_id, sinks, now)
            tap = FactTap(graph, facts, CallMeta(caller="+15550100", pipeline="bench"))
            if mode == "recording":
                recording = CallRecording(graph, ctx, facts, folder / f"{c}.wav", started_ns=0)
                graph.probe("line", recording._on_caller)
                graph.probe("voice", recording._on_bot)
                graph.watch_events(recording._on_event)
        driver = Driver(graph, clock)
        driver.frame("line", AudioFormat(16000, stream="in"))
        driver.frame("voice", AudioFormat(16000, stream="out"))
        driver.event(Start(call_id=ctx.call_id))
        for n in range(1, turns + 1):
            driver.turn(n)
        if recording is not None:
            await recording.aclose()
        if tap is not None and facts is not None:
            tap.end("eos", clock[0] / 1e6)
            emitted += facts.emitted
            await facts.aclose()
        await asyncio.sleep(0)  # let the bus's task run between calls, as it would between frames
    if bus is not None:
        await bus.wait_sent(bus.queued, timeout=60)
    loop = time.thread_time() - started_loop  # the loop's thread only: the recorder's writer thread is not in it
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started_wall
    n = calls * turns
    out: dict[str, Any] = {"mode": mode, "turns": n, "loop_us_per_turn": round(loop / n * 1e6, 1),
                           "cpu_us_per_turn": round(cpu / n * 1e6, 1), "wall_us_per_turn": round(wall / n * 1e6, 1),
                           "facts": emitted}
    if bus is not None:
        out.update(events=bus.sent, dropped=bus.dropped)
        round_trips = getattr(bus.transport, "round_trips", None)
        if round_trips is not None:
            out["redis_round_trips_per_turn"] = round(round_trips / (calls * turns), 4)
        await bus.aclose()
    return out


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    if shutil.which("redis-server") is None:
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    server.kill()
    return None


async def part_b(args: argparse.Namespace, redis_url: str | None, folder: Path) -> dict[str, Any]:
    import v2v

    path = v2v.pipeline_file(folder, "after")
    runs: dict[str, Any] = {}
    for rnd in range(args.v2v_rounds):
        for mode in ("without", "with"):
            tier = DataTier()
            if mode == "with":
                transport: EventTransport
                if redis_url is not None:
                    from redis.asyncio import Redis

                    from processors.sidecars.events_redis import RedisStreamsTransport

                    transport = RedisStreamsTransport(Redis.from_url(redis_url))
                else:
                    inproc = InProcessTransport()
                    inproc.subscribe("count", lambda event: None)
                    transport = inproc
                tier = DataTier(events=EventBus(transport), recordings=folder / f"rec-{rnd}")
            previous = install(tier)
            await tier.start()
            try:
                reports = await v2v.run_mode(path, args.v2v_calls, args.v2v_turns)
            finally:
                await tier.aclose()  # every event sent (bounded wait): the counters are final
                install(previous)
            digest = v2v.digest(reports)
            key = f"{mode}_{rnd}"
            runs[key] = {"mode": mode, "turns": digest["turns"], "v2v_ms": digest["v2v_ms"],
                         "errors": digest["errors"]}
            if tier.events is not None:
                turns = max(1, sum(len(r["turns"]) for r in reports))
                runs[key]["events"] = tier.events.sent
                round_trips = getattr(tier.events.transport, "round_trips", None)
                if round_trips is not None:
                    runs[key]["redis_round_trips_per_turn"] = round(round_trips / turns, 2)
            print(f"... v2v {key}: {digest['v2v_ms']}", file=sys.stderr, flush=True)
    return runs


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = start_redis(folder)
        redis_url = server[1] if server else None
        try:
            modes = ["bare", "tap", "inprocess", "recording"] + (["redis"] if redis_url else [])
            rows = {}
            for mode in modes:
                rows[mode] = await part_a(mode, args.calls, args.turns, redis_url, folder)
                print(f"... {mode}: {rows[mode]}", file=sys.stderr, flush=True)
            bare, bare_cpu = rows["bare"]["loop_us_per_turn"], rows["bare"]["cpu_us_per_turn"]
            for row in rows.values():
                row["side_car_loop_us_per_turn"] = round(row["loop_us_per_turn"] - bare, 1)
                row["side_car_cpu_us_per_turn"] = round(row["cpu_us_per_turn"] - bare_cpu, 1)
            result: dict[str, Any] = {"per_turn": rows, "redis": redis_url is not None}
            if args.v2v_turns:
                result["v2v"] = await part_b(args, redis_url, folder)
        finally:
            if server is not None:
                server[0].kill()
                server[0].wait()
    return result


def render(result: dict[str, Any]) -> str:
    lines = ["us per turn: on the loop's thread (loop), the whole process (cpu); side-car = minus bare",
             f"{'mode':<11}{'turns':>7}{'loop':>9}{'side-car':>10}{'cpu':>9}{'side-car':>10}{'events':>8}"
             f"{'redis rt/turn':>15}"]
    for row in result["per_turn"].values():
        lines.append(f"{row['mode']:<11}{row['turns']:>7}{row['loop_us_per_turn']:>9}"
                     f"{row['side_car_loop_us_per_turn']:>10}{row['cpu_us_per_turn']:>9}"
                     f"{row['side_car_cpu_us_per_turn']:>10}{row.get('events', '-'):>8}"
                     f"{row.get('redis_round_trips_per_turn', '-'):>15}")
    if "v2v" in result:
        lines += ["", "voice-to-voice (first_audio_out, ms): p50 / p90 (n)"]
        for key, run in result["v2v"].items():
            v = run["v2v_ms"]
            cell = f"{v['p50']:.0f} / {v['p90']:.0f} ({v['n']})" if v.get("n") else "-"
            extra = (f"  events {run['events']}, redis round trips/turn {run.get('redis_round_trips_per_turn', '-')}"
                     if "events" in run else "")
            lines.append(f"  {key:<12}{cell}{extra}" + (f"  errors: {run['errors'][:2]}" if run["errors"] else ""))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--v2v-calls", type=int, default=2)
    parser.add_argument("--v2v-turns", type=int, default=16, help="0: skip the voice-to-voice part")
    parser.add_argument("--v2v-rounds", type=int, default=2, help="without/with pairs, alternated")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from voicegraph.runtime import run

    result = run(main(args))
    print(render(result), end="")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
