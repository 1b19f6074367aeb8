"""CallContext: the little state one call's nodes share (id, clock, bus, turn counter,
audio clock).

Per-call state stays this small on purpose: hundreds of calls share one process.
"""

from __future__ import annotations

import asyncio
import uuid

from .bus import Bus
from .clock import Clock, MonotonicClock

__all__ = ["CallContext"]


class CallContext:
    """Identity, clock, bus and turn bookkeeping of one call.

    One owner for each quantity every node needs:

    * ``clock``: the call's one clock. It stamps every frame (the runner installs it for
      the call's tasks, see ``frames.use_clock``) and paces every wait.
    * ``turn``: the latest turn handed out by :meth:`next_turn`, to a user turn (by the
      VAD) or to a bot utterance the caller did not ask for (a greeting, a prompt).
      Every turn ``<= flushed_turn`` has been interrupted and its frames are stale. Both
      only ever grow.
    * ``audio_ms``: the call-audio clock, milliseconds of caller audio received so far
      (advanced by the VAD node, the node that turns audio into turn timing). Nodes
      that need "now" in audio time read it instead of counting audio themselves.
    """

    __slots__ = ("_flush_signal", "audio_ms", "bus", "call_id", "clock", "flushed_turn", "turn")

    def __init__(
        self,
        call_id: str | None = None,
        *,
        clock: Clock | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.call_id = call_id or uuid.uuid4().hex[:12]
        self.clock: Clock = clock or MonotonicClock()
        self.bus = bus or Bus()
        self.turn = 0
        self.flushed_turn = 0
        self.audio_ms = 0.0
        self._flush_signal: asyncio.Future[int] | None = None

    def next_turn(self) -> int:
        """Hand out the next turn number (a user turn, or a bot utterance of its own)."""
        self.turn += 1
        return self.turn

    def is_stale(self, turn: int) -> bool:
        """True when frames of ``turn`` must be dropped (the turn was flushed)."""
        return 0 < turn <= self.flushed_turn

    def mark_flushed(self, turn: int) -> None:
        """Record a flush up to ``turn`` and wake everything waiting on a flush."""
        if turn > self.flushed_turn:
            self.flushed_turn = turn
        signal = self._flush_signal
        if signal is not None:
            self._flush_signal = None
            if not signal.done():
                signal.set_result(turn)

    def flush_signal(self) -> asyncio.Future[int]:
        """A future resolved (with the turn) at the next flush."""
        if self._flush_signal is None or self._flush_signal.done():
            self._flush_signal = asyncio.get_running_loop().create_future()
        return self._flush_signal
