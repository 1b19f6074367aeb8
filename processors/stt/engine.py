"""The speech-to-text engine interface.

An engine owns the (large, slow to load) model; a stream is one caller's utterance
recogniser opened on it. Everything here is synchronous: the async STT processor runs
these calls in a bounded executor so a slow decode never blocks the event loop.

Audio is PCM16 mono little-endian at the engine's ``sample_rate``. Times in a
:class:`Hypothesis` are milliseconds from the start of the utterance, measured in audio
fed (not wall-clock time), so they are reproducible and independent of scheduling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Hypothesis", "RecognizerStream", "STTEngine", "check_pcm16"]


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """What the recogniser heard so far (interim) or for the whole utterance (final).

    Attributes:
        text: Recognised words, lower or mixed case depending on the engine; may be empty.
        final: True for the result of :meth:`RecognizerStream.finish`.
        confidence: 0..1; engines that cannot estimate it report 0.0 for interims.
        start_ms: Start of the recognised speech, from the start of the utterance.
        end_ms: End of the recognised speech, from the start of the utterance.
    """

    text: str
    final: bool
    confidence: float
    start_ms: int
    end_ms: int


@runtime_checkable
class RecognizerStream(Protocol):
    """One utterance recogniser. Not thread-safe: one caller, one thread at a time."""

    sample_rate: int
    """The audio rate the stream expects, in Hz (16000 for the local engines)."""

    def feed(self, pcm: bytes) -> Hypothesis | None:
        """Add PCM16 mono audio (an even number of bytes, any length).

        Returns an interim hypothesis when the partial text changed, else None.

        Raises:
            ValueError: if ``len(pcm)`` is odd.
        """
        ...

    def finish(self) -> Hypothesis:
        """End the utterance fed since the last finish/reset and return the final result.

        Never fails on an empty utterance: it returns a final hypothesis with empty text.
        The stream is ready for the next utterance afterwards.
        """
        ...

    def reset(self) -> None:
        """Drop the current utterance (barge-in, flush) without producing a result."""
        ...


@runtime_checkable
class STTEngine(Protocol):
    """A loaded speech recogniser that opens one stream per caller."""

    name: str
    """Short engine name for logs and metrics, for example ``"pocketsphinx"``."""

    sample_rate: int
    """The audio rate its streams expect, in Hz."""

    def open_stream(self) -> RecognizerStream:
        """Open a new independent stream; the model itself is loaded once and shared."""
        ...


def check_pcm16(pcm: bytes) -> None:
    """Raise ValueError unless ``pcm`` holds whole 16-bit samples.

    Engines call this first so that every engine rejects bad input the same way, before
    anything reaches native code.
    """
    if len(pcm) % 2:
        raise ValueError(f"PCM16 audio must have an even number of bytes, got {len(pcm)}")
