"""The load driver of perf/acs_density.py: N simulated ACS callers on one asyncio loop.

A separate process from the server, as ACS is. Each caller opens a WebSocket to the
server's ``/acs/media`` (no token: the server runs with its development switch), sends
``AudioMetadata`` and then one ``AudioData`` every 20 ms at real time, written with the
field names ACS uses (``kind``/``audioData``/``timestamp``/``participantRawID``/``data``/
``silent``, camelCase as ACS sends them), and reads what the server sends back.

Kept light so that it is never the bottleneck: one loop (uvloop), one ticker for all
callers (not a task per caller per frame; it wakes ``--phases`` times per 20 ms frame and
serves a share of the callers each time, since independent calls' streams are not in
step: ``--phases 1`` sends every caller's frame at the same instant, the worst case),
audio base64-encoded once at start and shared by every caller (a message is four string
concatenations: timestamp, speaker, data, flag), no compression, and bot audio
recognised by its first bytes, not parsed. Its own CPU time and tick lag are reported.

Talk pattern, per caller (seeded, so runs repeat): the caller hears the greeting, then in
a loop waits a think time after the bot stops (0.3-1.2 s), and either speaks a line
(speech burst; endpointing ends the turn and the bot answers), presses keys (``DtmfData``:
``1``, ``2`` or a policy number ``4521#``; the bot answers the key), or stays silent a
little longer. While the bot speaks, the caller barges in on about a third of the
answers, 0.6-1.5 s into them (the server must send ``StopAudio`` and stop).

Measured per caller, from the bot's ``AudioData`` arrival times: a *talk spurt* is a run of
frames with gaps under 500 ms and no ``StopAudio``; within a spurt each frame is expected
20 ms after the previous on a grid anchored at the earliest phase seen, and a frame
arriving more than one slot (20 ms) after its grid time counts as one missed frame (the
grid then re-anchors, so one skipped slot is counted once, not for every later frame).
Also the barge-in reaction (first speech frame sent over bot audio -> ``StopAudio``
received).

Protocol with the parent on stdout: ``window-start`` when every caller has connected and
the calls settled, ``window-end`` after ``--seconds``; then the JSON result on one line.

    python perf/acs_load.py --url ws://127.0.0.1:PORT/acs/media --calls 50 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FRAME_MS = 20
LINES = ("I want to file a claim for my car accident", "What are your opening hours", "Can I speak to an agent")
KEYS = ("1", "2", "4521#")
SPURT_GAP_S = 0.5


def metadata_message(rate: int, subscription: str) -> str:
    """ACS's ``AudioMetadata``, as the media streaming docs show it."""
    return json.dumps({"kind": "AudioMetadata", "audioMetadata": {
        "subscriptionId": subscription, "encoding": "PCM", "sampleRate": rate, "channels": 1,
        "length": rate * FRAME_MS // 1000 * 2}})


def audio_message(timestamp: str, participant: str, b64: str, silent: bool) -> str:
    """ACS's ``AudioData`` with already-encoded audio (the hot path: no JSON encoder)."""
    return ('{"kind":"AudioData","audioData":{"timestamp":"' + timestamp + '","participantRawID":"' + participant
            + '","data":"' + b64 + ('","silent":true}}' if silent else '","silent":false}}'))


def dtmf_message(timestamp: str, participant: str, digits: str) -> str:
    """ACS's ``DtmfData``."""
    return json.dumps({"kind": "DtmfData", "dtmfData": {"timestamp": timestamp, "participantRawID": participant,
                                                         "data": digits}})


def frames_b64(pcm: bytes, rate: int) -> list[str]:
    """``pcm`` cut into 20 ms frames (the last padded with silence), each base64-encoded."""
    size = rate * FRAME_MS // 1000 * 2
    pcm += bytes(-len(pcm) % size)
    return [base64.b64encode(pcm[i:i + size]).decode("ascii") for i in range(0, len(pcm), size)]


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Caller:
    """One simulated ACS caller: what it sends at each tick, and what it measured."""

    def __init__(self, index: int, lines: list[list[str]], silence: str, rng: random.Random) -> None:
        self.index = index
        self.participant = f"8:acs:perf-resource_{index:06d}"
        self.lines = lines
        self.silence = silence
        self.rng = rng
        self.ws: Any = None
        self.speaking: list[str] | None = None
        self.pos = 0
        self.quiet_until = 0.0  # no new action before this (think time)
        self.barge_at: float | None = None  # when to talk over the bot's current answer
        self.acted_at = 0.0
        # what came back
        self.measuring = False
        self.frames = 0
        self.missed = 0
        self.spurts = 0
        self.stops = 0
        self.barges = 0
        self.reactions_ms: list[float] = []
        self.barge_sent_at: float | None = None
        self.last_rx = 0.0
        self.spurt_start = 0.0
        self.spurt_n = 0
        self.grid = 0.0
        self.closed_by_server = False

    # --- receive ------------------------------------------------------------------------

    def on_message(self, text: str, now: float) -> None:
        if text.startswith(('{"Kind":"AudioData"', '{"kind":"audioData"')):
            if self.spurt_n == 0 or now - self.last_rx > SPURT_GAP_S:
                self._new_spurt(now)
            else:
                expected = self.grid + self.spurt_n * FRAME_MS / 1000
                late = now - expected
                if late > FRAME_MS / 1000:
                    if self.measuring:
                        self.missed += 1
                    self.grid = now - self.spurt_n * FRAME_MS / 1000  # re-anchor: count a skip once
                elif late < 0:
                    self.grid = now - self.spurt_n * FRAME_MS / 1000  # an earlier phase: the grid is that
            self.spurt_n += 1
            self.last_rx = now
            if self.measuring:
                self.frames += 1
        elif text.startswith(('{"Kind":"StopAudio"', '{"kind":"stopAudio"')):
            self.spurt_n = 0  # what follows is a new answer
            if self.measuring:
                self.stops += 1
                if self.barge_sent_at is not None:
                    self.reactions_ms.append((now - self.barge_sent_at) * 1000)
            self.barge_sent_at = None

    def _new_spurt(self, now: float) -> None:
        self.spurt_start = self.grid = now
        self.spurt_n = 0
        if self.measuring:
            self.spurts += 1
        if self.rng.random() < 0.33:  # talk over about a third of the answers
            self.barge_at = now + self.rng.uniform(0.6, 1.5)
        else:
            self.barge_at = None

    # --- send ---------------------------------------------------------------------------

    def next_messages(self, now: float, timestamp: str) -> list[str]:
        """What to send at this tick: one AudioData, sometimes a DtmfData before it."""
        out: list[str] = []
        bot_playing = self.spurt_n > 0 and now - self.last_rx < 0.1
        if self.speaking is None:
            if bot_playing:
                self.quiet_until = now + self.rng.uniform(0.3, 1.2)  # think time after the bot stops
                if self.barge_at is not None and now >= self.barge_at:
                    self.barge_at = None
                    self._speak(now)
                    if self.measuring:
                        self.barges += 1
                    self.barge_sent_at = now
            elif now >= self.quiet_until and (now - self.last_rx > 0.3 or now - self.acted_at > 8.0):
                roll = self.rng.random()
                if roll < 0.5:
                    self._speak(now)
                elif roll < 0.85:
                    out.append(dtmf_message(timestamp, self.participant, self.rng.choice(KEYS)))
                    self.acted_at = now
                    self.quiet_until = now + 3.0  # the answer should start well before
                else:
                    self.quiet_until = now + self.rng.uniform(0.5, 2.0)
        if self.speaking is not None:
            b64 = self.speaking[self.pos]
            self.pos += 1
            if self.pos >= len(self.speaking):
                self.speaking = None
                self.quiet_until = now + 3.0  # endpointing + the answer
            out.append(audio_message(timestamp, self.participant, b64, False))
        else:
            out.append(audio_message(timestamp, self.participant, self.silence, True))
        return out

    def _speak(self, now: float) -> None:
        self.speaking = self.rng.choice(self.lines)
        self.pos = 0
        self.acted_at = now


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    from transports.local.script import render_script

    loop = asyncio.get_running_loop()
    script = await loop.run_in_executor(None, lambda: render_script(LINES, sample_rate=args.rate))
    lines = [frames_b64(u.pcm, args.rate) for u in script]
    silence = frames_b64(bytes(args.rate * FRAME_MS // 1000 * 2), args.rate)[0]
    callers = [Caller(i, lines, silence, random.Random(args.seed * 100_003 + i)) for i in range(args.calls)]
    active: list[Caller] = []
    lags: list[float] = []
    stop = asyncio.Event()
    connect_failures: list[str] = []

    async def serve(caller: Caller, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            async with connect(args.url, compression=None, max_size=1 << 20, open_timeout=30,
                               ping_interval=None) as ws:
                caller.ws = ws
                await ws.send(metadata_message(args.rate, f"perf-{caller.index}"))
                active.append(caller)
                async for message in ws:
                    if isinstance(message, str):
                        caller.on_message(message, time.perf_counter())
                    if stop.is_set():
                        break
                caller.closed_by_server = not stop.is_set()
        except Exception as exc:  # a refused or dropped connection is a result, not a crash
            if not stop.is_set():
                connect_failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            if caller in active:
                active.remove(caller)

    async def ticker() -> None:
        # ``phases`` sub-ticks per frame: caller i sends in sub-tick i % phases, so the
        # calls' streams are out of phase with each other, as independent ACS calls are.
        phases = args.phases
        period = FRAME_MS / 1000 / phases
        slot = time.perf_counter()
        phase = 0
        while not stop.is_set():
            slot += period
            delay = slot - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            late = now - slot
            if late > period:  # slept through slots: skip them (as the server's pacer does)
                slot += (late // period) * period
            lags.append(late * 1000)
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            phase = (phase + 1) % phases
            for caller in tuple(active):
                if caller.index % phases != phase:
                    continue
                try:
                    for message in caller.next_messages(now, stamp):
                        await caller.ws.send(message)
                except Exception:
                    pass  # the reader sees the close

    ramp = args.ramp_s if args.calls > 1 else 0.0
    tasks = [asyncio.create_task(serve(c, ramp * i / max(args.calls, 1))) for i, c in enumerate(callers)]
    tick_task = asyncio.create_task(ticker())
    await asyncio.sleep(ramp + args.settle_s)
    connected = len(active)
    for caller in callers:
        caller.measuring = True
    lags.clear()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    print("window-start", flush=True)
    await asyncio.sleep(args.seconds)
    print("window-end", flush=True)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - wall0
    for caller in callers:
        caller.measuring = False
    still = len(active)
    tick_lags = list(lags)
    stop.set()
    for caller in tuple(active):
        try:
            await caller.ws.close()
        except Exception:
            pass
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=30)
    tick_task.cancel()
    reactions = [r for c in callers for r in c.reactions_ms]
    cpu = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / wall
    return {
        "calls": args.calls,
        "connected": connected,
        "connected_at_end": still,
        "closed_by_server": sum(c.closed_by_server for c in callers),
        "connect_failures": len(connect_failures),
        "connect_errors": sorted(set(connect_failures))[:5],
        "window_s": round(wall, 2),
        "bot_frames": sum(c.frames for c in callers),
        "bot_frames_missed": sum(c.missed for c in callers),
        "bot_spurts": sum(c.spurts for c in callers),
        "stop_audio": sum(c.stops for c in callers),
        "barge_ins": sum(c.barges for c in callers),
        "barge_reaction_ms": {"n": len(reactions), "p50": round(pct(reactions, 50), 1),
                              "p90": round(pct(reactions, 90), 1)},
        "driver": {"cpu_cores": round(cpu, 3), "tick_lag_ms": {"p50": round(pct(tick_lags, 50), 2),
                                                               "p99": round(pct(tick_lags, 99), 2),
                                                               "max": round(max(tick_lags, default=0.0), 2)}},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0, help="the measurement window")
    parser.add_argument("--ramp-s", type=float, default=5.0, help="callers connect spread over this")
    parser.add_argument("--settle-s", type=float, default=3.0, help="after the ramp, before the window")
    parser.add_argument("--rate", type=int, default=16000, choices=(16000, 24000))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--phases", type=int, default=4,
                        help="callers' streams spread over this many phases of the 20 ms frame (1: all in step)")
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
