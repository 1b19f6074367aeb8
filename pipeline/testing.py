"""Test helpers: feed frames through a processor and collect what comes out.

``run_processor(node, frames)`` builds ``feeder -> node -> collector``, runs it as a
call and returns the collector: the data frames, control frames and events it saw, in
order. Out-of-band events in ``frames`` are emitted (broadcast) when their turn comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from .clock import VirtualClock
from .context import CallContext
from .frames import ControlFrame, DataFrame, EventFrame, Frame
from .graph import Graph
from .processor import Processor
from .runner import CallResult, run_call

__all__ = ["Collector", "Feeder", "Puppet", "advance_to", "drive", "run_processor", "until"]


class Feeder(Processor):
    """A source that pushes a fixed list of frames, then ends the stream."""

    produces = (DataFrame,)

    def __init__(self, frames: Iterable[Frame] = (), *, name: str = "feeder") -> None:
        super().__init__(name=name)
        self.frames = list(frames)

    async def run(self) -> None:
        for frame in self.frames:
            await self.push(frame)


class Collector(Processor):
    """A sink that records everything it receives, in order."""

    consumes = (DataFrame,)

    def __init__(self, *, name: str = "collector") -> None:
        super().__init__(name=name)
        self.frames: list[DataFrame] = []
        self.controls: list[ControlFrame] = []
        self.events: list[EventFrame] = []
        #: Everything, in arrival order.
        self.seen: list[Frame] = []

    async def process(self, frame: DataFrame) -> None:
        self.frames.append(frame)
        self.seen.append(frame)

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        self.controls.append(frame)
        self.seen.append(frame)
        return None

    def on_event(self, event: EventFrame) -> None:
        self.events.append(event)
        self.seen.append(event)

    def of_type(self, *types: type[Frame]) -> list[Frame]:
        """Every frame seen of the given types."""
        return [f for f in self.seen if isinstance(f, types)]


class Puppet(Processor):
    """Stands in for the rest of a graph behind a transport: records the frames and events
    that reach it (``got``, ``events``) and pushes what the test tells it to (``say``).

    ``consumes``: the data types it takes (the rest pass through); it may push any data.
    """

    produces = (DataFrame,)

    def __init__(self, consumes: tuple[type[DataFrame], ...], *, name: str = "puppet") -> None:
        super().__init__(name=name)
        self.consumes = consumes
        self.got: list[Frame] = []
        self.events: list[EventFrame] = []

    async def process(self, frame: DataFrame) -> None:
        self.got.append(frame)

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        self.got.append(frame)
        return None

    def on_event(self, event: EventFrame) -> None:
        self.events.append(event)

    async def say(self, *frames: Frame) -> None:
        """Push ``frames`` downstream, in order."""
        for frame in frames:
            await self.push(frame)


async def run_processor(
    node: Processor,
    frames: Sequence[Frame],
    *,
    ctx: CallContext | None = None,
    timeout: float = 10.0,
) -> tuple[Collector, CallResult]:
    """Run ``Feeder(frames) -> node -> Collector`` as one call."""
    graph = Graph(f"test-{node.name}")
    collector = Collector()
    graph.chain(Feeder(frames), node, collector)
    result = await run_call(graph, ctx, timeout=timeout)
    return collector, result


async def until(condition: Callable[[], bool], *, rounds: int = 10_000) -> None:
    """Let other tasks run until ``condition()`` holds; fail after ``rounds`` loop turns.

    Synchronises a test with the call's tasks by loop turns, never by wall-clock time.
    """
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"condition not met after {rounds} loop turns")


async def advance_to(clock: VirtualClock, ms: float) -> None:
    """Move ``clock`` forward to ``ms`` milliseconds after its zero."""
    await clock.advance(int(ms * 1_000_000) - clock.now_ns())


def _offload_busy() -> bool:
    from .offload import blocking_executor

    return blocking_executor().unfinished > 0


async def _settle(rounds: int = 50) -> None:
    """Let woken tasks run until they park again (and until the loop has nothing ready,
    where the loop shows it: the default asyncio loop does)."""
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    for _ in range(rounds):
        await asyncio.sleep(0)
    for _ in range(10 * rounds):  # callbacks queued from other threads while we yielded
        if not ready:
            break
        await asyncio.sleep(0)


async def drive(
    clock: VirtualClock,
    until_done: asyncio.Future[object] | asyncio.Task[object],
    *,
    step_ms: float = 20.0,
    busy: Callable[[], bool] = _offload_busy,
    max_virtual_s: float = 3600.0,
) -> None:
    """Run a call on ``clock`` as fast as the CPU allows, until ``until_done`` is done.

    Virtual time moves in ``step_ms`` steps, and only when the loop has settled and
    ``busy()`` is false: while speech work runs on the offload threads (by default), time
    stands still, so the call sees the same audio timeline as in real time, whatever
    the machine's speed. Raises ``AssertionError`` past ``max_virtual_s``.
    """
    step_ns = int(step_ms * 1e6)
    limit_ns = clock.now_ns() + int(max_virtual_s * 1e9)
    while not until_done.done():
        await _settle()
        if busy():
            # Work is on other threads: wait for it in real time; no virtual time passes.
            await asyncio.sleep(0.0005)
            continue
        # Not busy: every step that finished has queued its wake-up on the loop (it counts
        # as done only after that). Run those wake-ups, which may start new steps, and
        # look again before time moves: a step finishing between the first settle and the
        # check would otherwise see the audio after it already there.
        await _settle()
        if busy():
            continue
        if until_done.done():
            break
        if clock.now_ns() >= limit_ns:
            raise AssertionError(f"still running after {max_virtual_s} s of virtual time")
        await clock.advance(step_ns)
