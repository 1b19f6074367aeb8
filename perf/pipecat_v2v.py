"""Voice-to-voice time side by side with Pipecat 1.14, in one run, on the same caller audio.

Question
    From the end of the caller's speech to the first bot audio, how does voicegraph's
    embedded default stack compare with Pipecat 1.14 on the closest local engines it
    offers, and what is each time made of?

Method
    The caller says the lines of ``perf/v2v.py`` (:data:`REPLIES`: replies whose first
    sentences have 5 to 30 words), rendered once by the caller's Piper voice at 16 kHz;
    both stacks hear exactly these PCM bytes, one line at a time, in real time (20 ms
    frames on the wall clock), the caller waiting for each answer to finish plus 500 ms.
    The runs alternate (voicegraph, Pipecat, voicegraph, ...) in one process, ``--rounds``
    times, so the shared machine's load falls on both alike.

    * voicegraph: ``perf/v2v.py``'s "after" pipeline (``config/pipelines/local.yaml``:
      webrtcvad, 600 ms silence window, incremental Whisper tiny.en, rules brain, Piper
      joe-medium, paced playout) through ``voicegraph call``'s report. Anchor: the VAD's
      speech stop (``UserStoppedSpeaking.at_ms`` on the line's clock); stages from the
      report: end of turn (``end_of_turn_ms``), STT final, first token, first TTS audio,
      first audio on the line.
    * Pipecat: ``Pipeline([WhisperSTTService, user aggregator, brain, PiperTTSService,
      sink, assistant aggregator])`` with the user aggregator's defaults of 1.14 (Silero
      VAD, ``stop_secs`` 0.2, and the Smart Turn v3 stop strategy), Whisper the same
      tiny.en CTranslate2 model (int8, CPU; Pipecat's Whisper is segmented: it decodes
      the whole utterance once the VAD stops), Piper the same voice file, and a brain
      answering the same rules (it pushes the reply as one LLM text frame, like our rules
      brain's token stream). No transport: audio frames are queued into the task at their
      wall time and the first ``TTSAudioRawFrame`` reaching the sink counts as the first
      bot audio (ours adds its paced playout, ~10 ms, which is therefore counted against
      voicegraph). Anchor: the wall time at which the caller's voice ended (the last
      10 ms window above -45 dBFS in the line's PCM, the same measure on both sides).
      Stages: turn decided (the ``LLMContextFrame`` reaching the brain), STT final (the
      turn's last ``TranscriptionFrame``), first token, first TTS audio.

    ``.venv/bin/python perf/pipecat_v2v.py [--rounds 2] [--json PATH]``  (needs the
    ``perf`` extra: pipecat-ai 1.14)

Result
    One run, 2026-11-26, 3 rounds x 8 lines (24 turns per stack), 2 cores shared with other
    sessions' benchmarks and test runs (load average 5-7: absolute figures are inflated,
    compare within the run)::

        end of caller speech -> (ms), p50 / p90
        stack       vad_stop   end_of_turn   stt_final    first_token  tts_first_audio  first_audio_out
        voicegraph  -          600 / 600     601 / 688    602 / 688    899 / 1153       922 / 1166
        pipecat     270 / 291  1224 / 1986   1213 / 1985  1224 / 1986  2692 / 4934      2692 / 4934

    voicegraph's first audio p50 per round: 963 / 830 / 965 ms (the load moved during the run;
    Pipecat's cumulative p50 after rounds 1, 2, 3: 2940, 2692, 2692 ms).
    A second run 20 minutes later, quieter (load average ~3), 2 rounds (16 turns each)::

        voicegraph  -          600 / 600     600 / 604    601 / 604    768 / 981        784 / 1001
        pipecat     265 / 290  778 / 1057    777 / 1048   778 / 1057   1297 / 2088      1297 / 2088

    Both stacks understood every line (Pipecat's transcripts chose the same rule as ours).

    What each time is made of. voicegraph: the 600 ms silence window from the speech stop
    (the turn is decided exactly then: ``end_of_turn_ms`` 600), the incremental Whisper
    final already there (0-90 ms), the rules brain (< 1 ms), one Piper synthesis of the
    reply's 4-8 word first piece (~300 ms under this load, 130-150 ms on a quiet machine),
    paced playout (~20 ms). Pipecat: Silero confirms the stop at ~270 ms (``stop_secs``
    0.2 + 32 ms chunks) and Smart Turn is asked then (its log said COMPLETE on a 2-line trial), but the turn is only
    released with its transcript: segmented Whisper decodes the whole utterance after the
    stop, so the turn is decided at 0.8-1.2 s; its Piper service synthesises the whole first
    sentence (5-30 words) before the first audio, +0.5-1.5 s here (so it grows with that
    sentence's length; not broken down by length here).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "perf"))

from v2v import FALLBACK, REPLIES, digest, pipeline_file, run_mode  # noqa: E402

from processors.stt.whisper_engine import bundled_model_path  # noqa: E402
from processors.tts.piper_engine import bundled_voice_paths  # noqa: E402
from transports.local.script import SPEECH_DBFS, Utterance, render_script  # noqa: E402

RATE = 16000
FRAME_MS = 20
PAUSE_MS = 500  # the caller's pause after the bot finished, as SpeechCaller's default
ANSWER_TIMEOUT_S = 20.0


def voice_end_ms(pcm: bytes) -> float:
    """End (ms) of the last 10 ms window louder than :data:`SPEECH_DBFS`."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    win = RATE // 100
    n = len(samples) // win
    rms = np.sqrt(np.mean(samples[: n * win].reshape(n, win) ** 2, axis=1) + 1e-9)
    loud = np.nonzero(20 * np.log10(rms / 32768.0) > SPEECH_DBFS)[0]
    return float((loud[-1] + 1) * 10) if len(loud) else 0.0


def reply_to(text: str) -> str:
    """The rules brain's answer (the same rules as voicegraph's side)."""
    for _, pattern, reply in REPLIES:
        if re.search(pattern, text, re.IGNORECASE):
            return reply
    return FALLBACK


@dataclass
class PipecatTurn:
    """Wall times (monotonic s) of one caller line through Pipecat."""

    voice_end: float
    vad_stop: float | None = None
    stt_final: float | None = None
    decided: float | None = None
    first_token: float | None = None
    first_audio: float | None = None
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    heard: str = ""

    def marks(self) -> dict[str, float | None]:
        def since(t: float | None) -> float | None:
            return None if t is None else round((t - self.voice_end) * 1000, 1)

        return {"vad_stop": since(self.vad_stop), "end_of_turn": since(self.decided),
                "stt_final": since(self.stt_final), "llm_first_token": since(self.first_token),
                "tts_first_audio": since(self.first_audio), "first_audio_out": since(self.first_audio)}


async def pipecat_call(lines: list[Utterance]) -> list[PipecatTurn]:
    """Say ``lines`` to a Pipecat 1.14 pipeline in real time; the times of each turn."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.frames.frames import (
        EndFrame,
        Frame,
        InputAudioRawFrame,
        LLMContextFrame,
        LLMFullResponseEndFrame,
        LLMFullResponseStartFrame,
        LLMTextFrame,
        TranscriptionFrame,
        TTSAudioRawFrame,
        TTSStoppedFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.runner import PipelineRunner
    from pipecat.pipeline.task import PipelineParams, PipelineTask
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.services.piper.tts import PiperTTSService
    from pipecat.services.whisper.stt import WhisperSTTService

    turns: list[PipecatTurn] = []

    def current() -> PipecatTurn | None:
        return turns[-1] if turns else None

    class Ears(FrameProcessor):  # after the STT: when its final transcript came
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            turn = current()
            if isinstance(frame, TranscriptionFrame) and turn is not None and turn.decided is None:
                turn.stt_final = time.monotonic()
                turn.heard = (turn.heard + " " + frame.text).strip()
            await self.push_frame(frame, direction)

    class Brain(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            turn = current()
            if not isinstance(frame, LLMContextFrame):
                if isinstance(frame, VADUserStoppedSpeakingFrame) and turn is not None and turn.decided is None:
                    turn.vad_stop = time.monotonic()  # the last stop before the turn was decided
                await self.push_frame(frame, direction)
                return
            messages = frame.context.get_messages()
            said = next((str(m.get("content", "")) for m in reversed(messages)
                         if isinstance(m, dict) and m.get("role") == "user"), "")
            if turn is not None and turn.decided is None:
                turn.decided = time.monotonic()
            await self.push_frame(LLMFullResponseStartFrame())
            if turn is not None and turn.first_token is None:
                turn.first_token = time.monotonic()
            await self.push_frame(LLMTextFrame(reply_to(said)))
            await self.push_frame(LLMFullResponseEndFrame())

    class Mouth(FrameProcessor):  # the line: the first bot audio of each turn, and its end
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            turn = current()
            if turn is not None:
                if isinstance(frame, TTSAudioRawFrame) and turn.first_audio is None:
                    turn.first_audio = time.monotonic()
                elif isinstance(frame, TTSStoppedFrame) and turn.first_audio is not None:
                    turn.answered.set()
            await self.push_frame(frame, direction)

    model, _ = bundled_voice_paths()
    stt = WhisperSTTService(settings=WhisperSTTService.Settings(model=str(bundled_model_path())),
                            device="cpu", compute_type="int8")
    tts = PiperTTSService(settings=PiperTTSService.Settings(voice=model.stem), download_dir=model.parent)
    context = LLMContext()
    pair = LLMContextAggregatorPair(context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()))
    pipeline = Pipeline([stt, Ears(), pair.user(), Brain(), tts, Mouth(), pair.assistant()])
    task = PipelineTask(pipeline, params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE))
    runner = PipelineRunner(handle_sigint=False)
    running = asyncio.create_task(runner.run(task))

    frame_bytes = RATE * FRAME_MS // 1000 * 2
    start = time.monotonic()
    sent = 0

    async def send(pcm: bytes) -> float:
        """Queue ``pcm`` frame by frame at line pace; returns when its audio began (s)."""
        nonlocal sent
        began = start + sent * FRAME_MS / 1000
        for offset in range(0, len(pcm), frame_bytes):
            chunk = pcm[offset:offset + frame_bytes].ljust(frame_bytes, b"\0")
            sent += 1
            delay = start + sent * FRAME_MS / 1000 - time.monotonic()  # a frame is sent once complete
            if delay > 0:
                await asyncio.sleep(delay)
            await task.queue_frame(InputAudioRawFrame(audio=chunk, sample_rate=RATE, num_channels=1))
        return began

    async def quiet_until(done: asyncio.Event, limit_s: float) -> None:
        silence = bytes(frame_bytes)
        deadline = time.monotonic() + limit_s
        while not done.is_set() and time.monotonic() < deadline:
            await send(silence)

    await send(bytes(frame_bytes * 15))  # the line opens
    for line in lines:
        turn = PipecatTurn(voice_end=0.0)
        turns.append(turn)
        began = await send(line.pcm)
        turn.voice_end = began + voice_end_ms(line.pcm) / 1000
        await quiet_until(turn.answered, ANSWER_TIMEOUT_S)
        await quiet_until(asyncio.Event(), PAUSE_MS / 1000)
    await task.queue_frame(EndFrame())
    await asyncio.wait_for(running, timeout=30)
    return turns


def summarise(marks: list[dict[str, float | None]]) -> dict[str, Any]:
    keys = [key for key in marks[0] if key != "latency_ms"] if marks else []
    out: dict[str, Any] = {}
    for key in keys:
        values = sorted(v for m in marks if (v := m[key]) is not None)
        out[key] = ({"n": len(values), "p50": round(statistics.median(values), 1),
                     "p90": round(values[min(len(values) - 1, int(0.9 * len(values) + 0.999) - 1)], 1)}
                    if values else {"n": 0})
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    texts = [line for line, _, _ in REPLIES][: args.lines]
    lines = await asyncio.to_thread(render_script, texts, sample_rate=RATE)
    ours: list[dict[str, float | None]] = []
    theirs: list[dict[str, float | None]] = []
    misheard: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = pipeline_file(Path(tmp), "after")
        for round_ in range(args.rounds):
            reports = await run_mode(path, 1, len(texts), lines=texts)
            for report in reports:
                for t in report["turns"]:
                    if t["caller_text"] and t["latency_ms"]["first_audio_out"] is not None:
                        lat = t["latency_ms"]
                        ours.append({"end_of_turn": t["end_of_turn_ms"], **{k: lat[k] for k in lat}})
            print(f"... round {round_ + 1}: voicegraph {digest(reports)['v2v_ms']}", file=sys.stderr, flush=True)
            turns = await pipecat_call(lines)
            for turn, line in zip(turns, lines, strict=True):
                if turn.first_audio is not None:
                    theirs.append(turn.marks())
                if reply_to(turn.heard) != reply_to(line.text):
                    misheard.append(f"{line.text!r} -> {turn.heard!r}")
            print(f"... round {round_ + 1}: pipecat {summarise(theirs)['first_audio_out']}", file=sys.stderr,
                  flush=True)
    return {"voicegraph": summarise(ours), "pipecat": summarise(theirs), "pipecat_misheard": misheard,
            "lines": len(texts), "rounds": args.rounds}


def render(result: dict[str, Any]) -> str:
    keys = ("vad_stop", "end_of_turn", "stt_final", "llm_first_token", "tts_first_audio", "first_audio_out")
    lines = ["end of caller speech -> (ms), p50 / p90 (n); vad_stop: when Pipecat's VAD confirmed the stop",
             f"{'stack':<12}" + "".join(f"{k:>20}" for k in keys)]
    for name in ("voicegraph", "pipecat"):
        cells = "".join(f"{_cell(result[name].get(k, {})):>20}" for k in keys)
        lines.append(f"{name:<12}{cells}")
    if result["pipecat_misheard"]:
        lines.append("pipecat answered a different rule for: " + "; ".join(result["pipecat_misheard"]))
    return "\n".join(lines) + "\n"


def _cell(summary: dict[str, Any]) -> str:
    return f"{summary['p50']:.0f} / {summary['p90']:.0f} ({summary['n']})" if summary.get("n") else "-"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two stacks")
    parser.add_argument("--lines", type=int, default=len(REPLIES), help="caller lines per round (from the first)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if importlib.util.find_spec("pipecat") is None:
        print("skipped: pipecat-ai is not installed (pip install -e '.[perf]')")
        sys.exit(0)
    from voicegraph.runtime import run

    result = run(main(args))
    print(render(result), end="")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
