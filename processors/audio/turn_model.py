"""Smart Turn v3: a semantic end-of-turn model, loaded from the installed ``pipecat-ai``.

Smart Turn (Daily, BSD-2) is a small Whisper-encoder classifier: given the last 8 s of
the caller's audio it returns the probability that the caller has finished the turn,
judged from the words *and* the intonation ("my number is four five six" with a falling
pitch is done; "my number is ..." trailing off is not). ``pipecat-ai`` ships the ONNX
file as package data; it is found on disk without importing pipecat (which pulls in a
lot) and never downloaded. pipecat is in the ``perf`` extra only, so on an install
without it :func:`load_smart_turn` returns None with a logged warning, and the caller
falls back to silence-only endpointing.

The model's documented interface:

* input ``input_features``: float32 ``(batch, 80, 800)``, the Whisper log-mel
  spectrogram (80 mel bands, 25 ms window, 10 ms hop) of exactly 8 s of 16 kHz audio;
  shorter audio is zero-padded *in front*, so the end of speech always sits at the end
  of the window; the waveform is normalised to zero mean and unit variance first, as
  ``WhisperFeatureExtractor(do_normalize=True)`` does;
* output: ``(batch, 1)``, the probability (after a sigmoid) that the turn is complete.

The features come from faster-whisper's numpy ``FeatureExtractor`` (a core dependency,
the same Whisper front end the STT uses). Inference takes tens of milliseconds of CPU,
so it runs on the blocking executor, never on the event loop; onnxruntime gets one
intra-op thread so a decision never competes with STT and TTS for every core.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "MODEL_RATE",
    "SmartTurn",
    "TurnModel",
    "WINDOW_S",
    "load_smart_turn",
    "pipecat_data_file",
    "smart_turn_features",
]

logger = logging.getLogger(__name__)

#: Sample rate the model was trained on.
MODEL_RATE: Final = 16000
#: Seconds of audio the model looks at (the end of the turn so far).
WINDOW_S: Final = 8
_WINDOW_SAMPLES: Final = MODEL_RATE * WINDOW_S
_SMART_TURN_FILE: Final = "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"

#: An end-of-turn model: float32 mono audio at 16 kHz in [-1, 1] (the turn so far, ending
#: now) -> probability that the caller is done. Tests pass pure functions.
TurnModel = Callable[[npt.NDArray[np.float32]], float]


def pipecat_data_file(relative: str) -> Path | None:
    """Path of a data file inside the installed ``pipecat`` package, or None.

    Found through the import system's spec, so pipecat itself is not imported.
    """
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    return None


class _Features:
    """Whisper's log-mel front end sized for an 8 s window (built once, thread-safe)."""

    _instance: _Features | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        self._extract = FeatureExtractor(feature_size=80, sampling_rate=MODEL_RATE, chunk_length=WINDOW_S)

    @classmethod
    def get(cls) -> _Features:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __call__(self, window: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # padding=0: the window is already exactly 8 s; 801 STFT frames, the last dropped.
        mel = self._extract(window, padding=0)
        return np.asarray(mel, dtype=np.float32)


def smart_turn_features(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The model's input for ``audio`` (16 kHz, any length): shape ``(1, 80, 800)``.

    Keeps the last 8 s (zero-padded in front when shorter), normalises the waveform to
    zero mean and unit variance, and computes Whisper's log-mel spectrogram.
    """
    if audio.ndim != 1:
        raise ValueError(f"smart_turn_features: expected mono audio, got shape {audio.shape}")
    window = np.zeros(_WINDOW_SAMPLES, dtype=np.float32)
    tail = audio[-_WINDOW_SAMPLES:].astype(np.float32)
    window[_WINDOW_SAMPLES - len(tail) :] = tail
    window = (window - window.mean()) / np.sqrt(window.var() + 1e-7)
    return _Features.get()(window)[np.newaxis]


class SmartTurn:
    """One loaded Smart Turn v3 model; calling it is a :data:`TurnModel`.

    The session is shared by every call in the process (onnxruntime sessions are safe
    to run from several threads); it has no per-call state.

    Args:
        path: the ONNX file.

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
        self._input = self._session.get_inputs()[0].name
        self.path = path
        _Features.get()  # build the mel filters now, not on the first decision

    def __call__(self, audio: npt.NDArray[np.float32]) -> float:
        """Probability (0-1) that the turn ending with ``audio`` (16 kHz) is complete."""
        outputs = self._session.run(None, {self._input: smart_turn_features(audio)})
        probability = float(np.asarray(outputs[0]).reshape(-1)[0])
        return min(1.0, max(0.0, probability))


_loaded: dict[Path | None, SmartTurn | None] = {}
_load_lock = threading.Lock()


def load_smart_turn(path: Path | None = None) -> SmartTurn | None:
    """Load Smart Turn v3 once per process (blocking: call it off the event loop).

    Args:
        path: the ONNX file; default the one shipped in the installed ``pipecat-ai``.

    Returns:
        The model, or None when the file is missing or does not load; a warning names
        what went wrong, and callers fall back to silence-only endpointing. A failure is
        remembered, so a broken install costs one warning per call, not one load each.
    """
    with _load_lock:
        if path in _loaded:
            model = _loaded[path]
        else:
            model = _loaded[path] = _load(path)
    if model is None:
        logger.warning("end-of-turn model unavailable (%s): silence-only endpointing",
                       path if path is not None else f"pipecat-ai's {_SMART_TURN_FILE}")
    return model


def _load(path: Path | None) -> SmartTurn | None:
    file = path if path is not None else pipecat_data_file(_SMART_TURN_FILE)
    if file is None:
        logger.warning("Smart Turn model not found: install pipecat-ai (the 'perf' extra) to get %s",
                       _SMART_TURN_FILE)
        return None
    try:
        model = SmartTurn(file)
    except Exception as exc:  # a corrupt or unreadable file must not take the call down
        logger.warning("Smart Turn model %s failed to load: %s", file, exc)
        return None
    logger.info("Smart Turn model loaded from %s", file)
    return model
