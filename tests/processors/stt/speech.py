"""Test speech for the STT engines: Piper-synthesised utterances at 16 kHz.

The audio is generated, never downloaded. Piper's noise is switched off so the audio,
and therefore every recognition result the tests assert on, is the same on every run.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import soxr

from processors.tts.piper_engine import PiperEngine

SENTENCES = (
    "I want to file a claim for my car accident",
    "my policy number is four five six",
    "yes please transfer me to an agent",
)
RATE = 16000
FRAME_BYTES = RATE * 2 * 20 // 1000  # 20 ms of PCM16


@functools.cache
def _voice() -> PiperEngine:
    return PiperEngine(noise_scale=0.0, noise_w_scale=0.0)


@functools.cache
def utterance(text: str, pad_ms: int = 300) -> bytes:
    """``text`` spoken by Piper, resampled to 16 kHz, with silence on both sides."""
    voice = _voice()
    audio = np.frombuffer(b"".join(voice.synthesize(text)), dtype=np.int16)
    speech = soxr.resample(audio, voice.sample_rate, RATE)
    pad = np.zeros(RATE * pad_ms // 1000, dtype=np.int16)
    return np.concatenate([pad, speech.astype(np.int16), pad]).tobytes()


def silence(ms: int) -> bytes:
    """``ms`` milliseconds of digital silence at 16 kHz."""
    return bytes(RATE * 2 * ms // 1000)


def frames(pcm: bytes, size: int = FRAME_BYTES) -> Iterator[bytes]:
    """``pcm`` in 20 ms pieces, as a transport delivers it."""
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]
