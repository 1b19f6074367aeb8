"""Run every benchmark in perf/ and keep their figures in perf/results/ (``make bench``).

Each benchmark is its own script with its own docstring (question, method, result);
this runs them one after another, as separate processes so that none warms the caches
of the next, and writes each one's JSON to ``perf/results/<name>.json``.

    .venv/bin/python perf/run_all.py [--quick] [--only overhead speech_call ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# name -> (script, normal args, quick args)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "overhead": ("overhead.py", [], ["--frames", "1000"]),
    "audio_frontend": ("audio_frontend.py", [], ["--frames", "1000"]),
    "speech_engines": ("speech_engines.py", [], ["--runs", "5"]),
    "stt_wer": ("stt_wer.py", [], ["--limit", "8"]),
    "offload": ("offload.py", [], ["--calls", "4", "--sentences", "10"]),
    "speech_call": ("speech_call.py", [], ["--calls", "2", "--turns", "3"]),
    "v2v": ("v2v.py", [], ["--calls", "1", "--turns", "4"]),
    "graph_build": ("graph_build.py", [], ["--sizes", "1000", "2000"]),
    "pacing": ("pacing.py", [], ["--seconds", "1", "--repeats", "1"]),
    "calls": ("calls.py", [], ["--calls", "1", "10", "--turns", "1", "--max-speech-calls", "1"]),
    "acs_path": ("acs_path.py", [], ["--rounds", "1", "--turns", "2"]),
    "acs_density": ("acs_density.py", [], ["--calls", "10", "50", "--speech-calls", "1", "--seconds", "5"]),
    "llm_router": ("llm_router.py", [], ["--turns", "20", "--tokens", "10"]),
    "ivr_turn": ("ivr_turn.py", [], ["--calls", "20"]),
    "orchestrator": ("orchestrator.py", [], ["--calls", "10"]),
    "end_of_turn": ("end_of_turn.py", [], ["--sentences", "2"]),
    "sidecars_events": ("sidecars_events.py", [], ["--calls", "10", "--turns", "5", "--v2v-calls", "1",
                                                   "--v2v-turns", "4", "--v2v-rounds", "1"]),
    "sidecars_live": ("sidecars_live.py", [], ["--turns", "500", "--calls", "20", "--load-turns", "3",
                                               "--interval-s", "0.1", "--drain-turns", "500"]),
    "sidecars_history": ("sidecars_history.py", [], ["--calls", "10", "--turns", "3", "--turn-ms", "100"]),
    "pipecat_v2v": ("pipecat_v2v.py", [], ["--rounds", "1", "--lines", "2"]),
    "azure_stt": ("azure_stt.py", [], ["--calls", "1", "10"]),
    "azure_tts": ("azure_tts.py", [], ["--clauses", "10", "--concurrent", "1", "10"]),
    "cpu_per_call": ("cpu_per_call.py", [], ["--limit", "2", "--repeats", "1"]),
    "engine_threads": ("engine_threads.py", [], ["--calls", "1", "--turns", "2", "--settings", "stt1 tts1 workers2"]),
    "end_of_turn_text": ("end_of_turn_text.py", [], []),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test of the suite)")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for name in args.only or BENCHMARKS:
        script, normal, quick = BENCHMARKS[name]
        cmd = [sys.executable, str(HERE / script), *(quick if args.quick else normal), "--json",
               str(RESULTS / f"{name}.json")]
        print(f"=== {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        code = subprocess.call(cmd)
        print(f"=== {name}: exit {code} after {time.monotonic() - started:.0f} s\n", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
