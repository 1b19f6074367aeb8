"""Playout: paced playback of the bot's audio, the sink half of every transport.

Sans-I/O (STYLE.md): the transport feeds it clauses and audio as they arrive and calls
``next_frame()`` once per frame period; it answers with the frame to send (or ``None``
for silence) and the speaking events to emit. Nothing here sleeps or sends.

* Every bot utterance belongs to a turn handed out by the call's context (``>= 1``),
  greetings included. Bot audio or text of turn 0 is a bug upstream and is refused with
  a ``FrameError``: it could neither be flushed nor kept in the heard history.
* A small lead buffer (``lead_ms``) is filled before a response starts playing, so
  jitter in TTS delivery does not make the audio stutter; the end of a response (or a
  clause when nothing else is coming) plays out whatever is buffered.
* One turn plays at a time. Audio of a newer turn supersedes the one still buffered;
  audio of an older turn, or of a flushed one, is dropped (it was superseded already).
* ``flush(turn)`` (barge-in) drops everything buffered of the turn playing if it is
  ``<= turn``, at once, and reports what the caller actually heard: whole clauses
  played, plus the played share of the clause that was cut off, from the
  ``Conversation`` ledger. A turn that finished playing is not flushed again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline.errors import FrameError
from processors.text.context import Conversation

__all__ = ["Playout", "PlayoutEvent", "PlayoutStarted", "PlayoutStopped"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PlayoutStarted:
    """The first audio of ``turn`` is going out now."""

    turn: int


@dataclass(frozen=True, slots=True)
class PlayoutStopped:
    """Audio of ``turn`` stopped: it played out, or a flush cut it (``interrupted``).

    A flush of a turn that had nothing played yet reports ``played_ms=0`` and an empty
    ``heard_text`` (with no ``PlayoutStarted`` before it), so the heard history drops it.
    """

    turn: int
    played_ms: float
    interrupted: bool
    heard_text: str


PlayoutEvent = PlayoutStarted | PlayoutStopped


class Playout:
    """Buffers bot audio per turn and releases it in fixed frames (see module docstring)."""

    def __init__(self, sample_rate: int, *, frame_ms: int = 20, lead_ms: int = 60) -> None:
        if sample_rate <= 0 or frame_ms <= 0 or lead_ms < 0:
            raise ValueError(f"playout needs sample_rate > 0, frame_ms > 0 and lead_ms >= 0, "
                             f"got {sample_rate}, {frame_ms} and {lead_ms}")
        self.frame_ms = frame_ms
        self.lead_ms = lead_ms
        self.sample_rate = sample_rate
        self._bytes_per_ms = sample_rate * 2 / 1000
        self._frame_bytes = sample_rate * frame_ms // 1000 * 2
        self._buffer = bytearray()
        self._ledger = Conversation()
        self._turn = 0  # the latest turn accepted
        self._flushed = 0  # every turn <= this was flushed: its audio never plays
        self._active = False  # the current turn has audio or text that has not stopped
        self._playing = False
        self._ending = False  # the response is complete: play out without waiting for lead
        self._played_ms = 0.0

    @property
    def playing(self) -> bool:
        """True while bot audio is going out."""
        return self._playing

    @property
    def turn(self) -> int:
        """The latest turn whose audio or text was accepted (0: none yet)."""
        return self._turn

    @property
    def buffered_ms(self) -> float:
        """Audio waiting to be played, in ms."""
        return len(self._buffer) / self._bytes_per_ms

    @property
    def idle(self) -> bool:
        """Nothing playing and nothing buffered."""
        return not self._playing and not self._buffer

    def add_text(self, turn: int, text: str) -> list[PlayoutEvent]:
        """A clause of ``turn`` whose audio follows."""
        events: list[PlayoutEvent] = []
        if self._accept(turn, events):
            self._ledger.bot_text_queued(turn, text)
        return events

    def add_audio(self, turn: int, pcm: bytes) -> list[PlayoutEvent]:
        """Audio of ``turn`` (PCM16 at the line rate) to play after what is buffered."""
        if len(pcm) % 2:
            raise FrameError(f"playout: PCM16 audio must have an even byte count, got {len(pcm)}")
        events: list[PlayoutEvent] = []
        if self._accept(turn, events) and pcm:
            self._buffer += pcm
            self._ledger.bot_audio_queued(turn, len(pcm) / self._bytes_per_ms)
        return events

    def end_response(self, turn: int) -> list[PlayoutEvent]:
        """No more audio is coming for ``turn``: play the rest without waiting for lead."""
        if turn != self._turn or not self._active:
            return []
        self._ending = True
        if not self._buffer and not self._playing:
            return self._stop(interrupted=False)
        return []

    def next_frame(self) -> tuple[bytes | None, list[PlayoutEvent]]:
        """Called once per frame period: the frame to send now (None: silence), and events."""
        events: list[PlayoutEvent] = []
        if not self._playing:
            if not self._buffer:
                return None, events
            if self.buffered_ms < self.lead_ms and not self._ending:
                return None, events
            self._playing = True
            events.append(PlayoutStarted(self._turn))
        if not self._buffer:
            if self._ending:
                events += self._stop(interrupted=False)
            return None, events  # an underrun mid-response: silence, keep the turn open
        n = min(self._frame_bytes, len(self._buffer))
        frame = bytes(self._buffer[:n])
        del self._buffer[:n]
        ms = n / self._bytes_per_ms
        self._played_ms += ms
        self._ledger.bot_audio_played(self._turn, ms)
        if n < self._frame_bytes:  # the last bit of a response: pad to a whole frame
            frame += bytes(self._frame_bytes - n)
        if not self._buffer and self._ending:
            events += self._stop(interrupted=False)
        return frame, events

    def flush(self, turn: int) -> list[PlayoutEvent]:
        """Barge-in: drop the buffered audio of the turn playing, if it is ``<= turn``;
        report what was heard. Audio of turns ``<= turn`` arriving later is dropped."""
        self._flushed = max(self._flushed, turn)
        if not self._active or self._turn > turn:
            return []
        if self._buffer:
            logger.debug("playout: flushed %.0f ms of turn %d", self.buffered_ms, self._turn)
        return self._stop(interrupted=True)

    # --- internals ---------------------------------------------------------------------

    def _accept(self, turn: int, events: list[PlayoutEvent]) -> bool:
        """Make ``turn`` current if it is new; False if its audio must not play."""
        if turn < 1:
            raise FrameError(f"playout: bot audio or text of turn {turn}; every bot utterance (a greeting "
                             "too) needs a turn from ctx.next_turn(), so that it can be flushed and heard")
        if turn <= self._flushed or turn < self._turn:
            logger.debug("playout: dropping audio of turn %d (flushed or superseded)", turn)
            return False
        if turn == self._turn:
            return self._active  # not active: it stopped already, this is a late straggler
        if self._active:
            # A new response while the previous one still plays: it was superseded.
            events += self._stop(interrupted=bool(self._buffer))
        self._turn = turn
        self._active = True
        self._ending = False
        self._played_ms = 0.0
        self._ledger.begin_bot(turn)
        return True

    def _stop(self, *, interrupted: bool) -> list[PlayoutEvent]:
        """End the current turn's playback; an event if it started or was cut off."""
        turn = self._turn
        heard = self._ledger.interrupt(turn) if interrupted else self._ledger.end_bot(turn)
        started = self._playing or self._played_ms > 0
        self._buffer.clear()
        self._playing = False
        self._ending = False
        self._active = False
        if not started and not interrupted:
            return []
        return [PlayoutStopped(turn, self._played_ms, interrupted, heard)]
