"""Playout: paced playback of the bot's audio, the sink half of every transport.

Sans-I/O (STYLE.md): the transport feeds it clauses and audio as they arrive and calls
``next_frame(now_ms)`` once per frame period; it answers with the frame to send (or
``None`` for silence) and the speaking events to emit. Nothing here sleeps or sends.

* A small lead buffer (``lead_ms``) is filled before a response starts playing, so
  jitter in TTS delivery does not make the audio stutter; the end of a response (or a
  clause when nothing else is coming) plays out whatever is buffered.
* ``flush(turn)`` (barge-in) drops everything buffered of turns ``<= turn`` at once and
  reports what the caller actually heard: whole clauses played, plus the played share
  of the clause that was cut off, from the ``Conversation`` ledger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from processors.text.context import Conversation

__all__ = ["Playout", "PlayoutStarted", "PlayoutStopped"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PlayoutStarted:
    """The first audio of ``turn`` is going out now."""

    turn: int


@dataclass(frozen=True, slots=True)
class PlayoutStopped:
    """Audio of ``turn`` stopped: it played out, or a flush cut it (``interrupted``)."""

    turn: int
    played_ms: float
    interrupted: bool
    heard_text: str


PlayoutEvent = PlayoutStarted | PlayoutStopped


class Playout:
    """Buffers bot audio per turn and releases it in fixed frames (see module docstring)."""

    def __init__(self, sample_rate: int, *, frame_ms: int = 20, lead_ms: int = 60) -> None:
        if frame_ms <= 0 or lead_ms < 0:
            raise ValueError(f"frame_ms must be > 0 and lead_ms >= 0, got {frame_ms} and {lead_ms}")
        self.frame_ms = frame_ms
        self.lead_ms = lead_ms
        self.sample_rate = sample_rate
        self._frame_bytes = sample_rate * frame_ms // 1000 * 2
        self._buffer = bytearray()
        self._ledger = Conversation()
        self._turn = 0  # turn being played (or buffered)
        self._playing = False
        self._ending = False  # the response is complete: play out without waiting for lead
        self._played_ms = 0.0

    @property
    def playing(self) -> bool:
        """True while bot audio is going out."""
        return self._playing

    @property
    def turn(self) -> int:
        """The turn whose audio is playing or buffered (0: none)."""
        return self._turn

    @property
    def buffered_ms(self) -> float:
        """Audio waiting to be played, in ms."""
        return len(self._buffer) / (self.sample_rate * 2 / 1000)

    def set_rate(self, sample_rate: int) -> None:
        """The line's output rate (audio must already be at this rate)."""
        if sample_rate != self.sample_rate:
            if self._buffer:
                logger.warning("playout: rate changed %d -> %d with audio buffered; dropping it",
                               self.sample_rate, sample_rate)
                self._buffer.clear()
            self.sample_rate = sample_rate
            self._frame_bytes = sample_rate * self.frame_ms // 1000 * 2

    def add_text(self, turn: int, text: str) -> list[PlayoutEvent]:
        """A clause of ``turn`` whose audio follows."""
        events = self._switch_to(turn)
        self._ledger.bot_text_queued(turn, text)
        return events

    def add_audio(self, turn: int, pcm: bytes) -> list[PlayoutEvent]:
        """Audio of ``turn`` (PCM16 at the line rate) to play after what is buffered."""
        if len(pcm) % 2:
            raise ValueError(f"playout: PCM16 audio must have an even byte count, got {len(pcm)}")
        events = self._switch_to(turn)
        if not pcm:
            return events
        self._buffer += pcm
        self._ledger.bot_audio_queued(turn, len(pcm) / (self.sample_rate * 2 / 1000))
        return events

    def end_response(self, turn: int) -> list[PlayoutEvent]:
        """No more audio is coming for ``turn``: play the rest without waiting for lead."""
        if turn == self._turn:
            self._ending = True
            if not self._buffer and not self._playing:
                return self._stop(interrupted=False)
        return []

    @property
    def idle(self) -> bool:
        """Nothing playing and nothing buffered."""
        return not self._playing and not self._buffer

    def next_frame(self, now_ms: float) -> tuple[bytes | None, list[PlayoutEvent]]:
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
        ms = n / (self.sample_rate * 2 / 1000)
        self._played_ms += ms
        self._ledger.bot_audio_played(self._turn, ms)
        if len(frame) < self._frame_bytes:  # the last bit of a response: pad to a whole frame
            frame += bytes(self._frame_bytes - len(frame))
        if not self._buffer and self._ending:
            events += self._stop(interrupted=False)
        return frame, events

    def flush(self, turn: int) -> list[PlayoutEvent]:
        """Barge-in: drop buffered audio of turns ``<= turn`` now; report what was heard."""
        if self._turn == 0 or self._turn > turn:
            return []
        dropped = len(self._buffer)
        self._buffer.clear()
        if dropped:
            logger.debug("playout: flushed %.0f ms of turn %d", dropped / (self.sample_rate * 2 / 1000), self._turn)
        return self._stop(interrupted=True)

    # --- internals ---------------------------------------------------------------------

    def _switch_to(self, turn: int) -> list[PlayoutEvent]:
        if turn == self._turn:
            return []
        events: list[PlayoutEvent] = []
        if self._turn and (self._playing or self._buffer):
            # A new response while the previous one still plays: it was superseded.
            events += self._stop(interrupted=bool(self._buffer))
        self._buffer.clear()
        self._turn = turn
        self._ending = False
        self._played_ms = 0.0
        self._ledger.begin_bot(turn)
        return events

    def _stop(self, *, interrupted: bool) -> list[PlayoutEvent]:
        """End the current turn's playback; an event only if something had started."""
        turn = self._turn
        heard = self._ledger.interrupt(turn) if interrupted else self._ledger.end_bot(turn)
        started = self._playing or self._played_ms > 0
        self._playing = False
        self._ending = False
        if interrupted:
            self._turn = 0  # nothing is current until the next response's first clause
        if not started and not interrupted:
            return []
        return [PlayoutStopped(turn, self._played_ms, interrupted, heard)]
