"""WAV files in and out: PCM16 mono, the format everything in a call uses."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from pipeline.errors import FrameError

__all__ = ["read_wav", "write_wav"]


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """(PCM16 mono bytes, sample rate) of a WAV file; stereo is mixed down to mono."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise FrameError(f"{path}: not a readable WAV file ({exc})") from exc
    if width != 2:
        raise FrameError(f"{path}: {8 * width}-bit WAV; only 16-bit PCM is supported")
    if channels > 1:
        samples = np.frombuffer(frames, dtype=np.int16).reshape(-1, channels).astype(np.int32)
        frames = (samples.sum(axis=1) // channels).astype(np.int16).tobytes()
    return frames, rate


def write_wav(path: str | Path, pcm: bytes, sample_rate: int) -> None:
    """Write PCM16 mono audio as a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
