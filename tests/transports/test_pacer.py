"""The shared pacer: one clock wake-up per tick for every subscriber, slots on a fixed
grid, late ticks counted and never turned into bursts. All on a virtual clock."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.clock import MonotonicClock, VirtualClock
from pipeline.errors import StateError
from transports.pacer import Pacer, PacerStats, Ticks, pacer_for

MS = 1_000_000


class CountingClock(VirtualClock):
    """A virtual clock that counts how often a task parks on it (a loop wake-up each)."""

    def __init__(self) -> None:
        super().__init__()
        self.parks = 0

    async def sleep_until(self, deadline_ns: int) -> None:
        if deadline_ns > self.now_ns():
            self.parks += 1
        await super().sleep_until(deadline_ns)


class StallingClock(VirtualClock):
    """A virtual clock whose time can jump without waking anyone: a loop that was busy."""

    def stall(self, ns: int) -> None:
        self._now += ns


async def take(ticks: Ticks, clock: VirtualClock, n: int, out: list[tuple[int | None, int]]) -> None:
    for _ in range(n):
        slot = await ticks.next()
        out.append((slot, clock.now_ns()))


async def test_one_subscriber_ticks_on_exact_20_ms_slots() -> None:
    clock = VirtualClock(start_ns=1000 * MS)
    pacer = Pacer(clock)
    seen: list[tuple[int | None, int]] = []
    with pacer.subscribe() as ticks:
        task = asyncio.create_task(take(ticks, clock, 4, seen))
        await clock.advance(0)
        await clock.advance(60 * MS)
        await task
    slots = [1000 * MS + k * 20 * MS for k in range(4)]
    assert seen == [(s, s) for s in slots]  # woken exactly at each slot, the first one at once
    assert pacer.stats() == PacerStats(period_ms=20, subscribers=0, ticks=4, late_ticks=0, missed_slots=0,
                                       max_late_ms=0.0)


async def test_fifty_subscribers_share_one_wake_up_per_tick() -> None:
    clock = CountingClock()
    pacer = pacer_for(clock)
    seen: list[list[tuple[int | None, int]]] = [[] for _ in range(50)]
    subs = [pacer.subscribe() for _ in range(50)]
    tasks = [asyncio.create_task(take(t, clock, 10, out)) for t, out in zip(subs, seen, strict=True)]
    await clock.advance(0)
    for _ in range(9):
        assert clock.sleepers == 1  # the pacer alone waits on the clock; subscribers wait on it
        await clock.advance(20 * MS)
    await asyncio.gather(*tasks)
    expected = [(k * 20 * MS, k * 20 * MS) for k in range(10)]
    assert all(out == expected for out in seen)
    assert pacer.ticks == 10 and clock.parks == 10  # one park per tick (the 10th waits for slot 200)
    for t in subs:
        t.close()
    await clock.advance(0)
    assert clock.sleepers == 0 and pacer.subscribers == 0  # nobody to pace: the ticker stopped


async def test_a_late_tick_skips_the_slots_it_slept_through_and_keeps_the_grid() -> None:
    clock = StallingClock()
    pacer = Pacer(clock)
    seen: list[tuple[int | None, int]] = []
    with pacer.subscribe() as ticks:
        task = asyncio.create_task(take(ticks, clock, 4, seen))
        await clock.advance(0)
        await clock.advance(20 * MS)  # slots 0 and 20 on time
        clock.stall(55 * MS)  # the loop was blocked: now 75 ms, slot 40 is 35 ms overdue
        await clock.advance(0)  # the pacer wakes once, late
        await clock.advance(5 * MS)  # 80 ms: back on the grid
        await task
    # Slot 40 was slept through: skipped, not replayed. The one late wake serves slot 60
    # (at 75 ms); the next tick is due on the grid at 80 ms, not 20 ms after the late one.
    assert [s for s, _ in seen] == [0, 20 * MS, 60 * MS, 80 * MS]
    assert [now for _, now in seen] == [0, 20 * MS, 75 * MS, 80 * MS]
    stats = pacer.stats()
    assert (stats.ticks, stats.late_ticks, stats.missed_slots, stats.max_late_ms) == (4, 1, 1, 35.0)


async def test_a_busy_subscriber_misses_its_own_slots_without_holding_up_others() -> None:
    clock = VirtualClock()
    pacer = Pacer(clock)
    busy, idle = pacer.subscribe(), pacer.subscribe()
    seen: list[tuple[int | None, int]] = []
    task = asyncio.create_task(take(idle, clock, 4, seen))
    await clock.advance(0)
    await clock.advance(60 * MS)  # 4 ticks; "busy" never called next()
    await task
    assert [s for s, _ in seen] == [0, 20 * MS, 40 * MS, 60 * MS]
    assert busy.missed == 3 and idle.missed == 0
    assert await busy.next() == 60 * MS  # only the latest slot: no burst of four
    busy.close()
    idle.close()


async def test_wake_returns_between_ticks_without_a_slot() -> None:
    clock = VirtualClock()
    pacer = Pacer(clock)
    with pacer.subscribe() as ticks:
        assert await ticks.next() == 0
        waiting = asyncio.create_task(ticks.next())
        await clock.advance(5 * MS)
        assert not waiting.done()
        ticks.wake()
        assert await waiting is None and clock.now_ns() == 5 * MS
        await clock.advance(15 * MS)
        assert await ticks.next() == 20 * MS
    with pytest.raises(StateError, match="closed"):
        await ticks.next()


async def test_real_calls_share_one_pacer_and_virtual_clocks_get_their_own() -> None:
    a, b = pacer_for(MonotonicClock()), pacer_for(MonotonicClock())
    assert a is b and a.period_ms == 20
    assert pacer_for(MonotonicClock(), 10) is not a
    v1, v2 = VirtualClock(), VirtualClock()
    assert pacer_for(v1) is pacer_for(v1) and pacer_for(v1) is not pacer_for(v2)
    with pytest.raises(ValueError, match="period"):
        Pacer(v1, period_ms=0)


async def test_counters_survive_the_ticker_stopping_and_restarting() -> None:
    clock = VirtualClock()
    pacer = pacer_for(clock)
    with pacer.subscribe() as ticks:
        await ticks.next()
        await clock.advance(20 * MS)
        await ticks.next()
    await clock.advance(100 * MS)  # nobody subscribed: no ticks
    with pacer.subscribe() as ticks:
        assert await ticks.next() == 120 * MS  # a new grid from the restart
    assert pacer.ticks == 3


async def test_tick_callbacks_run_in_the_subscribers_context_without_waking_a_task() -> None:
    import contextvars

    call_id: contextvars.ContextVar[str] = contextvars.ContextVar("call_id", default="none")
    clock = CountingClock()
    pacer = Pacer(clock)
    seen: list[tuple[str, int, int]] = []

    def subscribe(name: str) -> None:
        call_id.set(name)
        pacer.every_tick(lambda slot: seen.append((call_id.get(), slot, clock.now_ns())))

    for name in ("a", "b"):
        contextvars.copy_context().run(subscribe, name)  # each call subscribes from its own context
    await clock.advance(0)
    await clock.advance(20 * MS)
    assert seen == [("a", 0, 0), ("b", 0, 0), ("a", 20 * MS, 20 * MS), ("b", 20 * MS, 20 * MS)]
    assert clock.parks == 2 and pacer.subscribers == 2


async def test_a_failing_callback_is_unsubscribed_and_the_others_keep_ticking(caplog: pytest.LogCaptureFixture) -> None:
    clock = VirtualClock()
    pacer = Pacer(clock)
    good: list[int] = []

    def broken(slot: int) -> None:
        raise RuntimeError("bug in a transport")

    pacer.every_tick(broken)
    with pacer.every_tick(good.append):
        await clock.advance(0)
        await clock.advance(40 * MS)
        assert good == [0, 20 * MS, 40 * MS] and pacer.subscribers == 1
    errors = [r for r in caplog.records if r.name == "transports.pacer"]
    assert len(errors) == 1 and "unsubscribed" in errors[0].getMessage()  # logged once, not per tick
    await clock.advance(0)
    assert clock.sleepers == 0


async def test_outbound_callbacks_are_served_before_inbound_owners_at_each_tick() -> None:
    """A frame due now is taken (and its sender task woken) before any call's inbound task
    of the tick is woken, whatever the order of subscription: with many calls the inbound
    work (audio through the graph) would otherwise delay every frame served after it."""
    clock = VirtualClock()
    pacer = Pacer(clock)
    order: list[str] = []
    voice = pacer.subscribe()  # the inbound side subscribes first
    wake: asyncio.Queue[int] = asyncio.Queue()

    async def inbound() -> None:
        while await voice.next() is not None:
            order.append("inbound")

    async def sender() -> None:
        while True:
            await wake.get()
            order.append("outbound")

    tasks = [asyncio.create_task(inbound()), asyncio.create_task(sender())]
    await clock.advance(0)  # both tasks parked; the first tick has passed
    order.clear()
    with pacer.every_tick(wake.put_nowait):  # as a transport wakes its sender task
        await clock.advance(20_000_000)
        await clock.advance(20_000_000)
    voice.close()
    for task in tasks:
        task.cancel()
    assert order == ["outbound", "inbound", "outbound", "inbound"]
