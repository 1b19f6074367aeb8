"""What do the end-of-turn model and Silero VAD buy, and what do they cost?

Question
    (1) False cut-offs: on utterances with a mid-sentence pause of 300-800 ms, how often
    does the turn end inside the pause, with Smart Turn v3 at each pause versus
    silence-only endpointing, same audio; and how long after the end of speech each
    decides the turn is over (end of turn ms). (2) CPU: the turn model per decision,
    and Silero VAD versus webrtcvad per call (CPU ms per second of call audio).

Method
    Audio: tests/processors/audio/paused_speech.py, six Piper sentences whose comma gap
    is stretched to 300, 400, ..., 800 ms (36 utterances), 500 ms of silence before and
    2.5 s after. Each runs through the real VAD node (pipeline.testing.run_processor,
    audio clock) in two set-ups: "model" (turn_model smart_turn, VAD stop 200 ms,
    complete 250 ms, incomplete 1500 ms) and "silence" (the shipped defaults: VAD stop
    300 ms, silence window 600 ms). A false cut-off is a turn ended before the speech
    after the pause began (more than one TurnEnd). End of turn = last TurnEnd.at_ms -
    last UserStoppedSpeaking.at_ms, on the audio clock. Model decision CPU is the thread
    CPU time of one verdict (features + inference, one onnxruntime thread). VAD CPU is
    the thread CPU time of Vad.feed over all the audio above (20 ms frames, the level
    floor on as in a call), divided by its duration.
    ``.venv/bin/python perf/end_of_turn.py [--sentences N] [--json PATH]``

Result: see docs/design/speech.md (end of turn) for the figures and the decision.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import CallContext  # noqa: E402
from pipeline.frames import AudioFormat, Frame, InputAudio, TurnEnd, UserStoppedSpeaking  # noqa: E402
from pipeline.testing import run_processor  # noqa: E402
from processors.audio.silero import load_silero, silero_classifier  # noqa: E402
from processors.audio.turn_model import TurnModel, load_smart_turn  # noqa: E402
from processors.audio.vad import Vad, VadParams  # noqa: E402
from processors.audio.vad_node import VADProcessor, VADSettings  # noqa: E402
from tests.processors.audio.paused_speech import PAUSED_SENTENCES, paused  # noqa: E402
from tests.processors.stt.speech import RATE, frames, silence  # noqa: E402

PAUSES_MS = (300, 400, 500, 600, 700, 800)
SETUPS = {
    "model": VADSettings(turn_model="smart_turn", stop_ms=200, complete_ms=250, incomplete_ms=1500),
    "silence": VADSettings(),
}


@dataclass
class Row:
    """One set-up's figures over the paused utterances."""

    setup: str
    utterances: int
    false_cutoffs: int
    false_cutoff_rate: float
    end_of_turn_ms_p50: float
    end_of_turn_ms_p90: float
    reasons: dict[str, int]


def utterances(sentences: int) -> list[tuple[str, int, bytes, float]]:
    """(text, pause, audio, where the speech after the pause starts in ms)."""
    out = []
    for text in PAUSED_SENTENCES[:sentences]:
        for pause in PAUSES_MS:
            speech, gap_start = paused(text, pause)
            resume_ms = 500 + gap_start * 1000 / RATE + pause
            out.append((text, pause, silence(500) + speech + silence(2500), resume_ms))
    return out


class TimedModel:
    """A turn model that records the thread CPU time of each verdict."""

    def __init__(self, model: TurnModel) -> None:
        self._model = model
        self.cpu_ms: list[float] = []

    def __call__(self, audio: npt.NDArray[np.float32]) -> float:
        started = time.thread_time()
        probability = self._model(audio)
        self.cpu_ms.append((time.thread_time() - started) * 1000)
        return probability


async def endpoint(pcm: bytes, settings: VADSettings, model: TurnModel | None) -> tuple[list[TurnEnd], list[float]]:
    feed: list[Frame] = [AudioFormat(RATE), *(InputAudio(chunk) for chunk in frames(pcm))]
    out, _ = await run_processor(VADProcessor(settings, turn_model=model), feed, ctx=CallContext())
    ends = [f for f in out.seen if isinstance(f, TurnEnd)]
    return ends, [e.at_ms for e in out.events if isinstance(e, UserStoppedSpeaking)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else float("nan")


async def cutoffs(cases: list[tuple[str, int, bytes, float]], timed: TimedModel | None) -> list[Row]:
    rows = []
    for setup, settings in SETUPS.items():
        if setup == "model" and timed is None:
            continue
        cut, eot, reasons = 0, [], dict[str, int]()
        for text, pause, pcm, resume_ms in cases:
            ends, stops = await endpoint(pcm, settings, timed if setup == "model" else None)
            early = [e for e in ends if e.at_ms < resume_ms]
            if early:
                cut += 1
                print(f"  {setup}: cut at {early[0].at_ms:.0f} ms in a {pause} ms pause: {text!r}", flush=True)
            if ends and stops:
                eot.append(ends[-1].at_ms - stops[-1])
                reasons[ends[-1].reason] = reasons.get(ends[-1].reason, 0) + 1
        rows.append(Row(setup, len(cases), cut, round(cut / len(cases), 3), pct(eot, 0.5), pct(eot, 0.9), reasons))
    return rows


def vad_cpu(cases: list[tuple[str, int, bytes, float]]) -> dict[str, float]:
    """CPU ms per second of audio for each VAD engine over the same audio."""
    pcm = b"".join(case[2] for case in cases)
    seconds = len(pcm) / 2 / RATE
    silero = load_silero()
    engines = {"webrtc": None, **({"silero": silero_classifier(silero, RATE)} if silero is not None else {})}
    out: dict[str, float] = {}
    for name, classifier in engines.items():
        vad = Vad(VadParams(), RATE, classifier=classifier)
        started = time.thread_time()
        now = 0.0
        for chunk in frames(pcm):
            now += 20.0
            vad.feed(chunk, now)
        out[name] = round((time.thread_time() - started) * 1000 / seconds, 3)
    return out


async def run(sentences: int) -> dict[str, object]:
    cases = utterances(sentences)
    loaded = load_smart_turn()
    timed = TimedModel(loaded) if loaded is not None else None
    rows = await cutoffs(cases, timed)
    decisions = timed.cpu_ms[1:] if timed else []  # the first one pays for warm-up
    doc: dict[str, object] = {
        "utterances": len(cases),
        "pauses_ms": list(PAUSES_MS),
        "endpointing": [asdict(r) for r in rows],
        "turn_model_cpu_ms_per_decision": {
            "decisions": len(decisions),
            "p50": pct(decisions, 0.5),
            "p90": pct(decisions, 0.9),
            "mean": round(statistics.fmean(decisions), 1) if decisions else float("nan"),
        },
        "vad_cpu_ms_per_audio_second": vad_cpu(cases),
    }
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=len(PAUSED_SENTENCES), help="paused sentences to use")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    doc = asyncio.run(run(args.sentences))
    for row in doc["endpointing"]:  # type: ignore[attr-defined]
        print(f"{row['setup']:>8}: false cut-offs {row['false_cutoffs']}/{row['utterances']} "
              f"({100 * row['false_cutoff_rate']:.0f}%), end of turn p50 {row['end_of_turn_ms_p50']} ms "
              f"p90 {row['end_of_turn_ms_p90']} ms, reasons {row['reasons']}")
    print(f"turn model CPU per decision: {doc['turn_model_cpu_ms_per_decision']}")
    print(f"VAD CPU ms per second of audio: {doc['vad_cpu_ms_per_audio_second']}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
