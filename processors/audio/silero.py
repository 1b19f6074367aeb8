"""Silero VAD as a frame classifier for :class:`~processors.audio.vad.Vad`.

Silero VAD (MIT) is a small recurrent network that scores 32 ms of audio (512 samples at
16 kHz, 256 at 8 kHz) as speech with a probability, carrying a state from one chunk to
the next. It rejects noise, music and babble far better than webrtcvad's GMM, at a
higher CPU cost (measured in ``perf/end_of_turn.py``). The ONNX file ships inside the
installed ``pipecat-ai`` as package data; it is found on disk, never downloaded.

The model's documented interface (snakers4/silero-vad, ONNX v5):

* ``input``: float32 ``(batch, context + chunk)``: the chunk in [-1, 1], preceded by the
  last 64 (16 kHz) or 32 (8 kHz) samples of the previous chunk;
* ``state``: float32 ``(2, batch, 128)``, zeros at the start of a stream;
* ``sr``: int64 scalar, 8000 or 16000;
* outputs: the speech probability ``(batch, 1)`` and the next state.

:func:`silero_classifier` adapts it to the VAD's per-frame :data:`Classifier`: frames
(10-30 ms) are buffered into 32 ms chunks, and each frame is judged by the newest chunk's
probability. One classifier per call (it holds the stream state); the session is shared.
Frames under the VAD's level floor are not shown to the classifier (see ``Vad.feed``):
for Silero such quiet stretches are cut out of the stream, which costs nothing in
accuracy (they are silence either way) and saves the inference.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Final

import numpy as np

from .turn_model import pipecat_data_file
from .vad import Classifier

__all__ = ["SILERO_RATES", "SileroModel", "load_silero", "silero_classifier"]

logger = logging.getLogger(__name__)

#: Rates the model was trained on.
SILERO_RATES: Final = frozenset({8000, 16000})
_SILERO_FILE: Final = "audio/vad/data/silero_vad.onnx"


class SileroModel:
    """The loaded Silero ONNX session (shared by every call; one intra-op thread).

    Raises:
        Exception: whatever onnxruntime raises for a missing or corrupt file.
    """

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.path = path

    def run(self, chunk: np.ndarray, state: np.ndarray, sample_rate: int) -> tuple[float, np.ndarray]:
        """Score one chunk (with its context in front); return (probability, next state)."""
        outputs: list[Any] = self._session.run(
            None, {"input": chunk[np.newaxis], "state": state, "sr": np.array(sample_rate, dtype=np.int64)}
        )
        return float(np.asarray(outputs[0]).reshape(-1)[0]), np.asarray(outputs[1], dtype=np.float32)


_loaded: dict[Path | None, SileroModel | None] = {}
_load_lock = threading.Lock()


def load_silero(path: Path | None = None) -> SileroModel | None:
    """Load Silero VAD once per process (blocking: call it off the event loop).

    Returns None, with a warning naming the problem, when the file is missing or does
    not load; the caller then keeps webrtcvad.
    """
    with _load_lock:
        if path not in _loaded:
            _loaded[path] = _load(path)
        return _loaded[path]


def _load(path: Path | None) -> SileroModel | None:
    file = path if path is not None else pipecat_data_file(_SILERO_FILE)
    if file is None:
        logger.warning("Silero VAD not found: install pipecat-ai (the 'perf' extra) to get %s", _SILERO_FILE)
        return None
    try:
        return SileroModel(file)
    except Exception as exc:  # a broken model file falls back to webrtcvad, not a dead call
        logger.warning("Silero VAD %s failed to load: %s", file, exc)
        return None


def silero_classifier(model: SileroModel, sample_rate: int, threshold: float = 0.5) -> Classifier:
    """A per-call :data:`Classifier` that says speech when Silero's probability >= ``threshold``.

    Default threshold 0.5, the model authors' recommendation.

    Raises:
        ValueError: a rate Silero does not take (resample to 8 or 16 kHz first).
    """
    if sample_rate not in SILERO_RATES:
        raise ValueError(f"Silero VAD needs 8000 or 16000 Hz, got {sample_rate}")
    return _SileroStream(model, sample_rate, threshold)


class _SileroStream:
    """One call's Silero stream state; calling it classifies a frame."""

    def __init__(self, model: SileroModel, sample_rate: int, threshold: float) -> None:
        self._model = model
        self._rate = sample_rate
        self._threshold = threshold
        self._chunk = 512 if sample_rate == 16000 else 256
        self._context = 64 if sample_rate == 16000 else 32
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        # The previous chunk's tail (the context) plus samples waiting for a whole chunk.
        self._window = np.zeros(self._context, dtype=np.float32)
        self._speech = False

    def __call__(self, frame: bytes, sample_rate: int) -> bool:
        samples = np.frombuffer(frame, dtype=np.int16).astype(np.float32) / 32768.0
        window = np.concatenate([self._window, samples])
        span = self._context + self._chunk
        while len(window) >= span:
            probability, self._state = self._model.run(window[:span], self._state, self._rate)
            self._speech = probability >= self._threshold
            window = window[self._chunk :]
        self._window = window
        return self._speech
