"""Streaming sample-rate conversion of PCM16 mono audio, wrapping ``soxr.ResampleStream``.

A :class:`Resampler` converts one continuous stream: each :meth:`Resampler.process` call
continues the filter state of the previous one, so 20 ms chunks come out as seamless as
one long buffer (no clicks at chunk borders). :meth:`Resampler.flush` returns the tail the
filter still holds and readies the resampler for a new stream; :meth:`Resampler.reset`
drops it (barge-in: the held audio belongs to a cancelled utterance).

Quality against delay (measured with ``soxr`` 1.0, 20 ms chunks, see
``perf/audio_frontend.py``)
----------------------------------------------------------------------------------------
soxr aligns its output (no phase shift), but it *holds back* output until its filter and
its internal processing block are full, and releases it in bursts. The mean hold-back is
the latency the resampler adds to a real-time stream; it depends on the quality and on
the rate pair (blocks are counted in input samples, so low rates hold back more ms)::

    mean / max ms  8k->16k  48k->16k  24k->16k  22.05k->16k  24k->8k  22.05k->8k
    QQ             0.2/0    0.0/0     0.1/0     0.1/0        0.0/0    0.0/0
    LQ            33/61     11/20     11/20     11/22        23/40    23/43
    MQ            64/118    21/38     21/38     23/41        43/75    46/82
    HQ            63/115    22/37     22/37     23/39        44/73    46/80
    VHQ           64/110    43/76     43/76     46/84        86/152   93/167
    (16k->8k and 16k->48k hold back as 8k->16k and 48k->16k; passband at -3 dB:
    QQ has no anti-alias filter, LQ ~80 % of the lower Nyquist, MQ/HQ/VHQ ~95 %)

``QQ`` is cubic interpolation: no delay, but images at -10..-25 dB when upsampling and
full-level aliasing when downsampling, so it is never a default. ``MQ`` costs the same
delay as ``HQ`` for these ratios, so the real choice is ``LQ`` (half the delay, passband
to ~80 % of the lower Nyquist: -8 dB at 3.4 kHz for 8 kHz audio, at 6.8 kHz for 16 kHz)
or ``HQ`` (flat to ~95 %). Stop-band rejection is about -83 dB for both.

Defaults per direction
----------------------
* Caller -> STT (:data:`INPUT_QUALITY` = ``"LQ"``): the caller's audio arrives paced in
  real time, so every held-back millisecond delays speech detection, barge-in and the
  end of the turn (LQ saves 10 ms at 48k->16k and 30 ms at 8k->16k). The listener is a
  recogniser, and the top 20 % of the band (3.2-4 kHz of PSTN audio, 6.4-8 kHz of
  wideband) carries little of what it needs. Better still, run
  the VAD at the caller's native rate (webrtcvad takes 8/16/32/48 kHz) and resample only
  the STT branch.
* TTS -> caller (:data:`OUTPUT_QUALITY` = ``"HQ"``): a human listens, and sibilants in
  the top of the band carry intelligibility (on an 8 kHz phone line ``LQ`` would dull
  3-3.4 kHz by up to 8 dB). TTS synthesises faster than real time, so the next chunk
  arrives before the played audio runs out: the hold-back is hidden, except at the very
  end of a response, where :meth:`Resampler.flush` releases it at once.
"""

from __future__ import annotations

import functools
import logging
from typing import Final, Literal

import numpy as np
import soxr

__all__ = [
    "INPUT_QUALITY",
    "OUTPUT_QUALITY",
    "SUPPORTED_RATES",
    "Quality",
    "Resampler",
    "measure_delay_ms",
]

logger = logging.getLogger(__name__)

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]

#: Sample rates a :class:`Resampler` accepts. 22050 Hz is the rate of local (piper /
#: eSpeak NG) TTS voices; the others are telephony, wideband, ACS and WebRTC rates.
SUPPORTED_RATES: Final = frozenset({8000, 16000, 22050, 24000, 48000})

#: Default quality for caller audio on its way to VAD/STT (latency first).
INPUT_QUALITY: Final[Quality] = "LQ"
#: Default quality for synthesised audio on its way to the caller (fidelity first).
OUTPUT_QUALITY: Final[Quality] = "HQ"

_QUALITIES: Final = frozenset({"QQ", "LQ", "MQ", "HQ", "VHQ"})
_EMPTY: Final = np.zeros(0, dtype=np.int16)
# Probe length for measure_delay_ms: the hold-back is a sawtooth with a period of one
# soxr block (up to ~120 ms at 8 kHz), so 2 s of 20 ms chunks averages many periods.
_PROBE_CHUNK_MS: Final = 20
_PROBE_CHUNKS: Final = 100
_PROBE_WARMUP_CHUNKS: Final = 10


@functools.lru_cache(maxsize=128)
def measure_delay_ms(in_rate: int, out_rate: int, quality: Quality) -> tuple[float, float]:
    """Measure how much audio soxr holds back for one configuration.

    Feeds 2 s of silence in 20 ms chunks through a scratch stream and compares the
    output received so far with the output owed after each chunk. The result does not
    depend on the signal (soxr's block schedule is fixed), so it is cached per
    configuration: the first call costs well under a millisecond.

    Returns:
        ``(mean_ms, max_ms)``: the mean and worst hold-back, in milliseconds of audio.
    """
    if in_rate == out_rate:
        return (0.0, 0.0)
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
    chunk = np.zeros(in_rate * _PROBE_CHUNK_MS // 1000, dtype=np.int16)
    received = 0
    held: list[float] = []
    for index in range(_PROBE_CHUNKS):
        received += len(stream.resample_chunk(chunk))
        owed = (index + 1) * len(chunk) * out_rate / in_rate
        if index >= _PROBE_WARMUP_CHUNKS:
            held.append((owed - received) * 1000.0 / out_rate)
    return (sum(held) / len(held), max(held))


class Resampler:
    """Streaming PCM16 mono sample-rate converter for one direction of one call.

    Args:
        in_rate: Input sample rate in Hz, one of :data:`SUPPORTED_RATES`.
        out_rate: Output sample rate in Hz, one of :data:`SUPPORTED_RATES`.
        quality: soxr quality preset; see the module docstring for the trade-off and
            use :data:`INPUT_QUALITY` or :data:`OUTPUT_QUALITY` unless you measured.

    Raises:
        ValueError: a rate or the quality is not supported.

    When ``in_rate == out_rate`` the resampler is a pass-through: :meth:`process`
    returns the very object it was given and no soxr stream is created.
    """

    __slots__ = ("_delay", "_in_rate", "_out_rate", "_quality", "_stream")

    def __init__(self, in_rate: int, out_rate: int, quality: Quality = INPUT_QUALITY) -> None:
        for name, rate in (("in_rate", in_rate), ("out_rate", out_rate)):
            if rate not in SUPPORTED_RATES:
                raise ValueError(
                    f"Resampler: unsupported {name} {rate} Hz; "
                    f"expected one of {sorted(SUPPORTED_RATES)}"
                )
        if quality not in _QUALITIES:
            raise ValueError(
                f"Resampler: unknown quality {quality!r}; expected one of {sorted(_QUALITIES)}"
            )
        self._in_rate = in_rate
        self._out_rate = out_rate
        self._quality: Quality = quality
        self._stream: soxr.ResampleStream | None = None
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, 1, dtype="int16", quality=quality
            )
        self._delay: tuple[float, float] | None = None

    @property
    def in_rate(self) -> int:
        """Input sample rate in Hz."""
        return self._in_rate

    @property
    def out_rate(self) -> int:
        """Output sample rate in Hz."""
        return self._out_rate

    @property
    def quality(self) -> Quality:
        """The soxr quality preset in use."""
        return self._quality

    @property
    def passthrough(self) -> bool:
        """True when input and output rates are equal and audio is returned untouched."""
        return self._stream is None

    @property
    def delay_ms(self) -> float:
        """Mean latency this resampler adds to a real-time stream, in ms (measured)."""
        return self._measured()[0]

    @property
    def max_delay_ms(self) -> float:
        """Worst-case hold-back in ms: size a jitter budget with this, not the mean."""
        return self._measured()[1]

    def process(self, pcm: bytes) -> bytes:
        """Resample the next chunk of the stream.

        Args:
            pcm: PCM16 little-endian mono samples; any whole number of samples.

        Returns:
            The output that soxr releases now. It may be shorter or longer than the
            input's duration (soxr works in blocks) and may be empty; the sum over a
            stream plus :meth:`flush` is the whole converted signal.

        Raises:
            ValueError: ``pcm`` has an odd number of bytes (not whole 16-bit samples).
        """
        if len(pcm) % 2:
            raise ValueError(
                f"Resampler.process: got {len(pcm)} bytes, which is not a whole number "
                "of 16-bit samples (PCM16 needs an even byte count)"
            )
        if self._stream is None:
            return pcm
        if not pcm:
            return b""
        samples = np.frombuffer(pcm, dtype=np.int16)
        out: np.ndarray = self._stream.resample_chunk(samples)
        return out.tobytes()

    def flush(self) -> bytes:
        """End the stream: return the tail soxr still holds, then start afresh.

        Call it at the end of a TTS response (the last syllable would otherwise wait
        for the next response). The next :meth:`process` starts a new stream.
        """
        if self._stream is None:
            return b""
        tail: np.ndarray = self._stream.resample_chunk(_EMPTY, last=True)
        self._stream.clear()
        return tail.tobytes()

    def reset(self) -> None:
        """Drop the held audio without returning it (barge-in: nobody will hear it)."""
        if self._stream is not None:
            self._stream.clear()

    def _measured(self) -> tuple[float, float]:
        if self._delay is None:
            self._delay = measure_delay_ms(self._in_rate, self._out_rate, self._quality)
            logger.debug(
                "resampler %d->%d %s holds back %.1f ms (max %.1f ms)",
                self._in_rate,
                self._out_rate,
                self._quality,
                *self._delay,
            )
        return self._delay

    def __repr__(self) -> str:
        return f"Resampler({self._in_rate}, {self._out_rate}, quality={self._quality!r})"
