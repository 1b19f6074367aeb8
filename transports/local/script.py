"""What a scripted caller says, rendered to audio at the line rate before the call.

A script is lines of text, spoken by a local voice, or a WAV file of someone speaking.
A text line may hold pauses, ``"my policy number is <pause 800> four five six"``: the
words on each side are synthesised separately, their silence at the pause trimmed, and
exactly that many ms of silence put between them (a caller hesitating mid-sentence, to
try the end of turn with). :func:`parse_line` checks a line's markup.
:func:`render_script` turns either into :class:`Utterance` s: PCM16 mono at the line
rate, with the time at which the voice starts in each (the moment a barge-in's reaction
time is measured from). It loads a voice, synthesises and reads files: blocking work,
so callers run it off the event loop (``Processor.run_blocking``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soxr

from pipeline.models import shared
from processors.tts.engine import TTSEngine

from .wav import read_wav

__all__ = ["MAX_PAUSE_MS", "SPEECH_DBFS", "Utterance", "Voice", "convert_rate", "parse_line", "render_script",
           "voice_onset_ms"]

#: A 10 ms window louder than this counts as the caller's voice (for timing). Piper's and
#: eSpeak's silences sit below -60 dBFS, speech well above -30.
SPEECH_DBFS = -45.0

Voice = Literal["piper", "espeak"]

#: Longest ``<pause N>`` in a line: a caller silent longer than this has left the call.
MAX_PAUSE_MS = 30_000
_MARKUP = re.compile(r"(<[^>]*>)")
_PAUSE = re.compile(r"<\s*pause\s+(\d+)\s*(?:ms)?\s*>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Utterance:
    """One thing the caller says: its audio at the line rate, and where the voice starts."""

    text: str
    pcm: bytes
    voice_start_ms: float = 0.0

    @classmethod
    def from_pcm(cls, text: str, pcm: bytes, sample_rate: int) -> Utterance:
        """An utterance of ``pcm`` (PCM16 mono at the line rate), its voice onset measured."""
        return cls(text=text, pcm=pcm, voice_start_ms=voice_onset_ms(pcm, sample_rate))


def render_script(
    lines: Sequence[str | Utterance], *, sample_rate: int, voice: Voice = "piper", wav: Path | None = None
) -> list[Utterance]:
    """The caller's utterances at ``sample_rate`` (blocking: run it off the loop).

    With ``wav``, the file is the one utterance (any rate, mono or stereo). Otherwise
    each text line is synthesised with ``voice``; blank lines are skipped, and lines that
    are already ``Utterance`` s (audio at the line rate) are kept as they are.
    """
    if wav is not None:
        pcm, rate = read_wav(wav)
        return [Utterance.from_pcm(f"<{wav.name}>", convert_rate(pcm, rate, sample_rate), sample_rate)]
    out: list[Utterance] = []
    engine: TTSEngine | None = None
    for line in lines:
        if isinstance(line, Utterance):
            out.append(line)
            continue
        if not line.strip():
            continue
        pieces = parse_line(line)
        engine = engine or _caller_voice(voice)
        pcm = _render_pieces(engine, pieces, sample_rate)
        words = " ".join(piece for piece in pieces if isinstance(piece, str))
        out.append(Utterance.from_pcm(words, pcm, sample_rate))
    return out


def parse_line(line: str) -> list[str | int]:
    """A caller line as words to say (str) and pauses in ms (int), in order.

    ``<pause N>`` (or ``<pause N ms>``) is a pause of N ms, 1 to :data:`MAX_PAUSE_MS`.

    Raises:
        ValueError: other markup, a stray ``<`` or ``>``, a pause out of range, or no
            words at all; the message names what was wrong.
    """
    pieces: list[str | int] = []
    for part in _MARKUP.split(line):
        if not part.startswith("<"):
            if "<" in part or ">" in part:
                raise ValueError(f"caller line {line!r}: unmatched '<' or '>' (a pause is written <pause 800>)")
            if part.strip():
                pieces.append(part.strip())
            continue
        match = _PAUSE.fullmatch(part)
        if match is None:
            raise ValueError(f"caller line {line!r}: {part!r} is not a pause (write <pause 800>, in ms)")
        ms = int(match.group(1))
        if not 1 <= ms <= MAX_PAUSE_MS:
            raise ValueError(f"caller line {line!r}: {part!r} must last 1 to {MAX_PAUSE_MS} ms")
        pieces.append(ms)
    if not any(isinstance(piece, str) for piece in pieces):
        raise ValueError(f"caller line {line!r} has no words to say")
    return pieces


def _render_pieces(engine: TTSEngine, pieces: list[str | int], line_rate: int) -> bytes:
    """Synthesise the words of ``pieces`` at ``line_rate`` with exact pauses between them."""
    chunks: list[bytes] = []
    for i, piece in enumerate(pieces):
        if isinstance(piece, int):
            chunks.append(bytes(line_rate * piece // 1000 * 2))
            continue
        pcm = convert_rate(b"".join(engine.synthesize(piece)), engine.sample_rate, line_rate)
        # The voice's own silence at a pause would lengthen it: keep the pause exact.
        before = i > 0 and isinstance(pieces[i - 1], int)
        after = i + 1 < len(pieces) and isinstance(pieces[i + 1], int)
        chunks.append(_trim(pcm, line_rate, start=before, end=after))
    return b"".join(chunks)


def _trim(pcm: bytes, rate: int, *, start: bool, end: bool) -> bytes:
    """``pcm`` without the quiet 10 ms windows at its start and/or end."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    win = rate // 100
    n = len(samples) // win
    if n == 0:
        return pcm
    rms = np.sqrt(np.mean(samples[: n * win].reshape(n, win) ** 2, axis=1) + 1e-9)
    loud = np.nonzero(20 * np.log10(rms / 32768.0) > SPEECH_DBFS)[0]
    if not len(loud):
        return pcm
    first = int(loud[0]) * win if start else 0
    last = (int(loud[-1]) + 1) * win if end else len(samples)
    return pcm[2 * first : 2 * last]


def _caller_voice(name: Voice) -> TTSEngine:
    """The caller's voice, loaded once per process: deterministic (Piper's noise off), so
    the same script gives the same audio, and so the same transcripts, on every run."""
    if name != "piper":
        from processors.tts.node import engine_for

        return engine_for("espeak")

    def load() -> TTSEngine:
        from processors.tts.piper_engine import PiperEngine

        return PiperEngine(noise_scale=0.0, noise_w_scale=0.0, threads=1)

    return shared(("caller-voice", name), load)


def convert_rate(pcm: bytes, rate: int, line_rate: int) -> bytes:
    """Whole-buffer PCM16 conversion from any ``rate`` (a 44.1 kHz recording, a 22.05 kHz
    voice) to the line's. One-shot, so no streaming state: soxr's HQ filter directly."""
    if rate <= 0:
        raise ValueError(f"audio sample rate must be > 0, got {rate}")
    if rate == line_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype=np.int16)
    return bytes(soxr.resample(samples, rate, line_rate, quality="HQ").astype(np.int16).tobytes())


def voice_onset_ms(pcm: bytes, rate: int) -> float:
    """Start (ms) of the first 10 ms window louder than :data:`SPEECH_DBFS`; 0 if none."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    win = rate // 100
    n = len(samples) // win
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(samples[: n * win].reshape(n, win) ** 2, axis=1) + 1e-9)
    loud = np.nonzero(20 * np.log10(rms / 32768.0) > SPEECH_DBFS)[0]
    return float(loud[0] * 10) if len(loud) else 0.0
