"""The server process of perf/acs_density.py: ``/acs/media`` for one pipeline, with probes.

A perf-only wrapper, not a product entry point: it serves the real media route
(``transports.acs.route.media_route``, the dev switch that admits sockets without a token
turned on) for the pipeline under test, on uvicorn with uvloop, and adds what the density
benchmark reads without changing the app:

* **loop lag**, at no extra wake-up: a tick callback subscribed first to the worker's
  shared pacer (``transports.pacer``) records, at each 20 ms tick, how late the tick ran
  after its slot. That is the event loop's lag as the audio sees it.
* **outbound frames**: an ASGI wrapper around each media socket's ``send`` counts the bot
  ``AudioData`` and ``StopAudio`` messages and how long after the current tick's slot each
  frame went on the wire. A frame is *late* when it is sent more than one slot (20 ms)
  after its slot; a frame that is not on the wire when the next tick comes makes that tick
  skip the call (the transport's ``slots_missed``), read from each call's transport.
  Both count as missed frames, and so does every slot the pacer skipped whole
  (``missed_slots``: the loop slept through it; each playing call lost a frame).
* ``GET /perf/stats`` answers the counters since the last ``?reset=1``, with the process's
  CPU time and RSS, and the TTS cache's counters.

    python perf/acs_server.py --pipeline config/pipelines/acs_media_only.yaml --fd 3 [--profile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import resource
import signal
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The dev switch that admits media sockets without a token; both names, before and after
# the ACS auth work renamed it. Read when the route is made, so set before.
for _name in ("VOICEGRAPH_ACS_MEDIA_NO_AUTH", "VOICEGRAPH_ACS_NO_AUTH"):
    os.environ[_name] = "1"

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from pipeline.clock import MonotonicClock  # noqa: E402
from pipeline.offload import blocking_executor  # noqa: E402
from transports.acs.media import AcsMediaTransport  # noqa: E402
from transports.acs.route import media_route  # noqa: E402
from transports.acs.sessions import CallSession, CallSessions  # noqa: E402
from transports.pacer import TickCallback, pacer_for  # noqa: E402

PERIOD_NS = 20_000_000
_AUDIO = ('{"Kind":"AudioData"', '{"kind":"audioData"')
_STOP = ('{"Kind":"StopAudio"', '{"kind":"stopAudio"')


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Probe:
    """The counters of one measurement window (see module docstring)."""

    def __init__(self) -> None:
        self.clock = MonotonicClock()
        self.slot_ns = 0
        self.tick: TickCallback | None = None
        self.reset()

    def reset(self) -> None:
        self.lags_ms: list[float] = []
        self.send_late_ms: list[float] = []
        self.frames_sent = 0
        self.frames_late = 0
        self.stops_sent = 0
        self.ended_slots_missed = 0
        self.ended: Counter[str] = Counter()
        self.errors = 0
        self.pacer0 = self.pacer_stats() if self.tick is not None else {"missed_slots": 0, "late_ticks": 0}
        self.cpu0 = _cpu_s()
        self.wall0 = time.monotonic()

    def start(self) -> None:
        """Subscribe to the shared pacer (first, so the lag is the tick's own)."""
        if self.tick is None:
            self.tick = pacer_for(self.clock).every_tick(self._on_tick)
            self.pacer0 = self.pacer_stats()

    def _on_tick(self, slot_ns: int) -> None:
        # Against the slot after the previous tick's: when the loop slept through slots the
        # pacer skips to the latest one, and the lag would read under a period.
        due = self.slot_ns + PERIOD_NS if self.slot_ns else slot_ns
        self.slot_ns = slot_ns
        # asyncio may run a timer up to its clock resolution early: early is no lag.
        self.lags_ms.append(max(0.0, (self.clock.now_ns() - due) / 1e6))

    def on_send(self, text: str) -> None:
        if text.startswith(_AUDIO):
            self.frames_sent += 1
            late = (self.clock.now_ns() - self.slot_ns) / 1e6
            self.send_late_ms.append(late)
            if late > PERIOD_NS / 1e6:
                self.frames_late += 1
        elif text.startswith(_STOP):
            self.stops_sent += 1

    def pacer_stats(self) -> dict[str, Any]:
        s = pacer_for(self.clock).stats()
        return {"ticks": s.ticks, "late_ticks": s.late_ticks, "missed_slots": s.missed_slots}


class ProbedSessions(CallSessions):
    """The registry of calls, also keeping what the probe reads from each call's transport."""

    def __init__(self, probe: Probe) -> None:
        super().__init__()
        self.probe = probe
        self.live_sessions: set[CallSession] = set()
        self.started = 0

    def admit(self, call_connection_id: str) -> CallSession:
        session = super().admit(call_connection_id)
        self.live_sessions.add(session)
        self.started += 1
        return session

    def end(self, session: CallSession, reason: str = "ended") -> bool:
        if session in self.live_sessions:
            self.live_sessions.discard(session)
            self.probe.ended_slots_missed += slots_missed(session)
            result = session.result
            self.probe.ended[result.reason if result is not None else "not started"] += 1
            self.probe.errors += len(result.errors) if result is not None else 1
        return super().end(session, reason)


def slots_missed(session: CallSession) -> int:
    graph = session.graph
    if graph is None:
        return 0
    return sum(n.slots_missed for n in graph.nodes.values() if isinstance(n, AcsMediaTransport))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def create_app(pipeline: Path) -> Starlette:
    """The media route for ``pipeline``, its socket sends observed, and ``/perf/stats``."""
    probe = Probe()
    sessions = ProbedSessions(probe)

    async def stats(request: Request) -> JSONResponse:
        probe.start()
        now_cpu, now = _cpu_s(), time.monotonic()
        pacer = probe.pacer_stats()
        live_missed = sum(slots_missed(s) for s in sessions.live_sessions)
        from processors.tts.cache import worker_cache

        cache = worker_cache(1).stats()
        body = {
            "window_s": round(now - probe.wall0, 3),
            "cpu_cores": round((now_cpu - probe.cpu0) / max(now - probe.wall0, 1e-9), 3),
            "rss_mb": round(_rss_mb(), 1),
            "calls_live": len(sessions.live_sessions),
            "calls_started": sessions.started,
            "calls_ended": dict(probe.ended),
            "call_errors": probe.errors,
            "ticks": len(probe.lags_ms),
            "lag_ms": {"p50": round(pct(probe.lags_ms, 50), 3), "p99": round(pct(probe.lags_ms, 99), 3),
                       "max": round(max(probe.lags_ms, default=0.0), 3)},
            "frames_sent": probe.frames_sent,
            "frames_late": probe.frames_late,
            "send_late_ms": {"p50": round(pct(probe.send_late_ms, 50), 3),
                             "p99": round(pct(probe.send_late_ms, 99), 3),
                             "max": round(max(probe.send_late_ms, default=0.0), 3)},
            "stops_sent": probe.stops_sent,
            # Cumulative per call (the transports' own counters), not per window.
            "slots_missed_total": probe.ended_slots_missed + live_missed,
            "pacer_missed_slots": pacer["missed_slots"] - probe.pacer0["missed_slots"],
            "pacer_late_ticks": pacer["late_ticks"] - probe.pacer0["late_ticks"],
            "executor_queued": blocking_executor().queued,
            "tts_cache": {"entries": cache.entries, "mb": round(cache.bytes / 1e6, 2), "hits": cache.hits,
                          "misses": cache.misses},
        }
        if request.query_params.get("reset") == "1":
            probe.reset()
        return JSONResponse(body)

    inner = Starlette(routes=[media_route(sessions, pipeline), Route("/perf/stats", stats)])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await inner(scope, receive, send)
            return
        probe.start()

        async def observed_send(message: dict[str, Any]) -> None:
            text = message.get("text")
            if text is not None:
                probe.on_send(text)
            await send(message)

        await inner(scope, receive, observed_send)

    return app  # type: ignore[return-value]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, required=True)
    parser.add_argument("--fd", type=int, help="a listening socket handed over by the parent")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the whole run here")
    args = parser.parse_args()
    import uvicorn

    app = create_app(args.pipeline.resolve())
    config = uvicorn.Config(app, port=args.port, loop="uvloop", lifespan="off", log_level="warning",
                            ws_max_size=1 << 20)
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler it found:
    # make that one return, so the profile below is written and the exit is clean.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    try:
        if args.fd is None:
            server.run()
        else:
            sock = socket.socket(fileno=args.fd)
            server.run(sockets=[sock])
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
