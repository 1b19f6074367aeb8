"""The processor base: one node of a call's graph.

A processor declares what it handles and makes, and overrides a few hooks::

    class Upper(Processor):
        consumes = (TTSText,)          # data types process() receives
        produces = (TTSText,)          # data types it pushes (checked when the graph is built)

        async def process(self, frame):
            await self.push(TTSText(frame.text.upper(), turn=frame.turn))

Routing rules, applied by the base so nodes stay small:

* Data frames of a type the node does not consume pass straight through to its
  outputs. Data of a flushed (stale) turn is dropped on arrival, by one comparison.
* In-band control frames (format, end of stream, response start/end, flush stop) go to
  ``on_control()`` and are then forwarded automatically, in order with the data.
  ``FlushStop(turn)``, the second phase of a flush, also calls ``on_flush_stop(turn)``:
  every frame of turns ``<= turn`` that was in flight ahead of it has passed, so a node
  resets what it kept for those turns there, in order with the data.
* Sticky control frames (audio formats) are remembered per node; a node attached to a
  running call (a tap added mid-call) gets them replayed first, so it knows the format
  of the audio it joins.
* Out-of-band events never travel along edges: the graph broadcasts them to every node
  by direct, synchronous call to ``on_event()``, so they jump every queue.
  ``FlushStart`` first purges this node's queue and calls ``on_flush()``.
* A node that waits on I/O sets ``io_bound = True`` and gets a bounded input queue and
  a worker task; every other node is called directly by its upstream neighbour, which
  costs about a microsecond instead of the tens a queue hop costs.
* An exception in ``process()`` is logged and posted as a non-fatal ``ErrorEvent``: the
  frame is dropped and the call goes on. ``FatalError`` ends the call.

Interruption is cooperative: in-flight streams are wrapped in ``interruptible()``, which
stops at a flush of their turn; the node's task is never cancelled and recreated.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .bus import Message, MessageType
from .context import CallContext
from .errors import FatalError, StateError
from .framequeue import FrameQueue
from .frames import (
    ControlFrame,
    DataFrame,
    EndOfStream,
    ErrorEvent,
    EventFrame,
    FlushStart,
    FlushStop,
    Frame,
    FrameClass,
)
from .offload import blocking_executor

__all__ = ["NoSettings", "Processor", "State"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Deliver = Callable[[Frame], Awaitable[None]]
Observer = Callable[[Frame], object]

_EVENT = FrameClass.EVENT


# Before a node starts it has no call; one shared placeholder instead of one per node.
_UNSTARTED = CallContext("unstarted")


class State(enum.Enum):
    """Lifecycle of a processor."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class NoSettings:
    """Settings of a processor that has none."""


class Processor:
    """Base class of every node. See the module docstring for the routing rules."""

    #: Data frame types ``process()`` receives; others pass through untouched. A class
    #: attribute; a node whose types depend on its settings sets it per instance in
    #: ``__init__`` (a resampler of the ``out`` stream consumes only ``OutputAudio``).
    consumes: tuple[type[DataFrame], ...] = ()
    #: Data frame types this node pushes (graph validation checks edges against them).
    produces: tuple[type[DataFrame], ...] = ()
    #: True for nodes that wait on I/O: they get an input queue and a worker task.
    io_bound: ClassVar[bool] = False
    #: Input queue bound for io_bound nodes (backpressure above it).
    queue_size: ClassVar[int] = 256
    #: True for transports: the node is a source (caller side) and a sink (playback side)
    #: at once; frames arriving at it end there instead of passing through.
    duplex: ClassVar[bool] = False
    #: The settings dataclass; YAML settings are checked against it.
    Settings: ClassVar[type[Any]] = NoSettings
    #: Added latency (min, max) in ms, for the graph's latency budget.
    latency: ClassVar[tuple[float, float]] = (0.0, 0.0)

    def __init__(self, settings: Any = None, *, name: str | None = None) -> None:
        self.name = name or type(self).__name__.lower()
        self.settings = settings if settings is not None else type(self).Settings()
        self.state = State.CREATED
        self.states: list[State] = [State.CREATED]
        self.ctx = _UNSTARTED  # replaced by the call's context at start
        self.stale_dropped = 0
        self.errors = 0
        self._outputs: list[Deliver] = []
        self._passthrough: list[Deliver] = self._outputs
        self._upstream: list[Deliver] = []
        self._observers: list[Observer] = []
        self._route: dict[type[Frame], bool] = {}
        self._sticky: dict[object, Frame] = {}
        self._queue: FrameQueue | None = None
        self._worker: asyncio.Task[None] | None = None
        self._emit: Callable[[EventFrame], None] | None = None
        self._eos: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.state.value}>"

    # --- hooks for subclasses ---------------------------------------------------------

    async def setup(self) -> None:
        """Acquire resources (models, connections) before the call starts."""

    async def cleanup(self) -> None:
        """Release resources after the call; must not raise."""

    async def run(self) -> None:
        """Sources override this to produce frames; ``EndOfStream`` follows when it returns."""

    async def process(self, frame: Any) -> None:
        """Handle one consumed data frame. The default forwards it."""
        await self.push(frame)

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        """See an in-band control frame before it is forwarded (push data first if needed).

        Return a replacement to forward instead (a resampler rewrites the audio format);
        ``None`` forwards ``frame`` itself. Control frames are never dropped.
        """
        return None

    async def on_upstream(self, frame: Frame) -> None:
        """Handle a frame pushed upstream by a downstream node. The default forwards it."""
        await self.push_upstream(frame)

    def on_event(self, event: EventFrame) -> None:
        """See an out-of-band event. Synchronous: never awaits, never blocks."""

    def on_flush(self, turn: int) -> None:
        """First flush phase: cancel in-flight work of turns ``<= turn`` (queue already purged).

        Synchronous and out-of-band: it runs the moment the flush is broadcast.
        """

    def on_flush_stop(self, turn: int) -> None:
        """Second flush phase, in-band: reset per-turn state kept for turns ``<= turn``.

        Called when ``FlushStop(turn)`` reaches this node, before it is forwarded.
        """

    # --- API for subclasses -----------------------------------------------------------

    async def push(self, frame: Frame) -> None:
        """Send a frame downstream (an event is broadcast instead)."""
        if frame.kind:
            if frame.kind is _EVENT:
                self.emit(frame)  # type: ignore[arg-type]
                return
            if frame.sticky:
                self._sticky[_sticky_key(frame)] = frame
        for observe in self._observers:
            observe(frame)
        for deliver in self._outputs:
            await deliver(frame)

    def feeders(self) -> list[Processor]:
        """The nodes that push to this one (known once the graph is wired for a call)."""
        return [feeder for deliver in self._upstream
                if isinstance(feeder := getattr(deliver, "__self__", None), Processor)]

    async def push_upstream(self, frame: Frame) -> None:
        """Send a frame to the nodes feeding this one."""
        for deliver in self._upstream:
            await deliver(frame)

    def enqueue(self, frame: Frame) -> None:
        """Queue ``frame`` for this node's own worker, behind what is already queued.

        For an ``io_bound`` node that starts work of its own (a brain's greeting at call
        start): the work then runs in the node's task, in order with its input.
        """
        if self._queue is None:
            raise StateError(f"node '{self.name}' has no input queue (not io_bound, or not wired)")
        self._queue.offer(frame)

    def emit(self, event: EventFrame) -> None:
        """Broadcast an out-of-band event to every node of the graph."""
        if self._emit is None:
            raise StateError(f"node '{self.name}' is not part of a graph; cannot emit {event!r}")
        self._emit(event)

    def is_stale(self, turn: int) -> bool:
        """True when work for ``turn`` must stop because the turn was flushed."""
        return 0 < turn <= self.ctx.flushed_turn

    async def interruptible(self, source: AsyncIterable[T], turn: int) -> AsyncIterator[T]:
        """Iterate ``source`` until it ends or ``turn`` is flushed, whichever comes first.

        A pending ``__anext__`` is abandoned the moment the flush happens (not at the
        next item), and the source is closed, so an LLM or TTS stream stops promptly.
        """
        ctx = self.ctx
        iterator = aiter(source)
        try:
            while not ctx.is_stale(turn):
                step: asyncio.Future[T] = asyncio.ensure_future(anext(iterator))
                flushed = ctx.flush_signal()
                await asyncio.wait((step, flushed), return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    await asyncio.gather(step, return_exceptions=True)
                    return
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return
                if ctx.is_stale(turn):
                    return
                yield item
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU-heavy ``fn(*args)`` off the loop, as one step of this call.

        Steps go to the shared executor queued under the call's id, which serves calls
        round-robin (see ``pipeline.offload``): keep ``fn`` short (one feed, one chunk).
        """
        return await blocking_executor().run(self.ctx.call_id, fn, *args)

    def latency_ms(self) -> tuple[float, float]:
        """(min, max) latency this node adds; override when it depends on settings."""
        return type(self).latency

    def sticky_frames(self) -> list[Frame]:
        """The sticky frames (formats) this node has pushed, for late joiners."""
        return list(self._sticky.values())

    @classmethod
    def is_source(cls) -> bool:
        """True when the class produces frames of its own (overrides ``run``)."""
        return cls.run is not Processor.run

    # --- machinery (called by the graph and runner) -----------------------------------

    def _set_state(self, state: State) -> None:
        old = self.state
        self.state = state
        self.states.append(state)
        logger.debug("%s: %s -> %s", self.name, old.value, state.value)
        self.ctx.bus.post(
            Message(type=MessageType.STATE_CHANGED, source=self.name, text=f"{old.value} -> {state.value}")
        )

    def _receiver(self) -> Deliver:
        """What an upstream neighbour calls to hand this node a frame."""
        if self._queue is not None:
            return self._queue.put
        return self._handle

    async def _handle(self, frame: Frame) -> None:
        if not frame.kind:  # data
            turn = frame.turn
            if turn and turn <= self.ctx.flushed_turn:
                self.stale_dropped += 1
                return
            handled = self._route.get(type(frame))
            if handled is None:
                handled = self._learn(type(frame))
            if handled:
                try:
                    await self.process(frame)
                except Exception as exc:  # a node's bug must not take the call down
                    self._failed(exc, frame)
            else:
                if self._passthrough:
                    for observe in self._observers:  # taps and probes see what passes through too
                        observe(frame)
                for deliver in self._passthrough:
                    await deliver(frame)
        elif frame.kind is _EVENT:  # an event that travelled in-band by mistake
            self.emit(frame)  # type: ignore[arg-type]
        else:
            await self._handle_control(frame)  # type: ignore[arg-type]

    async def _handle_control(self, frame: ControlFrame) -> None:
        try:
            if type(frame) is FlushStop:
                self.on_flush_stop(frame.turn)
            replacement = await self.on_control(frame)
            if replacement is not None:
                frame = replacement
        except Exception as exc:
            self._failed(exc, frame)
        if frame.sticky:
            self._sticky[_sticky_key(frame)] = frame
        if self._passthrough:
            for observe in self._observers:
                observe(frame)
            for deliver in self._passthrough:
                await deliver(frame)
        elif type(frame) is EndOfStream and self._eos is not None and not self._eos.done():
            self._eos.set_result(None)

    def _learn(self, frame_type: type[Frame]) -> bool:
        handled = issubclass(frame_type, self.consumes) if self.consumes else False
        self._route[frame_type] = handled
        return handled

    def _on_event(self, event: EventFrame) -> None:
        """Entry point of the graph's broadcast."""
        try:
            if type(event) is FlushStart:
                if self._queue is not None:
                    self.stale_dropped += self._queue.purge(event.turn)
                self.on_flush(event.turn)
            self.on_event(event)
        except Exception as exc:
            self.errors += 1
            logger.exception("%s: on_event(%s) failed", self.name, type(event).__name__)
            self.ctx.bus.post(Message(type=MessageType.ERROR, source=self.name, text=str(exc), data=exc))

    def _failed(self, exc: Exception, frame: Frame) -> None:
        self.errors += 1
        fatal = isinstance(exc, FatalError)
        logger.log(
            logging.ERROR if fatal else logging.WARNING,
            "%s: failed on %s: %s: %s",
            self.name,
            type(frame).__name__,
            type(exc).__name__,
            exc,
            exc_info=fatal,
        )
        if self._emit is not None:
            self._emit(
                ErrorEvent(
                    node=self.name, message=f"{type(exc).__name__}: {exc}", fatal=fatal, error=exc, turn=frame.turn
                )
            )

    async def _work(self) -> None:
        queue = self._queue
        assert queue is not None
        handle = self._handle
        while True:
            frame = await queue.get()
            await handle(frame)

    async def _start(self, ctx: CallContext, spawn: Callable[[Coroutine[Any, Any, None], str], None]) -> None:
        if self.state is not State.CREATED:
            raise StateError(f"node '{self.name}' cannot start from state {self.state.value}")
        self.ctx = ctx
        self._set_state(State.STARTING)
        try:
            await self.setup()
        except Exception:
            self._set_state(State.FAILED)
            raise
        if self._queue is not None:
            spawn(self._work(), f"{self.name}:worker")
        self._set_state(State.RUNNING)

    async def _run_source(self) -> None:
        try:
            await self.run()
        except Exception as exc:
            self._failed(exc, EndOfStream())
        await self.push(EndOfStream())

    async def _stop(self) -> None:
        if self.state in (State.STOPPED, State.CREATED):
            return
        self._set_state(State.STOPPING)
        try:
            await self.cleanup()
        except Exception:
            logger.exception("%s: cleanup failed", self.name)
        self._set_state(State.STOPPED)


def _sticky_key(frame: Frame) -> object:
    return (type(frame), getattr(frame, "stream", None))


