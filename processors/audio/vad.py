"""Voice activity detection as a pure, synchronous state machine.

:class:`Vad` takes PCM16 mono audio of any length together with the time it arrived,
cuts it into whole frames (10/20/30 ms, as webrtcvad requires), classifies each frame,
and returns :class:`SpeechStarted` / :class:`SpeechStopped` events stamped with the time
the speech *actually* started or stopped, not the later time at which the machine became
sure of it. It never reads a clock, sleeps or does I/O, so tests drive it on virtual
time with an injected classifier.

A frame is voiced when its RMS level is at least ``min_volume`` dBFS *and* the
classifier says speech. The four states::

    QUIET --voiced--> STARTING --start_ms of speech--> SPEAKING
      ^                  |                                 |
      +---too many gaps--+                              unvoiced
      |                                                    v
      +-------------stop_ms of silence----------------- STOPPING --speech again--> SPEAKING

``min_ratio`` tolerates misclassified frames inside a window: with the defaults, 2 of
the 10 frames of the 200 ms start window may be unvoiced (webrtcvad misses some frames
of real speech, especially at mode 3) and 3 of the 15 frames of the 300 ms stop window
may be voiced (clicks and line noise) without resetting the window.

The VAD's stop window only confirms that the caller stopped talking; whether the *turn*
is over is decided by :mod:`processors.audio.endpointing`, which counts its own silence
window from :attr:`SpeechStopped.at_ms`. Keep ``stop_ms`` below that window.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

import numpy as np
import webrtcvad

__all__ = [
    "Classifier",
    "SpeechStarted",
    "SpeechStopped",
    "VAD_RATES",
    "Vad",
    "VadEvent",
    "VadParams",
    "VadState",
    "webrtc_classifier",
]

logger = logging.getLogger(__name__)

#: Rates webrtcvad accepts.
VAD_RATES: Final = frozenset({8000, 16000, 32000, 48000})
_FRAME_MS: Final = frozenset({10, 20, 30})
# Level reported for digital silence (log of zero); far below any sensible floor.
_SILENCE_DBFS: Final = -120.0

#: Decides whether one frame (PCM16 bytes of exactly ``frame_ms``) contains speech.
Classifier = Callable[[bytes, int], bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class VadParams:
    """Tuning of a :class:`Vad`; defaults are for telephony (8/16 kHz, phone noise).

    Attributes:
        aggressiveness: webrtcvad mode 0-3; higher rejects more non-speech. Default 2:
            mode 3 also rejects line hiss and babble well, but drops soft onsets and
            word endings of quiet callers; mode 2 plus the ``min_volume`` floor and the
            start window is the better balance on phone audio.
        start_ms: speech must last this long to become SPEAKING. Default 200 ms:
            longer than a click, a cough or a "mm" (under ~150 ms), shorter than a
            one-word answer ("yes" is ~250 ms); it is also the barge-in reaction time.
        stop_ms: silence must last this long to become QUIET. Default 300 ms: bridges
            the gaps between words and stop closures (mostly under 250 ms) so an
            utterance is one SPEAKING span, and stays below the endpointing silence
            window (600 ms) so the turn end is not delayed by the VAD.
        min_volume: RMS floor in dBFS (0 dBFS = full-scale square wave) under which a
            frame is silence whatever the classifier says. Default -50 dBFS: active
            speech on a phone line sits near -26 dBFS (ITU-T P.56), soft consonants
            around -45, while line noise and comfort noise are at -60 or below.
        frame_ms: classification frame, 10, 20 or 30 ms. Default 20 ms, the packet
            size of ACS, RTP and most telephony, so one packet is one decision.
        min_ratio: fraction of the frames in a start or stop window that must agree
            for the window to complete. Default 0.8 (see the module docstring).
    """

    aggressiveness: int = 2
    start_ms: float = 200.0
    stop_ms: float = 300.0
    min_volume: float = -50.0
    frame_ms: int = 20
    min_ratio: float = 0.8

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"VadParams.aggressiveness must be 0-3, got {self.aggressiveness}")
        if self.frame_ms not in _FRAME_MS:
            raise ValueError(f"VadParams.frame_ms must be 10, 20 or 30, got {self.frame_ms}")
        if self.start_ms <= 0 or self.stop_ms <= 0:
            raise ValueError(
                f"VadParams.start_ms and stop_ms must be positive, "
                f"got {self.start_ms} and {self.stop_ms}"
            )
        if not 0.5 <= self.min_ratio <= 1.0:
            raise ValueError(f"VadParams.min_ratio must be in [0.5, 1], got {self.min_ratio}")


class VadState(Enum):
    """Where the detector stands; see the diagram in the module docstring."""

    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started speaking at ``at_ms`` (the first voiced frame's start)."""

    at_ms: float


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The caller stopped speaking at ``at_ms`` (the start of the silence)."""

    at_ms: float


VadEvent = SpeechStarted | SpeechStopped


def webrtc_classifier(aggressiveness: int) -> Classifier:
    """Return the default classifier: a fresh ``webrtcvad.Vad`` in the given mode."""
    detector = webrtcvad.Vad(aggressiveness)

    def classify(frame: bytes, sample_rate: int) -> bool:
        return bool(detector.is_speech(frame, sample_rate))

    return classify


class Vad:
    """Speech start/stop detector for one audio stream.

    Args:
        params: tuning; :class:`VadParams` defaults suit telephony.
        sample_rate: 8000, 16000, 32000 or 48000 Hz.
        classifier: frame classifier; default :func:`webrtc_classifier`. Tests inject a
            function of their own to drive exact decisions.

    Raises:
        ValueError: the sample rate is not supported by webrtcvad.
    """

    def __init__(
        self,
        params: VadParams | None = None,
        sample_rate: int = 16000,
        *,
        classifier: Classifier | None = None,
    ) -> None:
        if sample_rate not in VAD_RATES:
            raise ValueError(
                f"Vad: unsupported sample rate {sample_rate} Hz; "
                f"expected one of {sorted(VAD_RATES)}"
            )
        self._params = params if params is not None else VadParams()
        self._rate = sample_rate
        self._classify = (
            classifier if classifier is not None else webrtc_classifier(self._params.aggressiveness)
        )
        frame_ms = self._params.frame_ms
        self._frame_samples = sample_rate * frame_ms // 1000
        self._frame_bytes = 2 * self._frame_samples
        self._start_frames = max(1, math.ceil(self._params.start_ms / frame_ms))
        self._stop_frames = max(1, math.ceil(self._params.stop_ms / frame_ms))
        # Misclassified frames a window tolerates before it is abandoned.
        self._start_misses = int(self._start_frames * (1.0 - self._params.min_ratio) + 1e-9)
        self._stop_misses = int(self._stop_frames * (1.0 - self._params.min_ratio) + 1e-9)
        # Power of a full-scale square wave over one frame: the 0 dBFS reference.
        self._full_scale = float(self._frame_samples) * 32768.0 * 32768.0
        self._min_power = self._full_scale * 10.0 ** (self._params.min_volume / 10.0)

        self._buffer = bytearray()
        self._state = VadState.QUIET
        self._window_start = 0.0  # onset (STARTING) or silence start (STOPPING)
        self._window_frames = 0
        self._window_misses = 0
        self._recent: deque[bool] = deque(maxlen=self._start_frames)
        self._recent_voiced = 0

    @property
    def params(self) -> VadParams:
        """The tuning in use."""
        return self._params

    @property
    def sample_rate(self) -> int:
        """Sample rate of the audio fed, in Hz."""
        return self._rate

    @property
    def state(self) -> VadState:
        """Current state."""
        return self._state

    @property
    def speaking(self) -> bool:
        """True between :class:`SpeechStarted` and :class:`SpeechStopped`."""
        return self._state in (VadState.SPEAKING, VadState.STOPPING)

    def feed(self, pcm: bytes, now_ms: float) -> list[VadEvent]:
        """Add audio and return the events it completes.

        Args:
            pcm: PCM16 mono samples at :attr:`sample_rate`, any whole number of samples.
            now_ms: the time at the *end* of ``pcm`` (when its last sample arrived).
                Each frame is stamped with the time of its first sample, counted back
                from ``now_ms`` over the audio buffered after it (so a 20 ms chunk fed
                at 1200 is the frame that starts at 1180). Pass media timestamps
                rather than arrival times if the transport has them: they carry no
                network jitter.

        Raises:
            ValueError: ``pcm`` has an odd number of bytes.
        """
        if len(pcm) % 2:
            raise ValueError(
                f"Vad.feed: got {len(pcm)} bytes, which is not a whole number of "
                "16-bit samples"
            )
        if not self._buffer and len(pcm) == self._frame_bytes:
            chunk = pcm  # the common case, one packet = one frame: no copies
            count = 1
            buffered = self._frame_samples
        else:
            self._buffer += pcm
            count = len(self._buffer) // self._frame_bytes
            buffered = len(self._buffer) // 2
            used = count * self._frame_bytes
            chunk = bytes(self._buffer[:used])
            del self._buffer[:used]
        if count == 0:
            return []
        samples = np.frombuffer(chunk, dtype=np.int16).astype(np.float32)
        events: list[VadEvent] = []
        for index in range(count):
            offset = index * self._frame_samples
            # The buffer ends at now_ms; a frame starts as many samples earlier as there
            # are from its first sample to the end. Integer sample counts keep it exact.
            at_ms = now_ms - (buffered - offset) * 1000 / self._rate
            frame = samples[offset : offset + self._frame_samples]
            power = float(np.dot(frame, frame))
            # Below the floor the classifier is not even asked (it costs ~3 us a frame).
            voiced = power >= self._min_power and self._classify(
                chunk[2 * offset : 2 * offset + self._frame_bytes], self._rate
            )
            event = self._step(voiced, at_ms)
            if event is not None:
                events.append(event)
        return events

    def close(self, now_ms: float) -> list[VadEvent]:
        """End of stream: stop a speech span still open, drop partial frames.

        Returns a :class:`SpeechStopped` if the caller was speaking (stamped with the
        silence start when STOPPING, otherwise ``now_ms``), else nothing.
        """
        events: list[VadEvent] = []
        if self._state is VadState.SPEAKING:
            events.append(SpeechStopped(at_ms=now_ms))
        elif self._state is VadState.STOPPING:
            events.append(SpeechStopped(at_ms=self._window_start))
        self.reset()
        return events

    def reset(self) -> None:
        """Forget buffered audio and history; back to QUIET without an event."""
        self._buffer.clear()
        self._recent.clear()
        self._recent_voiced = 0
        self._set_state(VadState.QUIET)

    def _step(self, voiced: bool, at_ms: float) -> VadEvent | None:
        """Advance the machine by one frame starting at ``at_ms``."""
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._recent_voiced -= 1
        self._recent.append(voiced)
        self._recent_voiced += voiced

        state = self._state
        if state is VadState.QUIET:
            if voiced:
                self._open_window(VadState.STARTING, at_ms)
                return self._maybe_started(at_ms)
            return None
        if state is VadState.SPEAKING:
            if not voiced:
                self._open_window(VadState.STOPPING, at_ms)
                return self._maybe_stopped(at_ms)
            return None

        self._window_frames += 1
        if state is VadState.STARTING:
            if not voiced:
                self._window_misses += 1
                if self._window_misses > self._start_misses:
                    self._set_state(VadState.QUIET, at_ms)
                return None
            return self._maybe_started(at_ms)
        # STOPPING
        if voiced:
            self._window_misses += 1
            if self._window_misses > self._stop_misses:
                self._set_state(VadState.SPEAKING, at_ms)
            return None
        return self._maybe_stopped(at_ms)

    def _open_window(self, state: VadState, at_ms: float) -> None:
        self._window_start = at_ms
        self._window_frames = 1
        self._window_misses = 0
        self._set_state(state, at_ms)

    def _maybe_started(self, at_ms: float) -> VadEvent | None:
        # Called on voiced frames only, so a window never completes on a tolerated gap.
        if self._window_frames >= self._start_frames:
            self._set_state(VadState.SPEAKING, at_ms)
            return SpeechStarted(at_ms=self._window_start)
        return None

    def _maybe_stopped(self, at_ms: float) -> VadEvent | None:
        # Called on unvoiced frames only (the mirror image of _maybe_started).
        if self._window_frames >= self._stop_frames:
            self._set_state(VadState.QUIET, at_ms)
            return SpeechStopped(at_ms=self._window_start)
        return None

    def _dbfs(self, power: float) -> float:
        if power <= 0.0:
            return _SILENCE_DBFS
        return max(_SILENCE_DBFS, 10.0 * math.log10(power / self._full_scale))

    def _set_state(self, state: VadState, at_ms: float | None = None) -> None:
        if state is not self._state:
            logger.debug("vad %s -> %s at %s ms", self._state.name, state.name, at_ms)
            self._state = state
