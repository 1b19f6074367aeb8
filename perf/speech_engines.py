"""How fast are the local speech engines, and what does each cost a call?

Question
    For the embedded engines (PocketSphinx and Whisper tiny.en for STT, Piper and eSpeak
    NG for TTS): CPU per 20 ms audio frame, real-time factor (RTF: compute time / audio
    time), the delay between the end of speech and the final transcript, the time to the
    first TTS chunk, and load time and memory. These set how many calls a core carries
    and what each engine adds to voice-to-voice latency.

Method
    Each engine is measured in its own fresh subprocess, so load time and memory are its
    own and no other library's thread pool competes for the cores.
    STT: three call-centre sentences spoken by Piper (noise off, so the audio is identical
    every run), resampled to 16 kHz with soxr, 300 ms of silence either side. A run
    feeds each sentence in 20 ms frames to a new stream and calls finish(): per-frame
    cost is the thread CPU time of feed(); RTF is the wall time of all feed() and
    finish() calls over the audio duration (CPU RTF: the process CPU time of the same
    calls, all threads, which is what limits calls per core); finalisation delay is the
    wall time of one finish() call. TTS: a run synthesises a two-sentence answer (5 s of
    speech), timing the first chunk and the whole text (wall and process CPU), then
    times close() on a fresh generator after its first chunk (a barge-in); for eSpeak,
    a timing lock in place of its process-wide lock records how long each sentence holds
    it. Every figure is the median of --runs runs (default 5, at least 5) after one
    warm-up run. Memory is the growth of resident memory from before the engine's import
    to after its load. PocketSphinx streams borrow a pooled decoder only during an
    utterance, so its stream figures are: open_stream(), an utterance's first 200 ms
    feed with an idle decoder, and with none idle (a decoder is built; memory growth).
    Run on an idle machine:
    ``.venv/bin/python perf/speech_engines.py [--runs 5] [--json PATH]``.

Result (2-vCPU cloud VM shared with other jobs, Python 3.11.7, --runs 7; the quietest
of six runs, with the range over all six in brackets)
    PocketSphinx: 2.0 ms CPU per 20 ms frame [1.8-2.4] (RTF 0.10), finish() 7.6 ms
    [7.2-10]; with the flat second pass 72 ms [68-76]. WER 0.083. Load 0.5 s and 194 MB
    with the two pre-warmed decoders; open_stream() 0.02 ms (no decoder); an utterance's
    first 200 ms feed 11 ms with a pooled decoder, 246 ms and 98 MB when every pooled
    decoder is busy and one must be built (a later run, --runs 5, on a quiet host).
    Whisper tiny.en: 475 ms per 2.6-3 s utterance with 1 thread [472-551] (RTF 0.17),
    377 ms with 2 [371-552]; CPU RTF ~0.2 either way. WER 0.042. Load 0.4 s, 123 MB.
    Piper (joe, medium, 22050 Hz): first chunk 136 ms [136-343] for a 3 s sentence, RTF
    0.047 (CPU RTF 0.09: onnxruntime uses both cores). Load 0.5-0.7 s, 142 MB.
    eSpeak NG (22050 Hz): first chunk 2.6 ms [2.5-3.9], RTF 0.001. Load 0.02 s, 5 MB.
    A sentence holds eSpeak's process lock 2.2 ms (max 2.2). close() after the first
    chunk: 0.03 ms for Piper, under 0.01 ms for eSpeak (both from the --runs 5 run).
    Piper and the 2-thread Whisper suffer most when other processes compete for cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in here may download

SENTENCES = (
    "I want to file a claim for my car accident",
    "my policy number is four five six",
    "yes please transfer me to an agent",
)
ANSWER = "Thanks, I have opened a claim for your car accident. An agent will call you back within the hour."
RATE = 16000
FRAME = RATE * 2 // 50  # 20 ms of PCM16
STT_ENGINES = ("pocketsphinx", "pocketsphinx-accurate", "whisper-1-thread", "whisper-2-threads")
TTS_ENGINES = ("piper", "espeak")


def rss_mb() -> float:
    """Resident memory of this process, in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def load(name: str) -> Any:
    """Import and build one engine (imports inside, so they count towards its load)."""
    if name.startswith("pocketsphinx"):
        from processors.stt.pocketsphinx_engine import PocketsphinxEngine

        return PocketsphinxEngine(accurate=name.endswith("accurate"))
    if name.startswith("whisper"):
        from processors.stt.whisper_engine import WhisperEngine

        return WhisperEngine(cpu_threads=1 if "1-thread" in name else 2)
    if name == "piper":
        from processors.tts.piper_engine import PiperEngine

        return PiperEngine()
    from processors.tts.espeak_engine import EspeakEngine

    return EspeakEngine()


def test_speech() -> list[bytes]:
    """The three sentences, Piper-spoken with noise off, at 16 kHz with padding."""
    import numpy as np
    import soxr

    from processors.tts.piper_engine import PiperEngine

    voice = PiperEngine(noise_scale=0.0, noise_w_scale=0.0)
    pad = np.zeros(RATE * 3 // 10, dtype=np.int16)
    out = []
    for sentence in SENTENCES:
        audio = np.frombuffer(b"".join(voice.synthesize(sentence)), dtype=np.int16)
        speech = soxr.resample(audio, voice.sample_rate, RATE).astype(np.int16)
        out.append(np.concatenate([pad, speech, pad]).tobytes())
    return out


def measure_stt(engine: Any, runs: int) -> dict[str, float]:
    """Medians over runs of: CPU per frame, RTF, finish() delay, WER."""
    from processors.stt.wer import word_errors

    speech = test_speech()
    per_frame, rtf, cpu_rtf, finish, wer = [], [], [], [], []
    audio_s = sum(len(pcm) for pcm in speech) / (RATE * 2)
    for run in range(runs + 1):
        frame_cpu: list[float] = []
        finishes: list[float] = []
        wall = 0.0
        errors = words = 0
        cpu_started = time.process_time()
        for sentence, pcm in zip(SENTENCES, speech, strict=True):
            stream = engine.open_stream()
            for start in range(0, len(pcm), FRAME):
                cpu0, wall0 = time.thread_time(), time.perf_counter()
                stream.feed(pcm[start : start + FRAME])
                wall += time.perf_counter() - wall0
                frame_cpu.append(time.thread_time() - cpu0)
            wall0 = time.perf_counter()
            final = stream.finish()
            finishes.append(time.perf_counter() - wall0)
            wall += finishes[-1]
            e, n = word_errors(sentence, final.text)
            errors, words = errors + e, words + n
            if hasattr(stream, "close"):
                stream.close()
        cpu = time.process_time() - cpu_started
        if run == 0:
            continue  # warm-up
        per_frame.append(statistics.mean(frame_cpu))
        rtf.append(wall / audio_s)
        cpu_rtf.append(cpu / audio_s)
        finish.append(statistics.mean(finishes))
        wer.append(errors / words)
    return {
        "frame_cpu_ms": statistics.median(per_frame) * 1e3,
        "rtf": statistics.median(rtf),
        "cpu_rtf": statistics.median(cpu_rtf),
        "finish_ms": statistics.median(finish) * 1e3,
        "wer": statistics.median(wer),
        "sample_rate": engine.sample_rate,
    }


def measure_tts(engine: Any, runs: int) -> dict[str, float]:
    """Medians over runs of: time to first chunk, RTF, audio seconds, close() after the
    first chunk; for eSpeak, how long one sentence holds the process-wide lock."""
    held = _time_espeak_lock() if engine.name == "espeak" else []
    first, rtf, cpu_rtf, seconds, close = [], [], [], [], []
    for run in range(runs + 1):
        cpu_started, started = time.process_time(), time.perf_counter()
        generator = engine.synthesize(ANSWER)
        chunk = next(generator)
        ttfc = time.perf_counter() - started
        total = len(chunk) + sum(len(c) for c in generator)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        generator = engine.synthesize(ANSWER)
        next(generator)
        started = time.perf_counter()
        generator.close()  # a barge-in after the first sentence
        closed = time.perf_counter() - started
        if run == 0:
            held.clear()
            continue  # warm-up
        audio_s = total / (engine.sample_rate * 2)
        first.append(ttfc)
        rtf.append(elapsed / audio_s)
        cpu_rtf.append(cpu / audio_s)
        seconds.append(audio_s)
        close.append(closed)
    figures = {
        "first_chunk_ms": statistics.median(first) * 1e3,
        "rtf": statistics.median(rtf),
        "cpu_rtf": statistics.median(cpu_rtf),
        "audio_s": statistics.median(seconds),
        "close_ms": statistics.median(close) * 1e3,
        "sample_rate": engine.sample_rate,
    }
    if held:
        figures["lock_hold_ms"] = statistics.median(held) * 1e3
        figures["lock_hold_max_ms"] = max(held) * 1e3
    return figures


def _time_espeak_lock() -> list[float]:
    """Replace eSpeak's process lock with one that records how long each hold lasts."""
    import threading

    from processors.tts import espeak_engine

    held: list[float] = []

    class TimedLock:
        def __init__(self) -> None:
            self._lock = threading.Lock()
            self._since = 0.0

        def __enter__(self) -> None:
            self._lock.acquire()
            self._since = time.perf_counter()

        def __exit__(self, *exc: object) -> None:
            held.append(time.perf_counter() - self._since)
            self._lock.release()

    espeak_engine._LOCK = TimedLock()  # type: ignore[assignment]
    return held


def measure_decoders(engine: Any) -> dict[str, float]:
    """PocketSphinx: cost of opening a stream, and of an utterance's first feed (200 ms),
    which borrows an idle decoder, or builds one when every pooled decoder is in use."""
    speech = bytes(RATE * 2 // 5)  # 200 ms: enough to open an utterance
    started = time.perf_counter()
    streams = [engine.open_stream() for _ in range(engine.idle_decoders + 1)]
    figures = {"open_stream_ms": (time.perf_counter() - started) * 1e3 / len(streams)}
    borrows = []
    for stream in streams[:-1]:  # these take the idle decoders
        started = time.perf_counter()
        stream.feed(speech)
        borrows.append(time.perf_counter() - started)
    figures["first_feed_pooled_ms"] = statistics.median(borrows) * 1e3
    before, started = rss_mb(), time.perf_counter()
    streams[-1].feed(speech)  # none idle: a decoder is built
    figures["first_feed_new_decoder_ms"] = (time.perf_counter() - started) * 1e3
    figures["rss_per_decoder_mb"] = rss_mb() - before
    for stream in streams:
        stream.close()
    return figures


def measure(name: str, runs: int) -> dict[str, float]:
    """All figures for one engine; meant to run in a fresh process."""
    before, started = rss_mb(), time.perf_counter()
    engine = load(name)
    figures = {"load_s": time.perf_counter() - started, "rss_mb": rss_mb() - before}
    if name.startswith("pocketsphinx"):
        figures.update(measure_decoders(engine))
    if name in STT_ENGINES:
        figures.update(measure_stt(engine, runs))
    else:
        figures.update(measure_tts(engine, runs))
    return figures


def run_child(name: str, runs: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--engine", name, "--runs", str(runs)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def print_table(results: dict[str, dict[str, float]], runs: int) -> None:
    print(f"speech engines: median of {runs} runs, {os.cpu_count()} CPUs, one process per engine\n")
    tail = f"{'load':>8}{'memory':>9}"
    print(f"{'STT':<24}{'CPU/20ms frame':>15}{'RTF':>8}{'CPU RTF':>9}{'finish()':>11}{'WER':>7}{tail}")
    for name in STT_ENGINES:
        f = results[name]
        print(
            f"{name:<24}{f['frame_cpu_ms']:>12.2f} ms{f['rtf']:>8.3f}{f['cpu_rtf']:>9.3f}{f['finish_ms']:>8.1f} ms"
            f"{f['wer']:>7.3f}{f['load_s']:>6.2f} s{f['rss_mb']:>6.0f} MB"
        )
    print(f"\n{'TTS':<24}{'first chunk':>15}{'RTF':>8}{'CPU RTF':>9}{'audio':>11}{'rate':>7}{tail}")
    for name in TTS_ENGINES:
        f = results[name]
        print(
            f"{name:<24}{f['first_chunk_ms']:>12.1f} ms{f['rtf']:>8.3f}{f['cpu_rtf']:>9.3f}{f['audio_s']:>9.2f} s"
            f"{f['sample_rate']:>7.0f}{f['load_s']:>6.2f} s{f['rss_mb']:>6.0f} MB"
        )
    print("\n" + "  ".join(f"{name} close() after the first chunk {results[name]['close_ms']:.2f} ms"
                            for name in TTS_ENGINES))
    f = results["espeak"]
    print(f"espeak lock held per sentence: median {f['lock_hold_ms']:.2f} ms, max {f['lock_hold_max_ms']:.2f} ms")
    f = results["pocketsphinx"]
    print(
        f"pocketsphinx: open_stream() {f['open_stream_ms']:.3f} ms; an utterance's first 200 ms feed "
        f"{f['first_feed_pooled_ms']:.1f} ms with a pooled decoder, {f['first_feed_new_decoder_ms']:.0f} ms "
        f"and {f['rss_per_decoder_mb']:.0f} MB when a decoder must be built"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (at least 5)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--engine", choices=STT_ENGINES + TTS_ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    runs = max(args.runs, 5)
    if args.engine:  # child: one engine, figures as one JSON line on stdout
        print(json.dumps(measure(args.engine, runs)))
        return
    results = {name: run_child(name, runs) for name in STT_ENGINES + TTS_ENGINES}
    print_table(results, runs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"runs": runs, "cpus": os.cpu_count(), "engines": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
