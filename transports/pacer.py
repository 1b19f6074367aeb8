"""Pacer: one ticker per worker that paces the audio of every call on it.

Real-time audio goes out one frame per period (20 ms). If every call slept until its own
next frame, a worker with N calls would wake the event loop N times per period, at N
different instants, and each wake-up costs about as much CPU as a call's whole media
path. Instead one task per (event loop, clock, period) sleeps on the clock and, at each
tick, serves every subscriber at once: one loop wake-up per tick for all calls.

The tick never awaits a subscriber, so one call whose wire is slow, or whose graph
pushes back, misses its own slots and delays nobody else's. Tick callbacks (outbound:
a transport taking the frame due now) are served before ``Ticks`` owners are woken
(inbound: a simulated caller pushing audio through its graph), so a frame due now never
waits behind the tick's inbound work. Two kinds of subscriber:

* :meth:`Pacer.every_tick` (a :class:`TickCallback`): a plain function called at each
  tick with the slot time, in the context of the code that subscribed (the call's
  context: its clock stamps the frames made there). It must not block: a transport's
  playout takes its frame here (microseconds, nothing else wakes when it has nothing
  to play) and hands it to its own sender task only when there is one.
* :meth:`Pacer.subscribe` (a :class:`Ticks`): a task awaits ``ticks.next()`` and gets
  each slot time; waking it is setting a future. For a task that must await at every
  tick anyway (a scripted caller pushing its voice into the graph).

Slots and late ticks
--------------------
Slots lie on a fixed grid: the pacer's first tick, then every period after it. When the
loop was busy and a tick runs late:

* it is counted as late if it ran more than :data:`LATE_MS` after its slot, and the
  largest lateness is kept (``max_late_ms``);
* slots the loop slept through entirely are skipped (``missed_slots``), not replayed:
  each subscriber is woken once, for the latest slot, and sends at most one frame. The
  grid is kept, so the next tick is due at its usual place: the line catches up on time
  without sending a burst. (A paced stream that bursts overflows the far end's jitter
  buffer; a gap of a frame is what a jitter buffer is built to absorb.)
* a ``Ticks`` owner that had not taken its previous slot when the next one came counts
  it in ``Ticks.missed`` and gets only the latest one: the same rule, per subscriber.

Which pacer
-----------
:func:`pacer_for` hands out the pacer of the running loop for a call's clock: every call
on the real monotonic clock shares one; a call on a ``VirtualClock`` (tests) gets that
clock's own, which ticks when the test advances it. Pacers live as long as their loop;
the ticker task runs only while someone is subscribed (the pacer owns it and stops it
when the last subscriber leaves: it outlives any one call, so no call's task group can
own it). Counters accumulate over the pacer's life; read them with :meth:`Pacer.stats`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from pipeline.clock import Clock, MonotonicClock
from pipeline.errors import StateError

__all__ = ["LATE_MS", "Pacer", "PacerStats", "TickCallback", "Ticks", "pacer_for"]

logger = logging.getLogger(__name__)

#: A tick that runs more than this after its slot is counted late. 5 ms is a quarter of a
#: 20 ms frame: later than that, the far end's jitter buffer starts to notice.
LATE_MS = 5.0

_MONOTONIC = MonotonicClock()


@dataclass(frozen=True, slots=True)
class PacerStats:
    """A snapshot of a pacer's counters (they only grow, over the pacer's life)."""

    period_ms: int
    subscribers: int
    ticks: int
    late_ticks: int
    missed_slots: int
    max_late_ms: float


class _Subscription(ABC):
    """What both kinds of subscription share: unsubscribing, also as a context manager."""

    __slots__ = ("_closed", "_pacer")

    def __init__(self, pacer: Pacer) -> None:
        self._pacer = pacer
        self._closed = False

    def close(self) -> None:
        """Unsubscribe (idempotent)."""
        if not self._closed:
            self._closed = True
            self._pacer._remove(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @abstractmethod
    def _tick(self, slot_ns: int) -> None:
        """Called by the pacer's task at each tick: must never block or raise."""


class Ticks(_Subscription):
    """One subscription to a :class:`Pacer`: ``await next()`` once per frame.

    Use it as a context manager (``with pacer.subscribe() as ticks:``) so that it is
    cancelled when the task that owns it ends.
    """

    __slots__ = ("_slot", "_waiter", "_woken", "missed")

    def __init__(self, pacer: Pacer) -> None:
        super().__init__(pacer)
        self._slot: int | None = None  # the latest slot not yet taken by next()
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None
        #: Slots that came while the previous one was still not taken (the owner was busy).
        self.missed = 0

    async def next(self) -> int | None:
        """Wait for the next tick and return its slot time (ns on the pacer's clock).

        Returns ``None`` instead when :meth:`wake` woke the owner between ticks. If a
        tick already came while the owner was busy, returns at once.
        """
        if self._closed:
            raise StateError("this pacer subscription is closed")
        if self._slot is None and not self._woken:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        self._woken = False
        slot, self._slot = self._slot, None
        return slot

    def wake(self) -> None:
        """Wake the owner now, between ticks (``next()`` returns ``None``): for urgent work
        such as telling the wire to drop its audio on a barge-in."""
        self._woken = True
        self._release()

    def _tick(self, slot_ns: int) -> None:
        if self._slot is not None:
            self.missed += 1
        self._slot = slot_ns
        self._release()

    def _release(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class TickCallback(_Subscription):
    """A function called at every tick of a :class:`Pacer` (see :meth:`Pacer.every_tick`)."""

    __slots__ = ("_context", "_fn")

    def __init__(self, pacer: Pacer, fn: Callable[[int], None]) -> None:
        super().__init__(pacer)
        self._fn = fn
        self._context = contextvars.copy_context()

    def _tick(self, slot_ns: int) -> None:
        try:
            self._context.run(self._fn, slot_ns)
        except Exception:
            # A subscriber's bug must not stop the ticker every call shares, nor be
            # logged fifty times a second: it is unsubscribed.
            logger.exception("pacer: tick callback %r failed; unsubscribed", self._fn)
            self.close()


class Pacer:
    """The shared ticker of one clock and period (see module docstring).

    Get one with :func:`pacer_for`; building your own gives a private ticker.
    """

    def __init__(self, clock: Clock, *, period_ms: int = 20) -> None:
        if period_ms <= 0:
            raise ValueError(f"pacer period must be > 0 ms, got {period_ms}")
        self.clock = clock
        self.period_ms = period_ms
        self._period_ns = period_ms * 1_000_000
        self._late_ns = int(LATE_MS * 1e6)
        self._subscribers: tuple[_Subscription, ...] = ()
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0
        self.late_ticks = 0
        self.missed_slots = 0
        self.max_late_ns = 0

    @property
    def subscribers(self) -> int:
        """How many subscriptions are active."""
        return len(self._subscribers)

    def subscribe(self) -> Ticks:
        """A subscription for a task that awaits each tick; its first tick is the pacer's
        next slot (at once if the pacer was idle)."""
        ticks = Ticks(self)
        self._add(ticks)
        return ticks

    def every_tick(self, fn: Callable[[int], None]) -> TickCallback:
        """Call ``fn(slot_ns)`` at every tick, in the caller's context, until closed.

        ``fn`` must not block; if it raises, it is logged and unsubscribed.
        """
        callback = TickCallback(self, fn)
        self._add(callback)
        return callback

    def stats(self) -> PacerStats:
        """The counters now."""
        return PacerStats(
            period_ms=self.period_ms,
            subscribers=len(self._subscribers),
            ticks=self.ticks,
            late_ticks=self.late_ticks,
            missed_slots=self.missed_slots,
            max_late_ms=self.max_late_ns / 1e6,
        )

    def _add(self, subscriber: _Subscription) -> None:
        # Outbound first: tick callbacks (a transport taking the frame due now) are served
        # before Ticks owners are woken (a simulated caller's voice, which pushes audio
        # through a graph: the heavy part of a tick). Otherwise, with many calls, a frame
        # due now waits behind the tick's inbound work of every call served before it.
        if isinstance(subscriber, TickCallback):
            callbacks = tuple(s for s in self._subscribers if isinstance(s, TickCallback))
            others = tuple(s for s in self._subscribers if not isinstance(s, TickCallback))
            self._subscribers = (*callbacks, subscriber, *others)
        else:
            self._subscribers += (subscriber,)
        if self._task is None:
            # A fresh context: the ticker serves many calls and carries none of their
            # context variables (callbacks run in their own, Ticks owners in their tasks').
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"pacer-{self.period_ms}ms", context=contextvars.Context()
            )

    def _remove(self, subscriber: _Subscription) -> None:
        self._subscribers = tuple(t for t in self._subscribers if t is not subscriber)
        if not self._subscribers and self._task is not None:
            self._task.cancel()  # nobody to pace: stop waking the loop
            self._task = None

    async def _run(self) -> None:
        clock = self.clock
        period = self._period_ns
        slot = clock.now_ns()
        while True:
            await clock.sleep_until(slot)
            late = clock.now_ns() - slot
            if late >= period:  # the loop slept through whole slots: skip them, keep the grid
                skipped = late // period
                self.missed_slots += skipped
                slot += skipped * period
            self.ticks += 1
            if late > self._late_ns:
                self.late_ticks += 1
            if late > self.max_late_ns:
                self.max_late_ns = late
            for subscriber in self._subscribers:
                subscriber._tick(slot)
            slot += period


# One registry per event loop (a pacer's task belongs to its loop); weak, so a closed
# loop takes its pacers with it.
_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[object, int], Pacer]] = (
    weakref.WeakKeyDictionary()
)


def pacer_for(clock: Clock, period_ms: int = 20) -> Pacer:
    """The running loop's pacer for ``clock`` and ``period_ms``.

    Every ``MonotonicClock`` reads the same time, so all real calls share one pacer;
    any other clock (a test's ``VirtualClock``) gets a pacer of its own.
    """
    pacers = _pacers.setdefault(asyncio.get_running_loop(), {})
    shared = type(clock) is MonotonicClock
    key = ("monotonic" if shared else clock, period_ms)
    pacer = pacers.get(key)
    if pacer is None:
        pacer = pacers[key] = Pacer(_MONOTONIC if shared else clock, period_ms=period_ms)
    return pacer
