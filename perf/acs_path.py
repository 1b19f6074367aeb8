"""The ACS path against the local transport: what does the wire add to a spoken call?

Question
    Through the ACS path (a call rung through Event Grid, answered through the SDK, its
    media over the WebSocket: the media caller -> /acs/media -> the call's graph -> the
    caller), how long from the end of the caller's line to the first bot frame the caller
    receives (voice-to-voice), and from the caller's voice onset over the bot to the bot's
    audio being stopped (barge-in reaction)? How much do both add to the same pipeline run
    with the local transport (``SpeechCaller``, no wire)? Target: the ACS path adds under
    10 ms.

Method
    ``config/pipelines/local.yaml`` (webrtcvad, pocketsphinx, rules brain, Piper) on both
    paths, in one process and one event loop (uvloop), with the same caller audio: the
    lines are rendered once (Piper, the caller's voice) and both callers say the same
    ``Utterance`` s. Local: the pipeline as it is, its ``speech_caller`` scripted. ACS: the
    same file with the caller node swapped for an ``acs_media`` line (what ``voicegraph
    call --via acs`` serves), on an :class:`~voicegraph.acs_testbed.AcsTestbed` (our app and
    the local ACS on uvicorn, 127.0.0.1, free ports), each call rung through Event Grid and
    its media caller run by the peer's media hook, at real time.

    Fair comparison: one warm-up call per path first (models loaded, connections and
    caches warm; not measured); then ``--rounds`` rounds, each one call per path saying the
    same ``--turns`` lines, one call at a time, the order alternating (local first in even
    rounds, ACS first in odd ones) so drift in the machine's load hits both paths alike.
    Two passes: answers heard out (voice-to-voice), then the caller talking over each
    answer ``--interrupt-after`` ms after it starts (barge-in). Each turn is paired with
    the same line of the same round on the other path: the per-turn difference ACS minus
    local, and its median, is the figure least disturbed by load that varies over the run.

    Both measured on the caller's side, on the monotonic clock. Voice-to-voice: from the
    slot after the line's last frame went out to the first bot frame the caller got
    (local: heard by the ``SpeechCaller``; ACS: an ``AudioData`` received). Barge-in: from
    the slot of the line's first loud frame to the bot's audio cut (local: the flush,
    ``BargeInMeter``; ACS: ``StopAudio`` received). Also from the server's reports, the
    same on both paths: ``first_audio_out`` (the VAD's end of speech -> first bot frame on
    the line); and on the ACS path, ``barge_in_server_flush_ms``: the voice onset to the
    server's flush (its ``FlushStart``, after which ``StopAudio`` goes out at once). The
    caller shares the server's event loop here: whatever holds the loop when ``StopAudio``
    is sent (a decode holding the GIL) delays its reading by the caller, which a caller in
    another process (ACS) would not see; the gap between the two barge-in figures is that.

    ``.venv/bin/python perf/acs_path.py [--rounds 4] [--turns 5] [--json PATH]``

Result
    See the closing note of issue 13 and ``perf/results/acs_path.json`` (``make bench``).
    The machine is shared: run it twice and compare the paired medians, not single turns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import build_graph, load_pipeline  # noqa: E402
from pipeline.frames import FlushStart  # noqa: E402
from transports.acs.peer.caller import AcsMediaCaller  # noqa: E402
from transports.acs.peer.media_hook import CallerHook  # noqa: E402
from transports.acs.sessions import CallSession  # noqa: E402
from transports.local.script import Utterance, render_script  # noqa: E402
from transports.local.speech import SaidLine, SpeechCaller  # noqa: E402
from voicegraph.acs_call import AcsCallPlan, plan_acs_call  # noqa: E402
from voicegraph.acs_testbed import AcsTestbed  # noqa: E402
from voicegraph.call import CallOptions, find_caller, run_call_report  # noqa: E402
from voicegraph.report import CallRecorder  # noqa: E402

PIPELINE = ROOT / "config" / "pipelines" / "local.yaml"
LINES = (
    "I want to file a claim for my car accident",
    "What are your opening hours",
    "I had a crash on the highway yesterday",
    "When are you open on Saturday",
    "My car was damaged in an accident",
    "What time do you open",
    "I need to report an accident",
    "Are you open tomorrow",
)
PATHS = ("local", "acs")


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": round(statistics.median(values), 1), "p90": round(_pct(values, 90), 1),
            "min": round(min(values), 1), "max": round(max(values), 1)}


@dataclass
class CallFigures:
    """One call's figures, per line of its script (``None``: not measured on that line)."""

    voice_to_voice_ms: list[float | None] = field(default_factory=list)
    barge_in_ms: list[float | None] = field(default_factory=list)
    server_first_audio_out_ms: list[float] = field(default_factory=list)
    bot_frame_gaps_ms: list[float] = field(default_factory=list)
    late_frames: int = 0
    #: ACS only: per line, voice onset -> the server's flush (what ``StopAudio`` answers).
    server_flush_ms: list[float | None] = field(default_factory=list)


class TimedSpeechCaller(SpeechCaller):
    """The local caller, noting per line when it ended (the slot after its last frame) and
    the barge-in reaction measured while it was said."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line_ends: list[int] = []
        self.line_barge_in: list[float | None] = []

    def _say(self, said: SaidLine) -> Any:
        before = set(self.meter.reaction_ms)
        yield from super()._say(said)
        self.line_ends.append(self._slot)  # resumed one slot after the last frame
        new = [ms for turn, ms in self.meter.reaction_ms.items() if turn not in before]
        self.line_barge_in.append(new[0] if new else None)

    def voice_to_voice_ms(self) -> list[float | None]:
        out: list[float | None] = []
        for end in self.line_ends:
            heard = [ts for ts, _ in self.heard.frames if ts >= end]
            out.append((min(heard) - end) / 1e6 if heard else None)
        return out


def _server_first_audio(report: dict[str, Any]) -> list[float]:
    return [t["latency_ms"]["first_audio_out"] for t in report["turns"]
            if t["heard_text"] and t["latency_ms"]["first_audio_out"] is not None]


async def run_local_call(lines: tuple[Utterance, ...], interrupt_after: float | None) -> CallFigures:
    """One call of ``lines`` through the local transport."""
    graph = await asyncio.to_thread(lambda: build_graph(load_pipeline(PIPELINE, env={})))
    caller = find_caller(graph)
    assert isinstance(caller, SpeechCaller)
    timed = TimedSpeechCaller(caller.settings, name=caller.name)
    graph.nodes[caller.name] = timed  # same settings, same place: swapped before wiring
    timed.set_script(lines)
    report = await run_call_report(graph, CallOptions(pipeline=PIPELINE, timeout_s=600,
                                                      interrupt_after_ms=interrupt_after))
    return CallFigures(voice_to_voice_ms=timed.voice_to_voice_ms(), barge_in_ms=timed.line_barge_in,
                       server_first_audio_out_ms=_server_first_audio(report))


class AcsPath:
    """The ACS calls, placed one at a time on a testbed (:meth:`attach`); ``hook`` is the
    testbed's media hook, making each call's caller with the current call's lines."""

    def __init__(self, plan: AcsCallPlan) -> None:
        self.plan = plan
        self.settings = plan.caller
        self.hook = CallerHook(lambda connect: AcsMediaCaller(self.settings))
        self.recorders: dict[str, CallRecorder] = {}
        #: When each call's graph flushed the bot's audio (its clock: the monotonic clock, as the caller's).
        self.flushes: dict[str, list[int]] = {}
        self._bed: AcsTestbed | None = None

    def attach(self, bed: AcsTestbed) -> None:
        """Place calls on ``bed`` (opened with :attr:`hook` as its media hook)."""
        self._bed = bed
        bed.sessions.watch(self._record)

    def _record(self, session: CallSession) -> None:
        assert session.graph is not None
        self.recorders[session.call_connection_id] = CallRecorder(session.graph)
        flushes = self.flushes[session.call_connection_id] = []
        session.graph.watch_events(lambda event: flushes.append(event.ts) if isinstance(event, FlushStart) else None)

    async def call(self, lines: tuple[Utterance, ...], interrupt_after: float | None) -> CallFigures:
        """One call of ``lines`` through the ACS path."""
        assert self._bed is not None, "attach a testbed first"
        self.settings = replace(self.plan.caller, say=lines, interrupt_after_ms=interrupt_after)
        call_id = await self._bed.ring()
        await self._bed.finished(call_id)
        if call_id in self.hook.failures:
            raise RuntimeError(f"ACS call {call_id}: {self.hook.failures[call_id]}")
        caller = self.hook.callers[call_id]
        report = self.recorders[call_id].to_json()
        return CallFigures(voice_to_voice_ms=[x.voice_to_voice_ms for x in caller.lines],
                           barge_in_ms=[x.barge_in_ms for x in caller.lines],
                           server_first_audio_out_ms=_server_first_audio(report),
                           bot_frame_gaps_ms=caller.ear.spacing_ms(), late_frames=caller.ear.late_frames,
                           server_flush_ms=[_first_after(self.flushes[call_id], x.onset_ns, x.stop_audio_ns)
                                            if x.barge_in_ms is not None else None for x in caller.lines])


def _first_after(times: list[int], start_ns: int, end_ns: int) -> float | None:
    after = [t for t in times if start_ns <= t <= end_ns]
    return (after[0] - start_ns) / 1e6 if after else None


@contextlib.asynccontextmanager
async def acs_path(plan: AcsCallPlan) -> AsyncIterator[AcsPath]:
    """An :class:`AcsPath` on a testbed serving ``plan``'s pipeline, open for the block."""
    path = AcsPath(plan)
    with tempfile.TemporaryDirectory(prefix="acs-path-") as tmp:
        (Path(tmp) / "pipelines").mkdir()
        (Path(tmp) / "pipelines" / "acs.yaml").write_text(plan.pipeline_yaml)
        async with AcsTestbed(Path(tmp), path.hook, sample_rate=plan.caller.sample_rate) as bed:
            path.attach(bed)
            yield path


def plan() -> AcsCallPlan:
    """What the ACS path serves and how its caller behaves (blocking: loads the pipeline)."""
    return plan_acs_call(CallOptions(pipeline=PIPELINE, say=("x",)))


def _script(utterances: list[Utterance], r: int, turns: int) -> tuple[Utterance, ...]:
    return tuple(utterances[(r + k) % len(utterances)] for k in range(turns))


async def measure(acs: AcsPath, utterances: list[Utterance], rounds: int, turns: int,
                  interrupt_after: float | None) -> dict[str, list[CallFigures]]:
    """``rounds`` rounds of one call per path, the order alternating (see module docstring)."""
    calls: dict[str, list[CallFigures]] = {path: [] for path in PATHS}
    for r in range(rounds):
        lines = _script(utterances, r, turns)
        for path in (PATHS if r % 2 == 0 else PATHS[::-1]):
            figures = await (run_local_call(lines, interrupt_after) if path == "local"
                             else acs.call(lines, interrupt_after))
            calls[path].append(figures)
    return calls


def _paired(calls: dict[str, list[CallFigures]], key: str) -> list[float]:
    """ACS minus local, per line of each round measured on both paths."""
    out: list[float] = []
    for local, acs in zip(calls["local"], calls["acs"], strict=True):
        for a, b in zip(getattr(acs, key), getattr(local, key), strict=False):
            if a is not None and b is not None:
                out.append(a - b)
    return out


def summarise(v2v: dict[str, list[CallFigures]], barge: dict[str, list[CallFigures]], *, rounds: int,
              turns: int, interrupt_after: float) -> dict[str, Any]:
    """The JSON result of both passes."""
    result: dict[str, Any] = {"rounds": rounds, "turns_per_call": turns, "interrupt_after_ms": interrupt_after}
    for path in PATHS:
        result[path] = {
            "voice_to_voice_ms": _summary([x for c in v2v[path] for x in c.voice_to_voice_ms if x is not None]),
            "barge_in_ms": _summary([x for c in barge[path] for x in c.barge_in_ms if x is not None]),
            "server_first_audio_out_ms": _summary([x for c in v2v[path] for x in c.server_first_audio_out_ms]),
        }
    diffs = {"voice_to_voice_ms": _paired(v2v, "voice_to_voice_ms"), "barge_in_ms": _paired(barge, "barge_in_ms")}
    result["acs_minus_local_paired_ms"] = {k: _summary(v) for k, v in diffs.items()}
    result["acs"]["barge_in_server_flush_ms"] = _summary(
        [x for c in barge["acs"] for x in c.server_flush_ms if x is not None])
    gaps = sorted(g for c in v2v["acs"] + barge["acs"] for g in c.bot_frame_gaps_ms)
    result["acs_wire"] = {"bot_frame_gap_median_ms": round(statistics.median(gaps), 2) if gaps else None,
                          "bot_frame_gap_p90_ms": round(_pct(gaps, 90), 2) if gaps else None,
                          "late_frames_after_stop_audio": sum(c.late_frames for c in v2v["acs"] + barge["acs"])}
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    utterances = await asyncio.to_thread(render_script, LINES, sample_rate=16000, voice="piper")
    async with acs_path(await asyncio.to_thread(plan)) as acs:
        warm = (utterances[0],)
        await run_local_call(warm, None)  # warm-up: models loaded, caches warm (not measured)
        await acs.call(warm, None)
        v2v = await measure(acs, utterances, args.rounds, args.turns, None)
        barge = await measure(acs, utterances, args.rounds, args.turns, args.interrupt_after)
    return summarise(v2v, barge, rounds=args.rounds, turns=args.turns, interrupt_after=args.interrupt_after)


def render(result: dict[str, Any]) -> str:
    lines = [f"{result['rounds']} rounds x {result['turns_per_call']} turns per path, one call at a time, "
             "order alternating", "",
             "(ms)                          path    n   median     p90     min     max"]
    for key in ("voice_to_voice_ms", "barge_in_ms", "barge_in_server_flush_ms", "server_first_audio_out_ms"):
        for path in PATHS:
            s = result[path].get(key, {})
            if s.get("n"):
                lines.append(f"  {key:<27} {path:<5} {s['n']:>3} {s['median']:>8} {s['p90']:>7} {s['min']:>7} "
                             f"{s['max']:>7}")
    lines += ["", "ACS minus local, paired by line (ms)   n   median     p90     min     max"]
    for key, s in result["acs_minus_local_paired_ms"].items():
        if s.get("n"):
            lines.append(f"  {key:<35} {s['n']:>3} {s['median']:>+8} {s['p90']:>+7} {s['min']:>+7} {s['max']:>+7}")
    w = result["acs_wire"]
    lines.append(f"bot frames over the wire: gap median {w['bot_frame_gap_median_ms']} ms, p90 "
                 f"{w['bot_frame_gap_p90_ms']} ms; frames after StopAudio: {w['late_frames_after_stop_audio']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--interrupt-after", type=float, default=1000.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from voicegraph.runtime import run

    result = run(main(args))
    print(render(result), end="")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
