"""Text-to-speech: the engine interface, text preparation and the local engines.

``TTSEngine.synthesize`` is a generator of PCM16 chunks that the consumer may close at
any time (barge-in). ``PiperEngine`` is the natural-sounding neural voice,
``EspeakEngine`` the tiny and fast one. The engine classes are imported on first use,
because onnxruntime and libespeak-ng take time and memory to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from processors.tts.engine import MAX_TEXT_CHARS, TTSEngine, clean_text, synthesis_units

if TYPE_CHECKING:
    from processors.tts.espeak_engine import EspeakEngine
    from processors.tts.piper_engine import PiperEngine

__all__ = [
    "MAX_TEXT_CHARS",
    "EspeakEngine",
    "PiperEngine",
    "TTSEngine",
    "clean_text",
    "synthesis_units",
]

_LAZY = {
    "EspeakEngine": "processors.tts.espeak_engine",
    "PiperEngine": "processors.tts.piper_engine",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
