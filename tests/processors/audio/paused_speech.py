"""Generated speech with a mid-sentence pause of known length (16 kHz PCM16).

Piper renders the whole sentence with a comma where the caller hesitates, so the words
before the pause keep their non-final intonation (a fragment rendered on its own would
end with a falling, "finished" pitch); the comma's short gap is then stretched to the
pause wanted. Deterministic: Piper's noise is off (see ``tests.processors.stt.speech``).
"""

from __future__ import annotations

import numpy as np

from tests.processors.stt.speech import RATE, utterance

#: Sentences with a natural hesitation point marked by the comma.
PAUSED_SENTENCES = (
    "my policy number is, four five six",
    "my phone number is, five five five, one two three four",
    "I would like to, change my address",
    "my date of birth is, the fourth of July",
    "I was calling because, my card was stolen",
    "the account is in the name of, John Smith",
)
_FRAME = RATE // 50  # 20 ms
_QUIET_DBFS = -45.0


def comma_gap(pcm: bytes) -> tuple[int, int]:
    """Sample range of the longest quiet stretch inside ``pcm`` (not at its edges)."""
    audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float64) / 32768.0
    frames = audio[: len(audio) // _FRAME * _FRAME].reshape(-1, _FRAME)
    quiet = 10 * np.log10((frames**2).mean(axis=1) + 1e-12) < _QUIET_DBFS
    best = (0, 0)
    i = 0
    while i < len(quiet):
        j = i
        while j < len(quiet) and quiet[j]:
            j += 1
        if j > i and i > 0 and j < len(quiet) and j - i > best[1] - best[0]:
            best = (i, j)
        i = max(j, i + 1)
    if best == (0, 0):
        raise ValueError("no pause inside the utterance")
    return best[0] * _FRAME, best[1] * _FRAME


def paused(text: str, pause_ms: int) -> tuple[bytes, int]:
    """``text`` with its longest inner gap stretched to ``pause_ms``; no padding.

    Returns the audio and the sample where the pause starts.
    """
    pcm = utterance(text, pad_ms=0)
    start, end = comma_gap(pcm)
    samples = np.frombuffer(pcm, dtype=np.int16)
    gap = np.zeros(RATE * pause_ms // 1000, dtype=np.int16)
    return np.concatenate([samples[:start], gap, samples[end:]]).tobytes(), start
