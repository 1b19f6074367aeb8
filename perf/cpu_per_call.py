"""What does one call cost in CPU, engine by engine, on the embedded speech stack?

Question
    CPU per call of each embedded engine that runs for every call: the VAD (webrtcvad,
    the default, versus Silero), the end-of-turn model (Smart Turn v3, asked at each
    pause of an open turn), the STT (Whisper tiny.en decoded incrementally, the default,
    versus the same model once at the end of the turn, and PocketSphinx), and Piper for
    the bot's answers. In cores per call (CPU seconds per second of call), so that the
    sum says how many calls two cores carry, and whether Silero and Smart Turn are
    affordable as defaults.

Method
    One synthetic call: the 40 real recordings of tests/data/recordings.py at 16 kHz (a
    caller's turns, 165 s of speech, ``make speech-data``), each followed by
    ``--gap-ms`` of silence while the bot answers (default 3000 ms); the call lasts the
    sum. Each engine runs alone in this process over that call, one after the other, one
    thread each as the nodes set them (CTranslate2 ``cpu_threads=1``, onnxruntime
    ``intra_op_num_threads=1``). CPU is ``time.process_time()`` (every thread of the
    process) around the engine's work only, divided by the call's duration:
    * VAD: ``Vad.feed`` on every 20 ms frame of the call (webrtcvad, then Silero).
    * Smart Turn: the VAD node (``turn_model: smart_turn``, the end-of-turn settings of
      perf/end_of_turn.py) over the call; the thread CPU of each verdict (features and
      inference), summed. Also the number of decisions per turn.
    * STT: each turn's audio and the silence window (600 ms) fed in 100 ms batches as the
      STT node does, then ``finish()``; incremental Whisper with 800 ms steps.
    * Piper: the rules brain's answers of ``config/pipelines/local.yaml`` synthesised,
      CPU over the seconds of bot audio, then scaled to the bot's share of the call.
    Figures are medians over ``--repeats`` runs (the machine is shared: noisy).
    ``.venv/bin/python perf/cpu_per_call.py [--limit N] [--repeats 3] [--json PATH]``

Result
    One run, 2026-11-26 (``--repeats 1``: a 3-repeat run did not finish in 15 minutes on
    the loaded machine; process CPU time is little affected by other processes' load),
    a 285 s call with 40 caller turns (165 s of speech), cores per call::

        VAD           webrtcvad 0.0002      Silero 0.0028 (14x; 2.8 ms CPU per call-second)
        end of turn   Smart Turn 0.0049     (61 ms per decision, 1.05 decisions per turn)
        STT           Whisper incremental 0.133   one-shot 0.025   PocketSphinx 0.117
        TTS           Piper 0.032           (at 42 % of the call spent answering)

        default stack (webrtcvad, incremental Whisper, Piper)   0.165 cores: 12 calls on 2 cores
        with Silero and Smart Turn                              0.173 cores: 11.6 calls on 2 cores

    The STT is 80 % of a call's CPU; Silero and Smart Turn together add 5 % to it, so
    cost is no reason to keep them off (Smart Turn's false cut-offs are: perf/end_of_turn.py).
    A short run (3 turns) gave the same shares: Smart Turn 0.010, Silero 0.0036.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in here may download
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from pipeline.frames import AudioFormat, Frame, InputAudio, TurnEnd  # noqa: E402
from pipeline.testing import run_processor  # noqa: E402
from processors.audio.silero import load_silero, silero_classifier  # noqa: E402
from processors.audio.turn_model import TurnModel, load_smart_turn  # noqa: E402
from processors.audio.vad import Vad, VadParams  # noqa: E402
from processors.audio.vad_node import VADProcessor, VADSettings  # noqa: E402
from tests.data.recordings import load  # noqa: E402

RATE = 16000
FRAME = RATE * 2 // 50  # 20 ms
BATCH = 3200  # 100 ms: the STT node's feed_ms
ANSWERS = (  # what the shipped local pipeline's brain says
    "I am sorry to hear about your accident. I can start a claim for you right away. "
    "First, what is your policy number?",
    "We are open from eight in the morning to eight in the evening, Monday to Saturday.",
    "Good morning! Thanks for calling. How can I help you today?",
)


class Call:
    """The synthetic call: caller turns separated by the bot's answer time."""

    def __init__(self, limit: int, gap_ms: int) -> None:
        self.turns = [r.pcm for r in list(load(RATE))[: limit or None]]
        gap = bytes(RATE * 2 * gap_ms // 1000)
        self.pcm = b"".join(turn + gap for turn in self.turns)
        self.seconds = len(self.pcm) / (2 * RATE)
        self.speech_seconds = sum(len(t) for t in self.turns) / (2 * RATE)
        self.bot_seconds = self.seconds - self.speech_seconds


def cpu_of(work: Callable[[], object]) -> float:
    """Process CPU seconds (all threads) of ``work()``."""
    started = time.process_time()
    work()
    return time.process_time() - started


def vad_cpu(call: Call, classifier: Any) -> float:
    def run() -> None:
        vad = Vad(VadParams(), RATE, classifier=classifier)
        now = 0.0
        for start in range(0, len(call.pcm), FRAME):
            now += 20.0
            vad.feed(call.pcm[start : start + FRAME], now)

    return cpu_of(run)


class TimedModel:
    """A turn model that adds up the thread CPU time of its verdicts."""

    def __init__(self, model: TurnModel) -> None:
        self._model = model
        self.cpu_s = 0.0
        self.decisions = 0

    def __call__(self, audio: npt.NDArray[np.float32]) -> float:
        started = time.thread_time()
        probability = self._model(audio)
        self.cpu_s += time.thread_time() - started
        self.decisions += 1
        return probability


def smart_turn_cpu(call: Call, model: TurnModel) -> tuple[float, int, int]:
    """(CPU s of all verdicts over the call, decisions, turns ended)."""
    timed = TimedModel(model)
    settings = VADSettings(turn_model="smart_turn", stop_ms=200, complete_ms=250, incomplete_ms=1500)
    node = VADProcessor(settings, turn_model=timed)
    chunks = (call.pcm[i : i + FRAME] for i in range(0, len(call.pcm), FRAME))
    feed: list[Frame] = [AudioFormat(RATE), *(InputAudio(chunk) for chunk in chunks)]
    out, _ = asyncio.run(run_processor(node, feed))
    turns = sum(isinstance(f, TurnEnd) for f in out.controls)
    return timed.cpu_s, timed.decisions, turns


def stt_cpu(call: Call, engine: Any, step_ms: int | None) -> float:
    silence = bytes(RATE * 2 * 600 // 1000)

    def run() -> None:
        for turn in call.turns:
            stream = engine.open_stream() if step_ms is None else engine.open_stream(step_ms=step_ms)
            pcm = turn + silence
            for start in range(0, len(pcm), BATCH):
                stream.feed(pcm[start : start + BATCH])
            stream.finish()
            if hasattr(stream, "close"):
                stream.close()

    return cpu_of(run)


def piper_cpu_per_bot_second() -> float:
    from processors.tts.piper_engine import PiperEngine

    voice = PiperEngine(threads=1)
    b"".join(voice.synthesize("Warm up."))
    audio_s = 0.0

    def run() -> None:
        nonlocal audio_s
        for text in ANSWERS:
            audio_s += len(b"".join(voice.synthesize(text))) / (2 * voice.sample_rate)

    return cpu_of(run) / audio_s


def measure(call: Call) -> dict[str, float]:
    """Cores per call of each engine, one run."""
    from processors.stt.pocketsphinx_engine import PocketsphinxEngine
    from processors.stt.whisper_engine import WhisperEngine

    out: dict[str, float] = {"vad_webrtc": vad_cpu(call, None) / call.seconds}
    silero = load_silero()
    if silero is not None:
        out["vad_silero"] = vad_cpu(call, silero_classifier(silero, RATE)) / call.seconds
    model = load_smart_turn()
    if model is not None:
        model(np.zeros(RATE, dtype=np.float32))  # warm-up, as a worker's first call pays it
        cpu_s, decisions, turns = smart_turn_cpu(call, model)
        out["smart_turn"] = cpu_s / call.seconds
        out["smart_turn_ms_per_decision"] = 1000 * cpu_s / max(1, decisions)
        out["smart_turn_decisions_per_turn"] = decisions / max(1, turns)
    whisper = WhisperEngine(cpu_threads=1)
    out["whisper_incremental"] = stt_cpu(call, whisper, 800) / call.seconds
    out["whisper_one_shot"] = stt_cpu(call, whisper, 0) / call.seconds
    out["pocketsphinx"] = stt_cpu(call, PocketsphinxEngine(), None) / call.seconds
    out["piper"] = piper_cpu_per_bot_second() * call.bot_seconds / call.seconds
    return out


def summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    """Median of each figure over the runs."""
    return {key: round(statistics.median(run[key] for run in runs), 4) for key in runs[0]}


def stacks(cores: dict[str, float]) -> dict[str, dict[str, float]]:
    """Cores per call and calls per two cores of the default stack and its options."""
    default = cores["vad_webrtc"] + cores["whisper_incremental"] + cores["piper"]
    out = {"default (webrtcvad, incremental Whisper, Piper)": default}
    if "vad_silero" in cores and "smart_turn" in cores:
        out["with Silero and Smart Turn"] = default - cores["vad_webrtc"] + cores["vad_silero"] + cores["smart_turn"]
    return {name: {"cores_per_call": round(value, 4), "calls_per_2_cores": round(2 / value, 1)}
            for name, value in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N recordings (0: all 40)")
    parser.add_argument("--gap-ms", type=int, default=3000, help="silence after each caller turn (the bot answers)")
    parser.add_argument("--repeats", type=int, default=3, help="runs; figures are their medians")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    call = Call(args.limit, args.gap_ms)
    print(f"call: {call.seconds:.0f} s, caller speaking {call.speech_seconds:.0f} s, {len(call.turns)} turns",
          flush=True)
    runs = [measure(call) for _ in range(args.repeats)]
    cores = summarise(runs)
    for key, value in cores.items():
        unit = "ms" if key.endswith("_ms_per_decision") else "" if key.endswith("_per_turn") else "cores/call"
        print(f"{key:32} {value:10.4f} {unit}", flush=True)
    table = stacks(cores)
    for name, row in table.items():
        print(f"{name}: {row['cores_per_call']:.3f} cores per call, {row['calls_per_2_cores']} calls on 2 cores")
    if args.json:
        doc = {"call_s": round(call.seconds, 1), "speech_s": round(call.speech_seconds, 1), "turns": len(call.turns),
               "gap_ms": args.gap_ms, "repeats": args.repeats, "cores_per_call": cores, "stacks": table,
               "runs": runs}
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
