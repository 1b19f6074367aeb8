"""Spoken calls on the embedded stack: turn latency, barge-in reaction, front-end cost.

Question
    With the local stack (webrtcvad, pocketsphinx, rules brain, Piper), how long from the
    end of the caller's speech to the bot's first audio on the line, and how long from
    the caller starting to talk over the bot to the bot's audio stopping? What does the
    audio front end cost per 20 ms frame?

Method
    ``config/pipelines/local.yaml``, unchanged but for the caller's script, run as
    ``--calls`` concurrent calls in one process and one event loop (uvloop), each caller
    speaking ``--turns`` lines in real time (Piper voice, 16 kHz line). Latency run: the
    caller waits for each answer. Barge-in run: the caller talks over each answer
    ``--interrupt-after`` ms after it starts playing. Latencies come from the call
    reports (``voicegraph call --json`` shape): ``first_audio_out`` is end of caller
    speech (the VAD's speech stop) -> first bot frame sent on the line, and it includes
    the 600 ms endpointing silence window. ``barge_in_ms`` is the caller's voice onset
    (first frame louder than -45 dBFS) -> the playout flush, after which no bot frame is
    sent. Front-end cost: pure objects on Piper speech, per 20 ms frame, medians of
    ``perf_counter_ns`` (resampler 8k->16k LQ, ``Vad.feed``, pocketsphinx ``feed`` in
    100 ms batches divided by 5). Per-node engine time: ``pipeline.metrics.instrument``
    during the latency run.

    ``.venv/bin/python perf/speech_call.py [--calls 4] [--turns 6] [--json PATH]``

Result
    ``make bench`` on 2 shared cores (Python 3.11.7, uvloop), 4 concurrent calls x 6
    turns = 24 turns, and 20 barge-ins::

        end of caller speech -> (ms)   median    p90    min    max
          stt_final                     621.7  663.4  606.2  757.8
          llm_first_token               621.9  663.5  606.4  758.0
          tts_first_audio               851.5  914.0  779.1  929.9
          first_audio_out               860.1  922.0  779.7  946.3
        barge-in reaction (ms): median 180.1, p90 195.7 (target <= 240)

    The turn gap is 600 ms of endpointing silence, ~20 ms to finalise pocketsphinx, and
    ~230 ms for Piper's first sentence (4 calls share 2 cores). The playout adds ~10 ms.
    The front end on telephone-band speech (8k -> 16k LQ, VAD, pocketsphinx) costs
    3.55 ms per 20 ms frame, 18 % of a core, nearly all of it pocketsphinx (resample 4 us,
    VAD 6 us). Pocketsphinx RTF is 0.32 here; Piper RTF is 0.07.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import build_graph, load_pipeline  # noqa: E402
from pipeline.metrics import instrument  # noqa: E402
from voicegraph.call import CallOptions, run_call_report  # noqa: E402

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


async def run_calls(
    calls: int, turns: int, interrupt_after: float | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    node_stats: dict[str, list[float]] = {}

    async def one(i: int) -> None:
        graph = build_graph(load_pipeline(PIPELINE, env={}))
        metrics = instrument(graph)
        script = tuple(LINES[(i + k) % len(LINES)] for k in range(turns))
        report = await run_call_report(graph, CallOptions(pipeline=PIPELINE, say=script, timeout_s=300,
                                                          interrupt_after_ms=interrupt_after))
        reports.append(report)
        for name, s in metrics.summary().items():
            node_stats.setdefault(name, []).append(s["median_us"])

    await asyncio.gather(*(one(i) for i in range(calls)))
    return reports, {k: round(statistics.median(v), 1) for k, v in node_stats.items()}


def frontend_costs() -> dict[str, float]:
    """Median µs per 20 ms frame of the pure front end on Piper speech."""
    import numpy as np

    from processors.audio.resample import Resampler
    from processors.audio.vad import Vad
    from processors.stt.pocketsphinx_engine import PocketsphinxEngine
    from processors.tts.piper_engine import PiperEngine

    voice = PiperEngine(noise_scale=0.0, noise_w_scale=0.0)
    speech22 = b"".join(voice.synthesize(" ".join(LINES[:4])))
    r8 = Resampler(voice.sample_rate, 8000, "HQ")
    speech8 = r8.process(speech22) + r8.flush()
    up = Resampler(8000, 16000, "LQ")
    speech16 = up.process(speech8) + up.flush()
    out: dict[str, float] = {}

    def per_frame(fn: Any, pcm: bytes, frame_bytes: int, per_call_frames: int = 1) -> float:
        times = []
        for i in range(0, len(pcm) - frame_bytes + 1, frame_bytes):
            t0 = time.perf_counter_ns()
            fn(pcm[i:i + frame_bytes])
            times.append((time.perf_counter_ns() - t0) / 1000 / per_call_frames)
        return round(statistics.median(times), 2)

    resampler = Resampler(8000, 16000, "LQ")
    out["resample_8k_to_16k_us"] = per_frame(resampler.process, speech8, 320)
    vad = Vad(None, 16000)
    clock = [0.0]

    def feed(pcm: bytes) -> None:
        clock[0] += 20
        vad.feed(pcm, clock[0])

    out["vad_us"] = per_frame(feed, speech16, 640)
    stream = PocketsphinxEngine().open_stream()
    out["pocketsphinx_us"] = per_frame(stream.feed, speech16, 3200, per_call_frames=5)
    stream.finish()
    out["front_end_us"] = round(out["resample_8k_to_16k_us"] + out["vad_us"] + out["pocketsphinx_us"], 2)
    out["front_end_cpu_share_of_20ms"] = round(out["front_end_us"] / 20_000, 4)
    speech_s = len(speech16) / 32000
    t0 = time.perf_counter()
    s2 = PocketsphinxEngine().open_stream()
    for i in range(0, len(speech16), 3200):
        s2.feed(speech16[i:i + 3200])
    s2.finish()
    out["pocketsphinx_rtf"] = round((time.perf_counter() - t0) / speech_s, 3)
    t0 = time.perf_counter()
    pcm = b"".join(voice.synthesize(" ".join(LINES[:4])))
    out["piper_rtf"] = round((time.perf_counter() - t0) / (len(pcm) / (voice.sample_rate * 2)), 3)
    del np
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    normal, nodes = await run_calls(args.calls, args.turns, None)
    barge, _ = await run_calls(args.calls, args.turns, args.interrupt_after)
    turns = [t for r in normal for t in r["turns"]]
    lat = {k: [t["latency_ms"][k] for t in turns if t["latency_ms"][k] is not None]
           for k in ("stt_final", "llm_first_token", "tts_first_audio", "first_audio_out")}
    barge_ins = [t["barge_in_ms"] for r in barge for t in r["turns"] if t["barge_in_ms"] is not None]
    result = {
        "calls": args.calls,
        "turns_per_call": args.turns,
        "turns_measured": len(turns),
        "end_of_speech_to": {k: _summary(v) for k, v in lat.items()},
        "barge_in_ms": _summary(barge_ins),
        "barge_in_target_ms": 240,
        "node_median_us": nodes,
        "errors": [e for r in normal + barge for e in r["errors"]],
        "frontend": await asyncio.to_thread(frontend_costs),
    }
    return result


def render(result: dict[str, Any]) -> str:
    lines = [f"{result['calls']} concurrent calls x {result['turns_per_call']} turns "
             f"({result['turns_measured']} turns measured)", "",
             "end of caller speech -> (ms)      median     p90     min     max"]
    for key, s in result["end_of_speech_to"].items():
        lines.append(f"  {key:<28} {s['median']:>8} {s['p90']:>7} {s['min']:>7} {s['max']:>7}")
    b = result["barge_in_ms"]
    lines += ["", f"barge-in reaction (ms): median {b.get('median')} p90 {b.get('p90')} "
                  f"(n={b['n']}, target <= {result['barge_in_target_ms']})", "", "front end per 20 ms frame:"]
    for key, value in result["frontend"].items():
        lines.append(f"  {key:<30} {value}")
    lines += ["", "own time per frame handled, median per node (µs; a TTS frame is a whole clause):"]
    for key, value in result["node_median_us"].items():
        lines.append(f"  {key:<14} {value}")
    if result["errors"]:
        lines += ["", "errors: " + "; ".join(result["errors"][:5])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--interrupt-after", type=float, default=1000.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from voicegraph.runtime import run

    result = run(main(args))
    print(render(result), end="")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
