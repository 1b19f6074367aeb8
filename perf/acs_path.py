"""The ACS path against the local transport: what does the wire add to a spoken call?

Question
    Through the ACS path (the media caller -> WebSocket -> the server's /acs/media route
    -> the call's graph -> WebSocket -> the caller), how long from the end of the caller's
    line to the first bot frame the caller receives (voice-to-voice), and from the
    caller's voice onset over the bot to the bot's audio being stopped (barge-in
    reaction)? How much do both add to the same pipeline run with the local transport
    (``SpeechCaller``, no wire)? Target: the ACS path adds under 10 ms.

Method
    ``config/pipelines/local.yaml`` (webrtcvad, pocketsphinx, rules brain, Piper) on both
    paths, in one process and one event loop (uvloop), one path after the other in the
    same run, with the same caller audio: the lines are rendered once (Piper, the caller's
    voice) and both callers say the same ``Utterance`` s. ``--calls`` concurrent calls of
    ``--turns`` lines each (>= 20 turns per path). Local: the pipeline as it is, its
    ``speech_caller`` scripted. ACS: the same file with the caller node swapped for an
    ``acs_media`` line (what ``voicegraph call --via acs`` serves), the app on uvicorn on
    127.0.0.1, a free port, and one ``AcsMediaCaller`` per call, at real time.

    Both measured on the caller's side, on the monotonic clock. Voice-to-voice: from the
    slot after the line's last frame went out to the first bot frame the caller got
    (local: heard by the ``SpeechCaller``; ACS: an ``AudioData`` received). Barge-in: a
    second run in which the caller talks over each answer ``--interrupt-after`` ms after
    it starts; from the slot of the line's first loud frame to the bot's audio cut
    (local: the flush, ``BargeInMeter``; ACS: ``StopAudio`` received). Also from the
    server's reports, the same on both paths: ``first_audio_out`` (the VAD's end of
    speech -> first bot frame on the line).

    ``.venv/bin/python perf/acs_path.py [--calls 4] [--turns 5] [--json PATH]``

Result
    See the closing note of issue 13 and ``perf/results/acs_path.json`` (``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import build_graph, load_pipeline  # noqa: E402
from transports.acs.auth import NoAuth  # noqa: E402
from transports.acs.peer.caller import AcsMediaCaller  # noqa: E402
from transports.acs.route import MEDIA_PATH  # noqa: E402
from transports.local.script import Utterance, render_script  # noqa: E402
from transports.local.speech import SaidLine, SpeechCaller  # noqa: E402
from voicegraph.acs_call import plan_acs_call, serving  # noqa: E402
from voicegraph.app import create_app  # noqa: E402
from voicegraph.call import CallOptions, find_caller, run_call_report  # noqa: E402

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


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": round(statistics.median(values), 1), "p90": round(_pct(values, 90), 1),
            "min": round(min(values), 1), "max": round(max(values), 1)}


class TimedSpeechCaller(SpeechCaller):
    """The local caller, noting when each line ended (the slot after its last frame)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line_ends: list[int] = []

    def _say(self, said: SaidLine) -> Any:
        yield from super()._say(said)
        self.line_ends.append(self._slot)  # resumed one slot after the last frame

    def voice_to_voice_ms(self) -> list[float]:
        out = []
        for end in self.line_ends:
            heard = [ts for ts, _ in self.heard.frames if ts >= end]
            if heard:
                out.append((min(heard) - end) / 1e6)
        return out


def _script(utterances: list[Utterance], i: int, turns: int) -> tuple[Utterance, ...]:
    return tuple(utterances[(i + k) % len(utterances)] for k in range(turns))


async def run_local(utterances: list[Utterance], calls: int, turns: int,
                    interrupt_after: float | None) -> dict[str, list[float]]:
    v2v: list[float] = []
    barge: list[float] = []
    server: list[float] = []

    async def one(i: int) -> None:
        spec = load_pipeline(PIPELINE, env={})
        graph = build_graph(spec)
        caller = find_caller(graph)
        assert isinstance(caller, SpeechCaller)
        timed = TimedSpeechCaller(caller.settings, name=caller.name)
        graph.nodes[caller.name] = timed  # same settings, same place: swapped before wiring
        timed.set_script(_script(utterances, i, turns))
        report = await run_call_report(graph, CallOptions(pipeline=PIPELINE, timeout_s=600,
                                                          interrupt_after_ms=interrupt_after))
        v2v.extend(timed.voice_to_voice_ms())
        barge.extend(timed.meter.reaction_ms.values())
        server.extend(t["latency_ms"]["first_audio_out"] for t in report["turns"]
                      if t["caller_text"] and t["latency_ms"]["first_audio_out"] is not None)

    await asyncio.gather(*(one(i) for i in range(calls)))
    return {"voice_to_voice_ms": v2v, "barge_in_ms": barge, "server_first_audio_out_ms": server}


async def run_acs(utterances: list[Utterance], calls: int, turns: int,
                  interrupt_after: float | None) -> tuple[dict[str, list[float]], dict[str, Any]]:
    plan = await asyncio.to_thread(plan_acs_call, CallOptions(pipeline=PIPELINE, say=("x",),
                                                              interrupt_after_ms=interrupt_after))
    v2v: list[float] = []
    barge: list[float] = []
    server: list[float] = []
    spacing: list[float] = []
    late = 0
    with tempfile.TemporaryDirectory(prefix="acs-path-") as tmp:
        (Path(tmp) / "pipelines").mkdir()
        (Path(tmp) / "pipelines" / "acs.yaml").write_text(plan.pipeline_yaml)
        app = create_app(Path(tmp), poll_s=3600.0, verifier=NoAuth())
        sessions = app.state.acs_sessions
        from voicegraph.report import CallRecorder

        recorders: list[CallRecorder] = []
        sessions.watch(lambda s: recorders.append(CallRecorder(s.graph)))
        async with serving(app) as base:
            async def one(i: int) -> AcsMediaCaller:
                from dataclasses import replace

                caller = AcsMediaCaller(replace(plan.caller, say=_script(utterances, i, turns)))
                url = base.replace("http://", "ws://") + f"{MEDIA_PATH}?token={sessions.expect(f'c{i}')}"
                await caller.run(url, headers={"x-ms-call-connection-id": f"c{i}",
                                               "x-ms-call-correlation-id": str(uuid.uuid4())})
                return caller

            done = await asyncio.gather(*(one(i) for i in range(calls)))
    for caller in done:
        v2v.extend(x.voice_to_voice_ms for x in caller.lines if x.voice_to_voice_ms is not None)
        barge.extend(x.barge_in_ms for x in caller.lines if x.barge_in_ms is not None)
        spacing.extend(caller.ear.spacing_ms())
        late += caller.ear.late_frames
    for rec in recorders:
        server.extend(t["latency_ms"]["first_audio_out"] for t in rec.to_json()["turns"]
                      if t["heard_text"] and t["latency_ms"]["first_audio_out"] is not None)
    gaps = sorted(spacing)
    wire = {"bot_frame_gap_median_ms": round(statistics.median(gaps), 2) if gaps else None,
            "bot_frame_gap_p90_ms": round(_pct(gaps, 90), 2) if gaps else None,
            "late_frames_after_stop_audio": late}
    return {"voice_to_voice_ms": v2v, "barge_in_ms": barge, "server_first_audio_out_ms": server}, wire


async def main(args: argparse.Namespace) -> dict[str, Any]:
    utterances = await asyncio.to_thread(render_script, LINES, sample_rate=16000, voice="piper")
    local = await run_local(utterances, args.calls, args.turns, None)
    acs, wire = await run_acs(utterances, args.calls, args.turns, None)
    local_b = await run_local(utterances, args.calls, args.turns, args.interrupt_after)
    acs_b, wire_b = await run_acs(utterances, args.calls, args.turns, args.interrupt_after)
    local["barge_in_ms"], acs["barge_in_ms"] = local_b["barge_in_ms"], acs_b["barge_in_ms"]
    late = wire["late_frames_after_stop_audio"] + wire_b["late_frames_after_stop_audio"]
    result: dict[str, Any] = {"calls": args.calls, "turns_per_call": args.turns,
                              "interrupt_after_ms": args.interrupt_after,
                              "local": {k: _summary(v) for k, v in local.items()},
                              "acs": {k: _summary(v) for k, v in acs.items()},
                              "acs_wire": {**wire, "late_frames_after_stop_audio": late}}
    result["acs_adds_ms"] = {k: round(result["acs"][k]["median"] - result["local"][k]["median"], 1)
                             for k in local if result["acs"][k].get("n") and result["local"][k].get("n")}
    return result


def render(result: dict[str, Any]) -> str:
    lines = [f"{result['calls']} concurrent calls x {result['turns_per_call']} turns per path", "",
             "(ms)                          path    n   median     p90     min     max"]
    for key in ("voice_to_voice_ms", "barge_in_ms", "server_first_audio_out_ms"):
        for path in ("local", "acs"):
            s = result[path][key]
            if s.get("n"):
                lines.append(f"  {key:<27} {path:<5} {s['n']:>3} {s['median']:>8} {s['p90']:>7} {s['min']:>7} "
                             f"{s['max']:>7}")
    lines += ["", "the ACS path adds (median, ms): " + ", ".join(f"{k} {v:+}" for k, v in
                                                               result["acs_adds_ms"].items())]
    w = result["acs_wire"]
    lines.append(f"bot frames over the wire: gap median {w['bot_frame_gap_median_ms']} ms, p90 "
                 f"{w['bot_frame_gap_p90_ms']} ms; frames after StopAudio: {w['late_frames_after_stop_audio']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4)
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
