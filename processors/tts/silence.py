"""The silence a voice puts around each synthesis unit, measured and trimmed at joins.

A neural voice speaks every unit as a whole utterance: Piper (joe, medium) opens each
with 30-65 ms of silence and closes it with 125-200 ms (measured below -40 dBFS in 5 ms
windows on clauses of 1 to 9 words). Between two sentences that is a natural pause. But
when a reply's first unit is cut mid-sentence ("I am sorry to hear | about your
accident."), the join would carry ~250 ms of silence where a speaker pauses for none, so
the TTS node trims, at a join inside a sentence, the end of the first unit to
:data:`JOIN_TRAIL_MS` and the start of the next to :data:`LEAD_MS`. The start of every
unit is trimmed to :data:`LEAD_MS` too: the first audio of a reply carries speech sooner.

Pure functions on PCM16 mono bytes; cuts fall on whole samples inside silence, so no
click is added.
"""

from __future__ import annotations

from typing import Final

import numpy as np

__all__ = ["JOIN_TRAIL_MS", "LEAD_MS", "SILENCE_DBFS", "edge_silence_ms", "trim_edges"]

SILENCE_DBFS: Final = -40.0
"""A 5 ms window quieter than this (RMS, dB full scale) is silence."""

LEAD_MS: Final = 20.0
"""Silence kept before the first sound of a unit."""

JOIN_TRAIL_MS: Final = 40.0
"""Silence kept after a unit that ends mid-sentence: with :data:`LEAD_MS`, a 60 ms join,
about the gap between two words of running speech."""

_WINDOW_MS: Final = 5.0


def _loud_windows(pcm: bytes, rate: int) -> tuple[np.ndarray, int]:
    """Indices of windows louder than :data:`SILENCE_DBFS`, and the window length in samples."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype=np.int16).astype(np.float32) / 32768.0
    window = max(1, int(rate * _WINDOW_MS / 1000))
    count = len(samples) // window
    if count == 0:
        return np.empty(0, dtype=np.int64), window
    power = (samples[: count * window].reshape(count, window) ** 2).mean(axis=1)
    threshold = 10.0 ** (SILENCE_DBFS / 10.0)  # on power, not amplitude
    return np.nonzero(power > threshold)[0], window


def edge_silence_ms(pcm: bytes, rate: int) -> tuple[float, float]:
    """(leading, trailing) silence of ``pcm`` in ms, to a 5 ms window; all of it if silent."""
    loud, window = _loud_windows(pcm, rate)
    total = len(pcm) // 2 / rate * 1000
    if len(loud) == 0:
        return total, total
    lead = loud[0] * window / rate * 1000
    trail = total - (loud[-1] + 1) * window / rate * 1000
    return float(lead), float(trail)


def trim_edges(pcm: bytes, rate: int, *, lead_ms: float | None, trail_ms: float | None) -> bytes:
    """``pcm`` with its leading silence cut to ``lead_ms`` and its trailing silence cut to
    ``trail_ms`` (None: that edge untouched). Audio with no sound at all is returned whole."""
    loud, window = _loud_windows(pcm, rate)
    if len(loud) == 0:
        return pcm
    start, end = 0, len(pcm) // 2
    if lead_ms is not None:
        start = max(0, int(loud[0]) * window - int(rate * lead_ms / 1000))
    if trail_ms is not None:
        end = min(end, (int(loud[-1]) + 1) * window + int(rate * trail_ms / 1000))
    return pcm[start * 2 : end * 2]
