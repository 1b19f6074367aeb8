"""CallRunner: runs one call's graph from start to end of stream (or cancel).

Every task of a call (source producers, queue workers) is owned by one TaskGroup, so
nothing outlives the call and nothing is fire-and-forget. Nodes start sinks first (so
nothing is pushed into a node that is not ready) and stop sources first.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from .bus import Message, MessageType
from .context import CallContext
from .errors import FatalError, StateError
from .framequeue import Overflow
from .frames import Cancel, ErrorEvent, EventFrame, Start, reset_clock, use_clock
from .graph import Graph
from .processor import Processor

__all__ = ["CallResult", "CallRunner", "run_call"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallResult:
    """How a call ended: ``eos`` (every sink got end of stream), ``cancelled``,
    ``fatal`` (a node raised FatalError) or ``timeout``."""

    call_id: str
    reason: str
    duration_s: float
    errors: tuple[ErrorEvent, ...] = field(default=())


class CallRunner:
    """Owns one call: wires the graph, starts nodes, waits for the end, stops nodes."""

    def __init__(self, graph: Graph, ctx: CallContext | None = None) -> None:
        self.graph = graph
        self.ctx = ctx or CallContext()
        self.errors: list[ErrorEvent] = []
        self._stop: asyncio.Future[str] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started: list[Processor] = []
        self._joined: dict[str, list[asyncio.Task[None]]] = {}

    def cancel(self, reason: str = "cancelled") -> None:
        """End the call now: broadcast ``Cancel`` and stop every node."""
        if self.graph.ctx is not None:
            self.graph.broadcast(Cancel(reason=reason))
        elif self._stop is not None and not self._stop.done():
            self._stop.set_result("cancelled")

    def _on_event(self, event: EventFrame) -> None:
        if type(event) is ErrorEvent:
            self.errors.append(event)
            if event.fatal:
                self._finish("fatal")
        elif type(event) is Cancel:
            self._finish("cancelled")

    def _finish(self, reason: str) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(reason)

    async def run(self, *, timeout: float | None = None) -> CallResult:
        """Run the call to its end; errors inside nodes never raise here.

        ``timeout`` is in seconds on the call's clock (virtual time on a ``VirtualClock``).

        A node whose ``setup()`` fails stops the nodes already started and raises
        ``FatalError`` naming it: a call that cannot start is the caller's to report.
        """
        clock_token = use_clock(self.ctx.clock.now_ns)  # every frame of the call on its clock
        try:
            return await self._run(timeout)
        finally:
            reset_clock(clock_token)

    async def _run(self, timeout: float | None) -> CallResult:
        loop = asyncio.get_running_loop()
        started = self.ctx.clock.now_ns()
        self._stop = loop.create_future()
        order = self.graph.wire(self.ctx)
        self.graph.watch_events(self._on_event)
        sinks = self.graph.sinks
        for sink in sinks:
            sink._eos = loop.create_future()
        # Nodes start before the TaskGroup exists: their workers are created inside it,
        # so a failed setup never leaves a task behind.
        pending: list[tuple[Coroutine[Any, Any, None], str]] = []

        def later(coro: Coroutine[Any, Any, None], name: str) -> None:
            pending.append((coro, name))

        started_nodes = self._started
        for node in reversed(order):  # sinks first: nothing is pushed into a node not ready
            try:
                await node._start(self.ctx, later)
            except Exception as exc:
                for coro, _ in pending:
                    coro.close()
                await self._stop_all([], started_nodes)
                logger.error("call %s: node '%s' failed to start: %s", self.ctx.call_id, node.name, exc)
                raise FatalError(f"node '{node.name}' failed to start: {type(exc).__name__}: {exc}") from exc
            started_nodes.append(node)
        reason = "eos"
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            tasks = self._tasks
            tasks += [tg.create_task(coro, name=f"{self.ctx.call_id}:{name}") for coro, name in pending]
            try:
                self.graph.broadcast(Start(call_id=self.ctx.call_id))
                for source in self.graph.sources:
                    tasks.append(tg.create_task(source._run_source(), name=f"{self.ctx.call_id}:{source.name}:source"))
                waits: list[asyncio.Future[Any]] = [self._stop]
                eos: asyncio.Future[Any] | None = None
                if sinks:
                    eos = asyncio.gather(*(s._eos for s in sinks if s._eos is not None))
                    waits.append(eos)
                expiry: asyncio.Task[None] | None = None
                if timeout is not None:  # on the call's clock, like every other wait
                    deadline = started + int(timeout * 1e9)
                    expiry = tg.create_task(self.ctx.clock.sleep_until(deadline), name=f"{self.ctx.call_id}:timeout")
                    tasks.append(expiry)
                    waits.append(expiry)
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if self._stop in done:
                    reason = self._stop.result()
                elif expiry is not None and expiry in done and not (eos is not None and eos.done()):
                    reason = "timeout"
                if eos is not None and not eos.done():
                    # A cancelled gather ends with CancelledError *set as its exception*,
                    # which asyncio logs as never retrieved unless someone looks at it.
                    eos.add_done_callback(_retrieve)
                    eos.cancel()
            finally:
                self._tg = None
                await self._stop_all(tasks, started_nodes)
        self.ctx.bus.post(Message(type=MessageType.END_OF_STREAM, source=self.graph.name, text=reason))
        logger.info("call %s ended: %s", self.ctx.call_id, reason)
        return CallResult(
            call_id=self.ctx.call_id,
            reason=reason,
            duration_s=(self.ctx.clock.now_ns() - started) / 1e9,
            errors=tuple(self.errors),
        )

    async def attach(
        self, src: str, node: Processor, *, maxsize: int = 256, overflow: Overflow = "drop_oldest"
    ) -> None:
        """Add ``node`` to the running call as a tap of ``src`` (a live view, a recorder).

        It is set up like any node, gets ``src``'s sticky frames (audio formats) first,
        then copies of what ``src`` pushes; it never slows ``src`` (bounded queue with
        ``overflow``). It stops with the call, or earlier with :meth:`detach`.
        """
        tg = self._tg
        if tg is None:
            raise StateError("the call is not running; add taps to the graph before it starts")
        self.graph.join_tap(src, node, maxsize=maxsize, overflow=overflow)
        made: list[asyncio.Task[None]] = []
        # attach() may be called from outside the call (an HTTP handler): its tasks get
        # the call's clock all the same.
        context = contextvars.copy_context()
        context.run(use_clock, self.ctx.clock.now_ns)

        def spawn(coro: Coroutine[Any, Any, None], name: str) -> None:
            made.append(tg.create_task(coro, name=f"{self.ctx.call_id}:{name}", context=context))

        try:
            await node._start(self.ctx, spawn)
        except Exception as exc:
            self.graph.leave_tap(node)
            raise FatalError(f"node '{node.name}' failed to start: {type(exc).__name__}: {exc}") from exc
        self._started.append(node)
        self._tasks += made
        self._joined[node.name] = made

    async def detach(self, node: Processor) -> None:
        """Remove a tap added with :meth:`attach` and stop it; the call goes on."""
        self.graph.leave_tap(node)
        for task in self._joined.pop(node.name, []):
            task.cancel()
        if node in self._started:
            self._started.remove(node)
        await node._stop()

    async def _stop_all(self, tasks: list[asyncio.Task[None]], started: list[Processor]) -> None:
        for task in tasks:
            task.cancel()
        for node in reversed(started):  # sources first
            await node._stop()


async def run_call(graph: Graph, ctx: CallContext | None = None, *, timeout: float | None = None) -> CallResult:
    """Run ``graph`` as one call and return how it ended."""
    return await CallRunner(graph, ctx).run(timeout=timeout)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
