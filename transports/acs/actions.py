"""An agent's call actions carried out on the ACS call: transfer to a human, hang up.

The brain (the orchestrator) asks for an action with a ``CallAction`` event in the turn
whose reply announces it ("I am transferring you to a colleague", "Goodbye"). Acting at
once would cut that reply: ACS ends the media stream as soon as the call is transferred
or hung up. So :class:`CallActions` waits until the bot has *stopped speaking* that turn
(its ``BotStoppedSpeaking``: the reply played out, or the caller talked over it), then
asks the control plane to act. If that turn never makes the bot speak (an action with no
words), it acts after ``settle_ms`` on the call's clock.

One action per call: the first one asked for is carried out, later ones are logged and
ignored (a hang-up after a transfer was asked would drop the caller on the way to a
human). A failure of the control plane (ACS refuses, times out, no transfer target is
configured) is logged and posted on the call's bus as an error; the call goes on, so the
caller is not cut off by our mistake, and the report shows what happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pipeline.bus import Message, MessageType
from pipeline.context import CallContext
from pipeline.frames import BotStoppedSpeaking, CallAction, EventFrame
from pipeline.graph import Graph

__all__ = ["ActionHandler", "CallActions"]

logger = logging.getLogger(__name__)

#: ``(call_connection_id, action, reason)``: carries out ``action`` ("transfer" | "hangup")
#: on the call; raises on failure (any exception: it is logged, never propagated).
ActionHandler = Callable[[str, str, str], Awaitable[None]]


class CallActions:
    """Carries out one call's ``CallAction`` once the bot has said its last words."""

    def __init__(self, call_connection_id: str, ctx: CallContext, act: ActionHandler, *,
                 settle_ms: float = 10_000.0) -> None:
        self.call_connection_id = call_connection_id
        self.ctx = ctx
        self._act = act
        self._settle_ns = int(settle_ms * 1e6)
        self.asked: CallAction | None = None
        self.done: asyncio.Future[bool] | None = None  # True: carried out; False: failed
        self._spoken: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._acting = False

    def watch(self, graph: Graph) -> None:
        """See the call's events from now on (before the call runs)."""
        graph.watch_events(self._on_event)

    async def aclose(self) -> None:
        """The call is over: stop waiting for its last words, or let an action that is
        under way finish (the control plane bounds it; a hang-up ends the call itself)."""
        task = self._task
        if task is None or task.done():
            return
        if not self._acting:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def _on_event(self, event: EventFrame) -> None:
        if isinstance(event, CallAction):
            if self.asked is not None:
                logger.info("call %s: %s asked by %s ignored: %s was asked first", self.call_connection_id,
                            event.action, event.agent or "the brain", self.asked.action)
                return
            self.asked = event
            loop = asyncio.get_running_loop()
            self._spoken = loop.create_future()
            self.done = loop.create_future()
            self._task = loop.create_task(self._carry_out(event), name=f"acs-action-{self.call_connection_id}")
        elif isinstance(event, BotStoppedSpeaking):
            asked, spoken = self.asked, self._spoken
            if asked is not None and spoken is not None and not spoken.done() and event.turn >= asked.turn:
                spoken.set_result(None)

    async def _carry_out(self, asked: CallAction) -> None:
        assert self._spoken is not None and self.done is not None
        deadline = asyncio.ensure_future(self.ctx.clock.sleep_until(self.ctx.clock.now_ns() + self._settle_ns))
        try:
            await asyncio.wait({self._spoken, deadline}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            deadline.cancel()
        why = f" ({asked.reason})" if asked.reason else ""
        self._acting = True
        try:
            await self._act(self.call_connection_id, asked.action, asked.reason)
        except Exception as exc:  # the control plane's error, whatever it is: the call goes on
            text = f"call {self.call_connection_id}: {asked.action}{why} asked by {asked.agent or 'the brain'} " \
                   f"failed: {exc}"
            logger.error("%s", text)
            self.ctx.bus.post(Message(type=MessageType.ERROR, source="acs_actions", text=text))
            self.done.set_result(False)
            return
        logger.info("call %s: %s%s carried out for %s", self.call_connection_id, asked.action, why,
                    asked.agent or "the brain")
        self.done.set_result(True)
