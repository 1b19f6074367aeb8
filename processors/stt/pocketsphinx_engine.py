"""PocketSphinx: the embedded streaming recogniser (US English model from the wheel).

Design notes, measured on the models that ship in ``pocketsphinx`` 5.1.1:

- A ``Decoder`` owns its acoustic model, dictionary, language model and search state
  (about 90 MB and 0.3-1.4 s to build). The Python API cannot share the language model
  safely: the trie LM keeps a mutable history cache, so two decoders scoring through
  one LM from two threads would race. So decoders are pooled, and a stream holds one
  only while an utterance is open: it borrows one when the first audio of an utterance
  arrives (in ``feed``, which runs off the loop) and gives it back at ``finish``,
  ``reset`` or ``close``. Opening a stream costs nothing; the decoders in use are the
  callers speaking at that moment, not the calls. The engine builds ``prewarm`` decoders
  when it loads, so the first speakers do not wait for one, and keeps up to
  ``max_idle_decoders`` given back, so a decoder is built only when more callers speak
  at once than ever before.
- The front end adapts to the caller during an utterance (live CMN, the channel's
  cepstral mean, and the noise estimate). A borrowed decoder's front end is reset, and
  the stream restores the mean its caller left at the end of the previous turn, so every
  turn starts from its own caller's channel, never from another caller's. (Measured:
  without the reset, the same audio is recognised differently depending on what the
  decoder heard last.)
- The library holds the GIL while it works (measured: two threads decode slower than
  one, and the event loop's thread cannot run meanwhile), so executor threads keep it
  off the loop's *latency* only as far as each call into it is short: a batch of
  100 ms holds the loop for 10-20 ms. Handing a long batch to ``process_raw`` in
  slices would let the loop in between, but measured under load (perf/offload.py) it
  made the recogniser fall seconds behind: each slice has to win the GIL back from the
  other threads. So a batch goes whole. The cost is about 1.5-2 ms of CPU per 20 ms
  frame (RTF ~0.1). Building a ``Decoder`` holds the GIL for its whole 0.2-1.4 s: the
  pool makes that rare, but where it happens the loop stalls that long.
- Low latency by default: the second "flat" pass is off, which makes ``finish()``
  take a few milliseconds instead of ~65 ms for a 2.5 s utterance. The lattice pass
  (``bestpath``) stays on because it is cheap and gives word posteriors, which are the
  only confidence measure pocketsphinx has. ``accurate=True`` turns the flat pass on.
- Ending an utterance shorter than ~70 ms makes the C library log
  ``Couldn't find <s> in first frame``; no word fits in that time, so audio is held
  back until 100 ms have arrived and shorter utterances finish as empty text.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import pocketsphinx

from processors.stt.engine import Hypothesis, check_pcm16

__all__ = ["PocketsphinxEngine", "PocketsphinxStream"]

logger = logging.getLogger(__name__)

_SAMPLE_RATE = 16000
_BYTES_PER_MS = _SAMPLE_RATE * 2 // 1000
# Below ~70 ms the decoder cannot even place its sentence-start token; 100 ms leaves
# margin and is still far shorter than any word.
_MIN_UTTERANCE_MS = 100


def _is_word(token: str) -> bool:
    """True for a lexical word; False for <s>, </s>, <sil> and fillers like [NOISE]."""
    return not (token.startswith("<") or token.startswith("["))


class _Session:
    """The decoder a stream holds while an utterance is open (None between utterances).

    Kept apart from the stream so the finaliser that returns the decoder to the pool
    can close a half-finished utterance without holding a reference to the stream.
    """

    __slots__ = ("decoder", "in_utterance")

    def __init__(self) -> None:
        self.decoder: Any = None
        self.in_utterance = False

    def abandon_utterance(self) -> None:
        """End an open utterance and ignore its result."""
        if self.in_utterance:
            self.in_utterance = False
            self.decoder.end_utt()


class _DecoderPool:
    """Idle decoders ready for utterances; thread-safe."""

    def __init__(self, factory: Callable[[], Any], max_idle: int) -> None:
        self._factory = factory
        self._max_idle = max_idle
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def prewarm(self, count: int) -> None:
        """Build decoders until ``count`` are idle."""
        while self.idle < count:
            session = _Session()
            session.decoder = self._factory()
            self.release(session)

    def borrow(self, session: _Session, cmn: str | None) -> None:
        """Give ``session`` a decoder with a fresh front end and channel mean ``cmn``
        (None: the configured initial mean)."""
        with self._lock:
            decoder = self._idle.pop() if self._idle else None
        if decoder is None:
            # Built outside the lock: it takes 0.3-1.4 s and other streams may be releasing.
            decoder = self._factory()
        else:
            # The front end adapts (noise estimate, channel mean) to whoever spoke last;
            # start clean (measured 0.1 ms), so no caller's audio shapes another's result.
            decoder.reinit_feat()
        if cmn is not None:
            decoder.set_cmn(cmn)
        session.decoder = decoder

    def release(self, session: _Session) -> None:
        """Take ``session``'s decoder back (ending any open utterance); idempotent."""
        if session.decoder is None:
            return
        session.abandon_utterance()
        decoder, session.decoder = session.decoder, None
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(decoder)

    @property
    def idle(self) -> int:
        with self._lock:
            return len(self._idle)


class PocketsphinxStream:
    """Streaming recogniser for one caller; see :class:`processors.stt.engine.RecognizerStream`.

    Not thread-safe: feed, finish and reset must not run concurrently. It holds a pooled
    decoder only while an utterance is open (see the module docstring); :meth:`close`
    (or a ``with`` block) gives back one still held, and a stream that is simply dropped
    gives it back when collected.
    """

    sample_rate: int = _SAMPLE_RATE

    def __init__(self, pool: _DecoderPool) -> None:
        self._pool = pool
        self._session = _Session()
        self._finalizer = weakref.finalize(self, pool.release, self._session)
        self._finalizer.atexit = False
        self._cmn: str | None = None  # this caller's channel mean, kept between utterances
        self._pending = bytearray()  # audio held back until _MIN_UTTERANCE_MS
        self._fed_bytes = 0
        self._partial = ""

    def feed(self, pcm: bytes) -> Hypothesis | None:
        """Decode more audio; return an interim hypothesis when its text changed."""
        check_pcm16(pcm)
        self._check_open()
        if not pcm:
            return None
        self._fed_bytes += len(pcm)
        session = self._session
        if not session.in_utterance:
            self._pending += pcm
            if len(self._pending) < _MIN_UTTERANCE_MS * _BYTES_PER_MS:
                return None
            self._pool.borrow(session, self._cmn)
            session.decoder.start_utt()
            session.in_utterance = True
            pcm, self._pending = bytes(self._pending), bytearray()
        session.decoder.process_raw(pcm, False, False)
        hyp = session.decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        if text == self._partial:
            return None
        self._partial = text
        start_ms, end_ms, _ = self._words_span()
        # Mid-utterance there is no lattice, so no posterior: report 0, not a made-up 1.
        return Hypothesis(text, False, 0.0, start_ms, end_ms)

    def finish(self) -> Hypothesis:
        """End the utterance and return its final hypothesis (empty text if none)."""
        self._check_open()
        fed_ms = self._fed_bytes // _BYTES_PER_MS
        session = self._session
        try:
            if not session.in_utterance:
                return Hypothesis("", True, 0.0, 0, fed_ms)
            session.in_utterance = False
            session.decoder.end_utt()
            hyp = session.decoder.hyp()
            text = hyp.hypstr if hyp is not None else ""
            start_ms, end_ms, confidence = self._words_span()
            if not text:
                return Hypothesis("", True, 0.0, 0, fed_ms)
            return Hypothesis(text, True, confidence, start_ms, end_ms)
        finally:
            self._give_back()
            self._clear()

    def reset(self) -> None:
        """Drop the current utterance (and give its decoder back)."""
        self._check_open()
        self._give_back()
        self._clear()

    def close(self) -> None:
        """Give back a decoder still held; the stream is unusable afterwards."""
        self._clear()
        self._finalizer()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return not self._finalizer.alive

    def __enter__(self) -> PocketsphinxStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise RuntimeError("stream is closed")

    def _give_back(self) -> None:
        session = self._session
        if session.decoder is not None:
            session.abandon_utterance()
            self._cmn = session.decoder.get_cmn()
            self._pool.release(session)

    def _clear(self) -> None:
        self._pending = bytearray()
        self._fed_bytes = 0
        self._partial = ""

    def _words_span(self) -> tuple[int, int, float]:
        """(start_ms, end_ms, mean word posterior) of the current best path's words."""
        decoder = self._session.decoder
        frame_ms = 1000 / decoder.config["frate"]
        words = [seg for seg in decoder.seg() or () if _is_word(seg.word)]
        if not words:
            return 0, self._fed_bytes // _BYTES_PER_MS, 0.0
        # The binding already maps log posteriors to linear ones; log-math rounding can
        # overshoot 1 slightly, hence the clamp.
        posteriors = [min(1.0, max(0.0, float(seg.prob))) for seg in words]
        return (
            round(words[0].start_frame * frame_ms),
            round((words[-1].end_frame + 1) * frame_ms),
            sum(posteriors) / len(posteriors),
        )


class PocketsphinxEngine:
    """The embedded streaming STT engine; see :class:`processors.stt.engine.STTEngine`.

    Args:
        accurate: Run the second (flat lexicon) pass at the end of each utterance:
            somewhat better words, ~65 ms more finalisation delay per 2.5 s of speech.
        prewarm: Decoders built now, ready for the first speakers. Build the engine off
            the event loop: each decoder takes 0.3-1.4 s. With at least one, a missing or
            broken model fails here rather than in the first call.
        max_idle_decoders: How many decoders given back stay ready for reuse (each holds
            about 90 MB). When more callers speak at once, the extra decoders are built
            on demand (in the first feed of their utterance, off the loop, 0.25-1.4 s)
            and dropped afterwards. The default keeps what eight simultaneous speakers
            need: with 4, eight callers speaking in bursts rebuilt four decoders every
            burst (perf/offload.py).
        options: Extra PocketSphinx configuration (e.g. ``{"lm": path, "dict": path}``
            or beam widths), passed to ``pocketsphinx.Decoder`` as keyword arguments.
    """

    name: str = "pocketsphinx"
    sample_rate: int = _SAMPLE_RATE

    def __init__(
        self,
        *,
        accurate: bool = False,
        prewarm: int = 2,
        max_idle_decoders: int = 8,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if prewarm < 0 or max_idle_decoders < 0:
            raise ValueError(f"prewarm and max_idle_decoders must be >= 0, got {prewarm} and {max_idle_decoders}")
        self._config: dict[str, Any] = {
            "fwdflat": accurate,
            "bestpath": True,
            "samprate": _SAMPLE_RATE,
        }
        self._config.update(options or {})
        if int(self._config["samprate"]) != _SAMPLE_RATE:
            raise ValueError("PocketsphinxEngine only supports 16000 Hz audio")
        self._pool = _DecoderPool(self._new_decoder, max(max_idle_decoders, prewarm))
        self._pool.prewarm(prewarm)

    def open_stream(self) -> PocketsphinxStream:
        """Open a stream; instant, it borrows a decoder only while an utterance is open."""
        return PocketsphinxStream(self._pool)

    @property
    def idle_decoders(self) -> int:
        """Decoders ready for utterances without a model load."""
        return self._pool.idle

    def _new_decoder(self) -> Any:
        logger.debug("building a pocketsphinx decoder")
        return pocketsphinx.Decoder(**self._config)
