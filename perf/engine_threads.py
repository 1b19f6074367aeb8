"""How many threads should the speech engines and the offload executor get on two cores?

Question
    The STT (Whisper tiny.en, CTranslate2 ``cpu_threads``), the TTS (Piper, onnxruntime
    ``intra_op_num_threads``) and the executor they run on (``FairExecutor`` workers)
    share a small machine. Which setting gives the best voice-to-voice time (end of the
    caller's speech -> first bot audio on the line) with 1 and with 4 concurrent calls,
    without one engine starving the other? The shipped defaults are one thread per
    decode and per synthesis (parallelism comes from calls) and one executor worker per
    core (Smart Turn and Silero also run with one onnxruntime thread).

Method
    perf/v2v.py's calls (config/pipelines/local.yaml with its benchmark brain: incremental
    Whisper, rules brain, Piper, first units of 4-8 words; callers speaking its lines and
    waiting for each answer), in one child process per (setting, calls) so that the
    engines are loaded with that setting: the child replaces the thread counts the STT and
    TTS nodes pass to ``WhisperEngine``/``PiperEngine`` and installs an executor of the
    given size before the first call. Settings run alternated, ``--rounds`` times, in
    one run; the figures are the medians over all turns of a setting, from the call
    reports: ``v2v`` (first_audio_out), ``synth`` (first token -> first TTS audio: one
    first-unit synthesis, the part the TTS threads change) and ``final`` (end of speech
    -> STT final: zero while the incremental decode keeps up with the 600 ms window).
    ``.venv/bin/python perf/engine_threads.py [--calls 1 4] [--turns 6] [--rounds 1] [--json PATH]``

Result
    Two runs back to back, 2026-11-26, 2 cores shared with six other busy sessions (load
    average ~2.5: the noise is as large as most of the effects), 6 turns per setting with
    1 call and 8 with 4 calls; v2v p50 (p90) in ms, run 1 / run 2, and the first-unit
    synthesis p50::

        setting (stt/tts/workers)   1 call                      4 calls                      synth 1 / 4 calls
        1 / 1 / 2 (shipped)         803 (863) / 778 (783)       810 (959) / 913 (1558)       189, 164 / 161, 249
        2 / 1 / 2                   813 (886) / 770 (782)       1034 (1853) / 785 (884)      201, 157 / 419, 131
        1 / 2 / 2                   702 (823) / 787 (924)       959 (1362) / 1532 (3295)     96, 165 / 317, 519
        1 / 1 / 4                   770 (782) / 750 (780)       1348 (1885) / 883 (1886)     159, 145 / 457, 258

    The STT final is ready at the end of turn in every setting (600 ms after the speech
    stopped: the silence window) except under the worst contention. Two Piper threads
    are the one consistent effect: with 4 calls they make the first audio later in both
    runs (synthesis 317-519 ms instead of 161-249: a second thread per synthesis takes
    the core the other calls' decodes need); with one call they halved the synthesis in
    one run and did nothing in the other. Two Whisper threads and four executor workers
    moved the figures both ways between runs. So the shipped defaults stay: one thread
    per decode and per synthesis, one executor worker per core (Smart Turn and Silero one
    onnxruntime thread each). Rerun on a quiet host before tuning further.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: name -> (Whisper cpu_threads, Piper intra-op threads, executor workers); "1/1/2" is shipped.
SETTINGS: dict[str, tuple[int, int, int]] = {
    "stt1 tts1 workers2": (1, 1, 2),
    "stt2 tts1 workers2": (2, 1, 2),
    "stt1 tts2 workers2": (1, 2, 2),
    "stt1 tts1 workers4": (1, 1, 4),
}


def install(stt_threads: int, tts_threads: int, workers: int) -> None:
    """Make this process's engines and executor use the given sizes."""
    from pipeline import offload
    from processors.stt.whisper_engine import WhisperEngine
    from processors.tts.piper_engine import PiperEngine

    whisper_init, piper_init = WhisperEngine.__init__, PiperEngine.__init__

    def whisper(self: Any, *args: Any, **kw: Any) -> None:
        kw["cpu_threads"] = stt_threads
        whisper_init(self, *args, **kw)

    def piper(self: Any, *args: Any, **kw: Any) -> None:
        kw["threads"] = tts_threads
        piper_init(self, *args, **kw)

    WhisperEngine.__init__ = whisper  # type: ignore[method-assign]
    PiperEngine.__init__ = piper  # type: ignore[method-assign]
    offload._executor = offload.FairExecutor(workers)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def child(setting: str, calls: int, turns: int) -> dict[str, Any]:
    """One setting and call count, in this (child) process."""
    install(*SETTINGS[setting])
    sys.path.insert(0, str(ROOT / "perf"))
    import v2v

    with tempfile.TemporaryDirectory() as tmp:
        reports = asyncio.run(v2v.run_mode(v2v.pipeline_file(Path(tmp), "after"), calls, turns))
    marks = [v2v.turn_marks(t) for r in reports for t in r["turns"]
             if t["latency_ms"]["first_audio_out"] is not None and t["caller_text"]]
    return {
        "v2v": [m["first_audio_out"] for m in marks],
        "synth": [m["tts_first_audio"] - m["llm_first_token"] for m in marks
                  if m["tts_first_audio"] is not None and m["llm_first_token"] is not None],
        "final": [m["stt_final"] for m in marks if m["stt_final"] is not None],
        "errors": [e for r in reports for e in r["errors"]],
    }


def run(calls: list[int], turns: int, rounds: int, settings: list[str]) -> dict[str, Any]:
    """Every setting for every call count, alternated, ``rounds`` times; medians."""
    raw: dict[str, dict[str, list[Any]]] = {}
    for _ in range(rounds):
        for n in calls:
            for setting in settings:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", setting, "--calls", str(n), "--turns", str(turns)],
                    check=True, capture_output=True, text=True,
                )
                got = json.loads(out.stdout.strip().splitlines()[-1])
                row = raw.setdefault(f"{setting}, {n} call(s)", {"v2v": [], "synth": [], "final": [], "errors": []})
                for key, values in got.items():
                    row[key] += values
                print(f"... {setting}, {n} call(s): v2v p50 {_median(got['v2v'])} ms over {len(got['v2v'])} turns",
                      file=sys.stderr, flush=True)
    table = {
        name: {"turns": len(row["v2v"]), "v2v_p50": _median(row["v2v"]),
               "v2v_p90": round(sorted(row["v2v"])[int(0.9 * (len(row["v2v"]) - 1))], 1) if row["v2v"] else None,
               "synth_p50": _median(row["synth"]), "final_p50": _median(row["final"]), "errors": row["errors"]}
        for name, row in raw.items()
    }
    return {"settings": {k: SETTINGS[k] for k in settings}, "turns_per_run": turns, "rounds": rounds, "rows": table}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--turns", type=int, default=6, help="turns per setting, call count and round")
    parser.add_argument("--rounds", type=int, default=1, help="alternations of all settings")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--child", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.calls[0], args.turns)))
        return 0
    doc = run(args.calls, args.turns, args.rounds, args.settings)
    print(f"{'setting':32} {'turns':>5} {'v2v p50':>8} {'p90':>7} {'synth p50':>9} {'final p50':>9}")
    for name, row in doc["rows"].items():
        print(f"{name:32} {row['turns']:5} {row['v2v_p50']!s:>8} {row['v2v_p90']!s:>7} "
              f"{row['synth_p50']!s:>9} {row['final_p50']!s:>9}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
