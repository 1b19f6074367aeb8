"""ACS density: how many concurrent simulated ACS calls one worker process on one core serves at real time.

Question
    With N phone calls on one worker (one process, one event loop, pinned to one core),
    does every call still get its bot audio on time, and what does a call cost in CPU and
    memory? For (a) the media path alone (``config/pipelines/acs_media_only.yaml``: the ACS
    codec, resampling, VAD/endpointing, barge-in, playout, engine, a keypad/turn-end rules
    brain and TTS from the worker's cache) and (b) the full local speech stack
    (``config/pipelines/acs.yaml``: pocketsphinx and Piper). Target for (a): >= 200 calls per
    core with zero missed frames, loop lag p99 < 10 ms, < 5 MB per call.

Method
    Per N, two processes on two cores, plus this one orchestrating (idle while measuring):

    * the server, ``perf/acs_server.py``: the real ``/acs/media`` route of the pipeline on
      uvicorn + uvloop, pinned to core 0 (``os.sched_setaffinity``), its listening socket
      made here on a free port and handed over; probes described there (pacer-tick lag,
      outbound sends, transports' skipped slots; ``GET /perf/stats``). A fresh server per N,
      so the memory of one N does not carry into the next.
    * the load driver, ``perf/acs_load.py``, pinned to core 1: N WebSocket callers on one
      loop, each sending ``AudioMetadata`` then ``AudioData`` every 20 ms, speaking, pressing
      keys and barging in (see its docstring), timestamping every bot frame.

    First one warm-up call (loads the models, fills the TTS cache), then the baseline RSS;
    then N callers connect over ``max(2, N/50)`` s, settle 3 s, and the window of
    ``--seconds`` is measured:

    * **missed frames**: server side, frames sent more than one 20 ms slot after their slot
      (``late``) plus ticks a call skipped because its previous frame was still not on the
      wire (``skipped``), plus ticks the pacer skipped whole (the loop slept through them;
      ``pacer skipped``: every playing call loses one); client side, the driver's count of
      bot frames arriving more than one slot after their place on the talk spurt's grid.
    * **loop lag**: how late the server's 20 ms pacer ticks ran, p50/p99/max.
    * **CPU**: the server's utime+stime from ``/proc/<pid>/stat`` over the window, in
      cores; the driver's own CPU too (it must stay well under a core).
    * **host contention**: the share of the window the server's loop thread was ready to
      run but another process held its core (``run_delay`` of ``/proc/<pid>/schedstat``):
      on a shared machine that, not our work, is what makes a frame late.
    * **RSS**: the server's ``VmRSS`` at the end of the window; MB per call is that minus
      the baseline after the warm-up, over N.

    On the media path, a step that breaks (missed frames over 1 % of those sent, lag p99
    over 50 ms, or calls refused) ends the curve; the speech curve's few steps all run.

    The speech stack runs each N twice, side by side: pocketsphinx on the server's executor
    threads (``stt.processes`` 0) and in worker processes (2, as ``acs.yaml`` says; set by
    ``VOICEGRAPH__STT__PROCESSES``). The workers inherit the server's core, so both hosts
    have the same CPU; their CPU and RSS are reported apart (``workers``; the third child
    is multiprocessing's resource tracker, a few MB).

    ``.venv/bin/python perf/acs_density.py [--stack media speech] [--calls 25 50 100 200 300]
    [--speech-calls 1 2 4 8] [--stt-processes 0 2] [--seconds 20] [--json PATH]``

Result
    2 cores shared with five other sessions' work (load average 2.5-3.6 during the run),
    Python 3.11.7, uvloop, uvicorn 0.54 (websockets sans-I/O), 20 s windows, ``--phases 4``.
    "missed" is server-side late + skipped, then (+ ticks the pacer skipped whole); "client"
    the driver's count; "waited" the share of the window the server's loop waited for its
    core while another process held it::

        stack   N   missed (+pacer)  client  lag p50/p99/max ms   cores  waited  RSS MB  MB/call
        media   25      0 (+0)          2    0.15 /  2.7 /  6.5   0.111  0.03     268    0.36
        media   50      0 (+0)          6    0.24 /  3.8 /  4.2   0.213  0.06     277    0.39
        media  100    150 (+1)        159    0.18 / 10.1 / 23.2   0.382  0.15     297    0.40
        media  200   5952 (+14)      4918    2.41 / 21.5 / 27.0   0.668  0.23     333    0.37
        speech   1      0 (+5)          0    0.14 /  4.7 / 48.8   0.053  0.02     408   11.7
        speech   2      0 (+18)         2    0.19 / 21.3 / 65.8   0.196  0.04     464   24.8
        speech   4      2 (+134)       70    0.37 / 66.3 / 519    0.406  0.16     647   62.8
        speech   8     20 (+264)      209    0.30 / 121  / 646    0.631  0.15     865   57.6

    The media path costs 3.3-4.4 ms of CPU per call-second (0.67 cores for 200 calls) and
    0.4 MB per call, but on this shared host it misses frames from 100 calls on: the loop
    waited 15-23 % of the window for its core, which the other sessions held, and 200
    calls' outbound frames all leave at the one pacer tick. A quiet core is needed to
    settle the 200-call target. The speech stack (pocketsphinx, Piper) stalls the loop for
    up to 0.65 s with 4-8 calls (pocketsphinx decodes holding the GIL): every other call's
    audio stops with it.

    STT on threads vs in 2 worker processes (``processors/stt/procpool.py``, workers at
    nice +5), the speech stack, two runs back to back (load average 0.8-2.6: other
    sessions' tests ran meanwhile), 20 s windows. Lag is the pacer's tick lag p99 / max,
    "skipped" the ticks the pacer skipped whole (each costs every playing call a frame),
    CPU the server's cores + the workers'::

        N  STT      lag p99 / max ms      skipped     client missed   CPU            waited
                    run 1      run 2      run1 run2   run 1  run 2    run 1
        1  threads   8.5 /  54   2.0 /  28    7   3    0/511  0/420   0.084
        1  procs     5.0 /   5   5.6 /  20    0   0    0/349  1/399   0.035 + 0.014
        2  threads   9.8 /  59  10.1 /  57    8   9    0/705  3/991   0.129
        2  procs     3.5 /   6   3.9 /   5    0   0    0/738  0/700   0.153 + 0.119
        4  threads  33.8 / 229  50.7 / 385   33  63   25/1780 17/1322 0.352
        4  procs     2.4 /   4   3.6 /   8    0   0    0/1950 0/1635  0.225 + 0.157
        8  threads  49.4 / 229  64.8 / 529  106 143  130/3323 113/2930 0.682
        8  procs     3.2 /   5   5.7 / 412    0  31    0/2832 42/2600 0.346 + 0.336

    In worker processes the loop lag p99 stays at 2.4-5.7 ms up to 8 speaking calls, where
    threads reach 34-65 ms with stalls of 0.23-0.53 s; the CPU is about the same. The one
    0.41 s stall with processes (N=8, run 2) came while the server's loop waited 10.5 % of
    the window for its core (others' load). The first two runs, with the workers at the
    server's own priority, were worse at N=2 (p99 25-39 ms, the loop waiting 7.8 % of the
    window behind its own workers on the shared core), hence nice +5. Memory: the server
    drops from 420-870 MB to 240-290 MB, the two workers hold 480-785 MB (each a Python,
    the model and its decoders).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PIPELINES = {"media": ROOT / "config" / "pipelines" / "acs_media_only.yaml",
             "speech": ROOT / "config" / "pipelines" / "acs.yaml"}
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpus() -> tuple[int, int]:
    """The cores for the server and the driver (the first two this process may use)."""
    mine = sorted(os.sched_getaffinity(0))
    return (mine[0], mine[1]) if len(mine) > 1 else (mine[0], mine[0])


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15)


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def proc_run_delay_s(pid: int) -> float:
    """Time the process's main thread (the event loop) was ready to run but waiting for the
    core (another process had it): host contention, not our work."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the STT worker processes of a server)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError):
                continue  # it ended meanwhile
    return found


def family_cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += proc_cpu_s(pid)
        except OSError:
            continue
    return total


def get_stats(port: int, *, reset: bool = False, timeout: float = 10.0) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/perf/stats" + ("?reset=1" if reset else "")
    with urllib.request.urlopen(url, timeout=timeout) as response:
        result: dict[str, Any] = json.load(response)
        return result


class Server:
    """The server process on a free port, pinned to one core."""

    def __init__(self, pipeline: Path, cpu: int, profile: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        cmd = [sys.executable, str(HERE / "acs_server.py"), "--pipeline", str(pipeline), "--fd",
               str(self.sock.fileno())]
        if profile is not None:
            cmd += ["--profile", str(profile)]
        self.proc = subprocess.Popen(cmd, pass_fds=(self.sock.fileno(),), cwd=ROOT, env={**os.environ, **(env or {})},
                                     preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
        self.sock.close()  # the child holds it now
        deadline = time.monotonic() + 60
        while True:
            try:
                get_stats(self.port, timeout=2)
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start (exit {self.proc.poll()})") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def drive(port: int, calls: int, seconds: float, cpu: int, *, settle_s: float, seed: int, phases: int = 4,
          on_line: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the driver; call ``on_line[line]()`` when it prints ``window-start``/``window-end``."""
    cmd = [sys.executable, str(HERE / "acs_load.py"), "--url", f"ws://127.0.0.1:{port}/acs/media",
           "--calls", str(calls), "--seconds", str(seconds), "--ramp-s", str(max(2.0, calls / 50) if calls > 1 else 0),
           "--settle-s", str(settle_s), "--seed", str(seed), "--phases", str(phases)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    assert proc.stdout is not None
    result: dict[str, Any] = {}
    for line in proc.stdout:
        line = line.strip()
        if on_line and line in on_line:
            on_line[line]()
        elif line.startswith("{"):
            result = json.loads(line)
    if proc.wait() != 0 or not result:
        raise RuntimeError(f"the load driver failed (exit {proc.returncode})")
    return result


def measure(stack: str, n: int, args: argparse.Namespace, server_cpu: int, driver_cpu: int,
            stt_processes: int | None = None) -> dict[str, Any]:
    """One point of the curve: a fresh server, a warm-up call, then N calls measured.

    ``stt_processes`` overrides the speech pipeline's ``stt.processes`` (0: decode on the
    server's executor threads); the STT worker processes inherit the server's core.
    """
    profile = args.profile if args.profile and n == max(args.calls) else None
    env = {} if stt_processes is None else {"VOICEGRAPH__STT__PROCESSES": str(stt_processes)}
    server = Server(PIPELINES[stack], server_cpu, profile, env)
    try:
        drive(server.port, 1, 1.0, driver_cpu, settle_s=args.warmup_s, seed=args.seed)  # models, cache
        time.sleep(1.0)  # the warm-up call ends
        rss0 = proc_rss_mb(server.proc.pid)
        marks: dict[str, Any] = {}

        def start() -> None:
            marks["slots0"] = get_stats(server.port, reset=True)["slots_missed_total"]
            marks["workers"] = children(server.proc.pid)
            marks["wcpu0"] = family_cpu_s(marks["workers"])
            marks["cpu0"], marks["t0"] = proc_cpu_s(server.proc.pid), time.monotonic()
            marks["wait0"] = proc_run_delay_s(server.proc.pid)

        def end() -> None:
            marks["cpu1"], marks["t1"] = proc_cpu_s(server.proc.pid), time.monotonic()
            marks["wait1"] = proc_run_delay_s(server.proc.pid)
            marks["rss"] = proc_rss_mb(server.proc.pid)
            marks["wcpu1"] = family_cpu_s(marks["workers"])
            marks["wrss"] = sum(proc_rss_mb(pid) for pid in children(server.proc.pid))
            marks["stats"] = get_stats(server.port)

        driver = drive(server.port, n, args.seconds, driver_cpu, settle_s=args.settle_s, seed=args.seed,
                       phases=args.phases,
                       on_line={"window-start": start, "window-end": end})
        after = get_stats(server.port)
        deadline = time.monotonic() + 10
        while after["calls_live"] and time.monotonic() < deadline:  # the calls end
            time.sleep(0.2)
            after = get_stats(server.port)
    finally:
        server.stop()
    stats = marks["stats"]
    skipped = stats["slots_missed_total"] - marks["slots0"]
    missed = stats["frames_late"] + skipped
    return {
        "stack": stack,
        "stt_processes": stt_processes,
        "calls": n,
        "connected": driver["connected"],
        "frames_sent": stats["frames_sent"],
        "missed_frames": missed,
        "frames_late": stats["frames_late"],
        "slots_skipped": skipped,
        "pacer_skipped": stats["pacer_missed_slots"],
        "client_missed": driver["bot_frames_missed"],
        "client_frames": driver["bot_frames"],
        "lag_ms": stats["lag_ms"],
        "send_late_ms": stats["send_late_ms"],
        "cpu_cores": round((marks["cpu1"] - marks["cpu0"]) / (marks["t1"] - marks["t0"]), 3),
        # Share of the window the loop was runnable but another process held the core.
        "runqueue_wait": round((marks["wait1"] - marks["wait0"]) / (marks["t1"] - marks["t0"]), 3),
        "rss_mb": round(marks["rss"], 1),
        # The STT worker processes (none when decoding on threads): their CPU and memory.
        "workers": len(marks["workers"]),
        "workers_cpu_cores": round((marks["wcpu1"] - marks["wcpu0"]) / (marks["t1"] - marks["t0"]), 3),
        "workers_rss_mb": round(marks["wrss"], 1),
        "rss_base_mb": round(rss0, 1),
        "mb_per_call": round((marks["rss"] - rss0) / n, 2),
        "stop_audio": driver["stop_audio"],
        "barge_ins": driver["barge_ins"],
        "barge_reaction_ms": driver["barge_reaction_ms"],
        "calls_ended": after["calls_ended"],
        "call_errors": after["call_errors"],
        "tts_cache": stats["tts_cache"],
        "driver": driver["driver"],
        "closed_by_server": driver["closed_by_server"],
        "connect_failures": driver["connect_failures"],
    }


def broken(row: dict[str, Any]) -> bool:
    sent = max(row["frames_sent"], 1)
    return (row["missed_frames"] + row["pacer_skipped"] > 0.01 * sent or row["lag_ms"]["p99"] > 50
            or row["connected"] < row["calls"])


def print_row(row: dict[str, Any]) -> None:
    lag = row["lag_ms"]
    host = "" if row["stt_processes"] is None else f" stt {'threads' if not row['stt_processes'] else 'procs'}"
    print(f"{row['stack']:6}{host} N={row['calls']:4} | missed {row['missed_frames']:5} (late {row['frames_late']}, "
          f"skipped {row['slots_skipped']}, pacer {row['pacer_skipped']}) of {row['frames_sent']:7} | client missed "
          f"{row['client_missed']:5} of {row['client_frames']:7} | lag p50 {lag['p50']:6.2f} p99 {lag['p99']:6.2f} "
          f"max {lag['max']:6.1f} ms | cpu {row['cpu_cores']:5.3f} | RSS {row['rss_mb']:7.1f} MB, "
          f"{row['mb_per_call']:5.2f} MB/call | workers {row['workers']} cpu {row['workers_cpu_cores']:5.3f} "
          f"RSS {row['workers_rss_mb']:6.1f} MB | waited {row['runqueue_wait']:5.3f} | "
          f"driver cpu {row['driver']['cpu_cores']:5.3f} | "
          f"barge {row['barge_reaction_ms']['p50']} ms | errors {row['call_errors']}", flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    server_cpu, driver_cpu = cpus()
    out: dict[str, Any] = {"seconds": args.seconds, "phases": args.phases, "server_cpu": server_cpu,
                           "driver_cpu": driver_cpu, "stacks": {}}
    for stack in args.stack:
        rows = []
        for n in (args.calls if stack == "media" else args.speech_calls):
            # The speech stack, once per STT host (threads, worker processes) at each N.
            for stt in ([None] if stack == "media" else args.stt_processes):
                row = measure(stack, n, args, server_cpu, driver_cpu, stt)
                print_row(row)
                rows.append(row)
            if stack == "media" and broken(rows[-1]):  # the speech curve is short: all of it is shown
                print(f"{stack}: broke at N={n}; stopping this curve", flush=True)
                break
        out["stacks"][stack] = rows
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", nargs="+", choices=sorted(PIPELINES), default=["media", "speech"])
    parser.add_argument("--calls", nargs="+", type=int, default=[25, 50, 100, 200, 300])
    parser.add_argument("--speech-calls", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--stt-processes", nargs="+", type=int, default=[0, 2],
                        help="the speech stack's STT hosts, side by side: 0 = executor threads, N = N worker processes")
    parser.add_argument("--seconds", type=float, default=20.0, help="the measurement window per N")
    parser.add_argument("--warmup-s", type=float, default=8.0, help="the warm-up call (models load, cache fills)")
    parser.add_argument("--settle-s", type=float, default=3.0, help="after the callers connected, before the window")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--phases", type=int, default=4,
                        help="the callers' streams spread over this many phases of a frame (1: all in step)")
    parser.add_argument("--profile", type=Path, help="cProfile the server at the largest media N into this file")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = run(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
