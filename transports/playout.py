"""Playout: paced playback of the bot's audio, the sink half of every transport.

Sans-I/O (STYLE.md): the transport feeds it clauses and audio as they arrive and calls
``next_frame()`` once per frame period; it answers with the frame to send (or ``None``
for silence) and the speaking events to emit (``end_response`` and ``flush`` return
events too). Nothing here sleeps or sends.

* Every bot utterance belongs to a turn handed out by the call's context (``>= 1``),
  greetings included. Bot audio or text of turn 0 is a bug upstream and is refused with
  a ``FrameError``: it could neither be flushed nor kept in the heard history.
* A small lead buffer (``lead_ms``) is filled before a response starts playing, so
  jitter in TTS delivery does not make the audio stutter; the end of a response (or a
  clause when nothing else is coming) plays out whatever is buffered.
* One turn plays at a time, in turn order. Text and audio of a newer turn wait, in
  arrival order, until the turn playing has played out or been flushed: back-to-back
  bot utterances (a greeting, then a prompt) are each heard whole, and only a flush
  ever cuts one. Audio of an older turn, or of a flushed one, is dropped.
* ``flush(turn)`` (barge-in) drops everything of turns ``<= turn`` at once, the turn
  playing and those waiting, and reports what the caller actually heard: whole clauses
  played, plus the played share of the clause that was cut off, from the
  ``Conversation`` ledger. A turn that finished playing is not flushed again.
* ``pause(turn)`` (the caller may be barging in) stops the turn playing between two
  frames and keeps its audio, buffered and still arriving; ``resume(turn)`` plays on
  from the very sample it stopped at. The ledger counts only what played, so a flush
  during a pause reports what was heard up to the pause. A pause holds the turns
  waiting behind it too: nothing of the bot plays until the resume or the flush.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

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


@dataclass(slots=True)
class _Waiting:
    """A turn waiting for the one playing: its clauses and audio in arrival order."""

    items: list[str | bytes] = field(default_factory=list)
    ended: bool = False


_CURRENT = _Waiting()  # marks "the turn playing" where a turn's place is returned


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
        self._turn = 0  # the current turn: playing, or buffering its lead (0: none yet)
        self._flushed = 0  # every turn <= this was flushed: its audio never plays
        self._active = False  # the current turn has audio or text that has not stopped
        self._waiting: dict[int, _Waiting] = {}  # newer turns, until the current one stops
        self._playing = False
        self._ending = False  # the response is complete: play out without waiting for lead
        self._played_ms = 0.0
        self._paused = 0  # the turn paused (0: none): no frame goes out until resume/flush

    @property
    def paused(self) -> bool:
        """True while a pause holds the bot's audio."""
        return self._paused != 0

    @property
    def playing(self) -> bool:
        """True while bot audio is going out."""
        return self._playing

    @property
    def turn(self) -> int:
        """The current turn: the one playing, or buffering its lead (0: none yet)."""
        return self._turn

    @property
    def buffered_ms(self) -> float:
        """Audio of the current turn waiting to be played, in ms."""
        return len(self._buffer) / self._bytes_per_ms

    @property
    def idle(self) -> bool:
        """Nothing playing, nothing buffered, no turn waiting."""
        return not self._playing and not self._buffer and not self._waiting

    def add_text(self, turn: int, text: str) -> None:
        """A clause of ``turn`` whose audio follows."""
        place = self._place(turn)
        if place is _CURRENT:
            self._ledger.bot_text_queued(turn, text)
        elif place is not None:
            place.items.append(text)

    def add_audio(self, turn: int, pcm: bytes) -> None:
        """Audio of ``turn`` (PCM16 at the line rate) to play after what is buffered."""
        if len(pcm) % 2:
            raise FrameError(f"playout: PCM16 audio must have an even byte count, got {len(pcm)}")
        place = self._place(turn)
        if place is _CURRENT:
            self._queue_audio(turn, pcm)
        elif place is not None and pcm:
            place.items.append(pcm)

    def end_response(self, turn: int) -> list[PlayoutEvent]:
        """No more audio is coming for ``turn``: play the rest without waiting for lead."""
        if turn in self._waiting:
            self._waiting[turn].ended = True
            return []
        if turn != self._turn or not self._active:
            return []
        self._ending = True
        if not self._buffer and not self._playing and not self._paused:
            return self._stop(interrupted=False) + self._advance()
        return []

    def next_frame(self) -> tuple[bytes | None, list[PlayoutEvent]]:
        """Called once per frame period: the frame to send now (None: silence), and events."""
        events: list[PlayoutEvent] = []
        if self._paused:
            return None, events
        if not self._playing:
            if not self._buffer:
                return None, events
            if self.buffered_ms < self.lead_ms and not self._ending:
                return None, events
            self._playing = True
            events.append(PlayoutStarted(self._turn))
        if not self._buffer:
            if self._ending:
                events += self._stop(interrupted=False) + self._advance()
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
            events += self._stop(interrupted=False) + self._advance()  # the next turn starts next tick
        return frame, events

    def flush(self, turn: int) -> list[PlayoutEvent]:
        """Barge-in: drop the audio of turns ``<= turn``, playing or waiting, and report
        what was heard of each. Audio of turns ``<= turn`` arriving later is dropped."""
        self._flushed = max(self._flushed, turn)
        if self._paused and self._paused <= turn:
            self._paused = 0
        events: list[PlayoutEvent] = []
        if self._active and self._turn <= turn:
            if self._buffer:
                logger.debug("playout: flushed %.0f ms of turn %d", self.buffered_ms, self._turn)
            events += self._stop(interrupted=True)
        for waiting in sorted(t for t in self._waiting if t <= turn):
            del self._waiting[waiting]
            events.append(PlayoutStopped(waiting, 0.0, True, ""))  # never played: nothing heard
        return events + self._advance()

    def pause(self, turn: int) -> bool:
        """Stop playing ``turn`` after the frame already taken, keeping the rest of it.

        Returns True if bot audio of ``turn`` had gone out (the wire may hold some: a
        transport clears it). A turn that is not current, or has stopped, is not paused.
        """
        if turn != self._turn or not self._active or self._paused:
            return False
        self._paused = turn
        logger.debug("playout: paused turn %d after %.0f ms (%.0f ms buffered)",
                     turn, self._played_ms, self.buffered_ms)
        return self._played_ms > 0

    def resume(self, turn: int) -> list[PlayoutEvent]:
        """Play on ``turn`` from where :meth:`pause` stopped it (no-op if not paused)."""
        if self._paused != turn:
            return []
        self._paused = 0
        if self._active and self._ending and not self._buffer and not self._playing:
            return self._stop(interrupted=False) + self._advance()  # ended with nothing to play
        return []

    # --- internals ---------------------------------------------------------------------

    def _place(self, turn: int) -> _Waiting | None:
        """Where text and audio of ``turn`` go: ``_CURRENT``, its waiting entry, or None
        (dropped). A new turn becomes current at once when nothing is playing."""
        if turn < 1:
            raise FrameError(f"playout: bot audio or text of turn {turn}; every bot utterance (a greeting "
                             "too) needs a turn from ctx.next_turn(), so that it can be flushed and heard")
        if turn == self._turn and self._active:
            return _CURRENT
        if turn <= self._flushed or turn <= self._turn:
            # Flushed, older than the current turn, or the current one after it stopped.
            logger.debug("playout: dropping audio of turn %d (flushed, stopped or older)", turn)
            return None
        if not self._active:
            self._begin(turn)
            return _CURRENT
        waiting = self._waiting.get(turn)
        if waiting is None:
            waiting = self._waiting[turn] = _Waiting()
        return waiting

    def _begin(self, turn: int) -> None:
        self._turn = turn
        self._active = True
        self._ending = False
        self._played_ms = 0.0
        self._ledger.begin_bot(turn)

    def _queue_audio(self, turn: int, pcm: bytes) -> None:
        if pcm:
            self._buffer += pcm
            self._ledger.bot_audio_queued(turn, len(pcm) / self._bytes_per_ms)

    def _advance(self) -> list[PlayoutEvent]:
        """The current turn stopped: make the next waiting turn current."""
        events: list[PlayoutEvent] = []
        while self._waiting and not self._active:
            turn = min(self._waiting)
            waiting = self._waiting.pop(turn)
            self._begin(turn)
            for item in waiting.items:
                if isinstance(item, str):
                    self._ledger.bot_text_queued(turn, item)
                else:
                    self._queue_audio(turn, item)
            if waiting.ended:
                self._ending = True
                if not self._buffer:
                    events += self._stop(interrupted=False)  # a response with no audio
        return events

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
