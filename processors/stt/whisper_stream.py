"""Incremental Whisper: re-decode the growing utterance while the caller speaks.

Whisper is not a streaming model, so a :class:`WhisperStream` decodes the whole window
of audio again each time enough new speech came in (``step_ms``, 800 ms by default),
and as soon as the caller pauses (:data:`PAUSE_MS` of quiet after speech). Each decode
gives an interim transcript. Words that two decodes in a row agree on (local
agreement) are *committed*: the next decodes are forced to begin with them, so a
committed word is never retracted and is not decoded token by token again.

The final transcript at :meth:`WhisperStream.finish` is usually free: the endpointing
silence window (300-600 ms) is longer than :data:`PAUSE_MS`, so a decode started at
the pause has covered every word by the time the turn ends, and if no speech came
after it, its result *is* the final. Otherwise one decode of the window runs, forced
through the committed words; only the unstable tail is generated.

What counts as speech here is plain energy: a 10 ms block louder than
:data:`VOICE_DBFS`. It only decides when to decode, never what was said: a block of
noise above it costs a decode, a soft sound below it after the pause is the one thing
that would be missed, and the pause decode already covered everything before the pause.

A window is bounded (the engine's ``max_utterance_s``, 20 s): when it is full, the
stream cuts it at its quietest 20 ms in the last two seconds, commits the whole text
before the cut, and goes on with the audio after it.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from processors.stt.engine import Hypothesis, check_pcm16

if TYPE_CHECKING:
    from processors.stt.whisper_engine import WhisperEngine

__all__ = ["HOLD_BACK_WORDS", "PAUSE_MS", "VOICE_DBFS", "WhisperStream"]

logger = logging.getLogger(__name__)

_BYTES_PER_MS = 32  # 16 kHz PCM16
_BLOCK = 160  # samples per energy block (10 ms)
PAUSE_MS = 200
"""Quiet after speech that triggers a decode at once (a pause, or the end of the turn)."""
VOICE_DBFS = -45.0
"""RMS level of a 10 ms block above which it counts as speech, in dB full scale."""
_VOICE_RMS = 32768 * 10 ** (VOICE_DBFS / 20)
_CUT_SEARCH_MS = 2000
HOLD_BACK_WORDS = 2
"""Agreed words left uncommitted at the end of the agreement (see ``_agreement``)."""


class WhisperStream:
    """One caller's incremental recogniser; see :class:`RecognizerStream` and the module.

    Not thread-safe (one executor step at a time). Times are coarse: ``start_ms`` is 0
    and ``end_ms`` the audio fed; the VAD knows the precise boundaries.
    """

    sample_rate: int = 16000
    _audio: bytearray
    _committed: tuple[int, ...]
    _hyp: tuple[int, ...]
    _last_text: str

    def __init__(self, engine: WhisperEngine, *, step_ms: int) -> None:
        self._engine = engine
        self.step_ms = step_ms
        self._clear()

    @property
    def committed_text(self) -> str:
        """The words of this utterance that can no longer change."""
        return _join(self._done, self._engine.text(self._committed))

    @property
    def decodes(self) -> int:
        """Decodes run for the current utterance (interim steps, slides and the final)."""
        return self._decodes

    def feed(self, pcm: bytes) -> Hypothesis | None:
        """Add audio; decode when a step of speech or a pause came in.

        Returns an interim hypothesis when the decoded text changed, or after a decode at
        a pause (the text, changed or not, then covers all the speech fed), else None.
        """
        check_pcm16(pcm)
        self._audio += pcm
        self._fed += len(pcm)
        self._listen(pcm)
        if len(self._audio) >= self._engine.max_utterance_bytes:
            self._slide()
        elif self.step_ms and self._voiced and (
            len(self._audio) - self._decoded_len >= self.step_ms * _BYTES_PER_MS or self._quiet_ms >= PAUSE_MS
        ):
            self._step()
        else:
            return None
        text = _join(self._done, self._engine.text(self._hyp))
        if text == self._last_text and self._quiet_ms < PAUSE_MS:
            return None  # a pause decode answers even unchanged: its text now covers the pause
        self._last_text = text
        return Hypothesis(text, False, math.exp(self._logprob), 0, self._fed // _BYTES_PER_MS)

    def finish(self) -> Hypothesis:
        """The final hypothesis; decodes only if speech came after the last decode."""
        try:
            if self._voiced:
                self._step(final=True)
            text = _join(self._done, self._engine.text(self._hyp))
            confidence = math.exp(self._logprob) if text else 0.0
            return Hypothesis(text, True, confidence, 0, self._fed // _BYTES_PER_MS)
        finally:
            self._clear()

    def reset(self) -> None:
        """Drop the current utterance."""
        self._clear()

    def close(self) -> None:
        """Release the audio (the model belongs to the engine); same as :meth:`reset`."""
        self._clear()

    def _clear(self) -> None:
        self._audio = bytearray()  # the current window
        self._fed = 0  # bytes of the whole utterance
        self._done = ""  # text of the windows slid past
        self._committed = ()  # tokens of the window two decodes agreed on
        self._hyp = ()  # committed + the tail of the last decode
        self._decoded_len = 0  # len(self._audio) at the last decode
        self._voiced = False  # speech fed since the last decode
        self._quiet_ms = 0  # quiet at the end of the audio fed
        self._logprob = 0.0
        self._decodes = 0
        self._last_text = ""

    def _listen(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        for start in range(0, len(samples), _BLOCK):
            block = samples[start : start + _BLOCK]
            if float(np.sqrt(np.mean(block * block))) > _VOICE_RMS:
                self._voiced = True
                self._quiet_ms = 0
            else:
                self._quiet_ms += len(block) * 1000 // 16000

    def _step(self, *, final: bool = False) -> None:
        """Decode the window through the committed tokens; commit what two decodes agree on."""
        decoded = self._engine.decode(bytes(self._audio), self._committed)
        self._decodes += 1
        hyp = self._committed + decoded.tokens
        if not final:
            self._committed = hyp[: self._agreement(self._hyp, hyp)]
        self._hyp = hyp
        self._logprob = decoded.logprob
        self._decoded_len = len(self._audio)
        self._voiced = False

    def _agreement(self, before: tuple[int, ...], now: tuple[int, ...]) -> int:
        """How many tokens to commit: the longest common prefix of two decodes, cut back
        to a word boundary both place there, less the last agreed word.

        The word at the end of the audio may be incomplete, hence the boundary. The last
        agreed words are held back because Whisper revises a word when it hears the
        ones after it ("that pen is" -> "that pin is"). Final-transcript word errors on
        the real-recording set (852 words, 8 and 16 kHz, 400 ms steps): one-shot 43;
        incremental holding back 0 words 60, 1 word 55, 2 words 54, 3 words 51.
        """
        common = len(self._committed)
        limit = min(len(before), len(now))
        while common < limit and before[common] == now[common]:
            common += 1
        boundaries = [
            cut
            for cut in range(min(common, limit - 1), len(self._committed), -1)
            if self._engine.starts_word(now[cut]) and self._engine.starts_word(before[cut])
        ]
        return boundaries[HOLD_BACK_WORDS] if len(boundaries) > HOLD_BACK_WORDS else len(self._committed)

    def _slide(self) -> None:
        """The window is full: commit everything before its quietest moment, keep the rest."""
        samples = np.frombuffer(bytes(self._audio), dtype="<i2").astype(np.float32)
        search = _CUT_SEARCH_MS * 16
        tail = samples[-search:]
        blocks = tail[: len(tail) // 320 * 320].reshape(-1, 320)
        quietest = int(np.argmin(np.mean(blocks * blocks, axis=1)))
        cut = (len(samples) - len(tail) + quietest * 320 + 160) * 2  # mid-block, in bytes
        logger.info("utterance longer than %d s: committing its start and sliding on", len(self._audio) // 32000)
        decoded = self._engine.decode(bytes(self._audio[:cut]), self._committed)
        self._decodes += 1
        self._done = _join(self._done, self._engine.text(self._committed + decoded.tokens))
        self._logprob = decoded.logprob
        self._audio = self._audio[cut:]
        self._committed = self._hyp = ()
        self._decoded_len = 0
        self._voiced = bool(np.any(np.abs(samples[cut // 2 :]) > _VOICE_RMS))


def _join(first: str, second: str) -> str:
    return f"{first} {second}".strip()
