"""Speech-to-text: the engine interface and the local engines.

``STTEngine`` opens one ``RecognizerStream`` per caller; ``PocketsphinxEngine`` streams
with interim results; ``WhisperEngine`` streams by re-decoding the growing utterance and
committing the words two decodes agree on (``processors.stt.whisper_stream``). The engine classes
are imported on first use, because their libraries take ~0.3 s and tens of MB to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from processors.stt.engine import Hypothesis, RecognizerStream, STTEngine, check_pcm16
from processors.stt.wer import wer

if TYPE_CHECKING:
    from processors.stt.pocketsphinx_engine import PocketsphinxEngine
    from processors.stt.whisper_engine import WhisperEngine

__all__ = [
    "Hypothesis",
    "PocketsphinxEngine",
    "RecognizerStream",
    "STTEngine",
    "WhisperEngine",
    "check_pcm16",
    "wer",
]

_LAZY = {
    "PocketsphinxEngine": "processors.stt.pocketsphinx_engine",
    "WhisperEngine": "processors.stt.whisper_engine",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
