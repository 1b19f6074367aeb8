"""CallTools: the orchestrator's :class:`~agents.engine.ToolRunner` for one call.

Every tool call of an engine goes through it: the tool is looked up in the store, its
arguments are checked against its schema (the store tool does it), it runs within its
time limit on the call's clock (:func:`processors.llm.tools.run_tool`), its output is
screened for prompt injections before any model reads it, a ``ToolCall`` event records
it, and a result asking for a call action (``{"action": "transfer"}``) is kept for the
orchestrator. Failures come back as ``{"error": "..."}``, never as exceptions.

A tool still running after ``filler_after_ms`` sets :attr:`CallTools.slow` (once per
turn), which the orchestrator answers with its filler phrase.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.clock import Clock
from pipeline.frames import EventFrame, SafetyFlag, ToolCall
from processors.llm.tools import ToolCallRequest, run_tool

from ..safety import screen_input
from .store import ToolStore, call_action

__all__ = ["CallTools"]


def _screen(value: Any, source: str, flags: list[SafetyFlag], turn: int) -> Any:
    """``value`` with every string screened (tool outputs may carry injected instructions)."""
    if isinstance(value, str):
        clean, found = screen_input(value, source)
        flags += [SafetyFlag(flag=f.kind, matched=f.matched, source=f.source, turn=turn) for f in found]
        return clean
    if isinstance(value, Mapping):
        return {k: _screen(v, source, flags, turn) for k, v in value.items()}
    if isinstance(value, list):
        return [_screen(v, source, flags, turn) for v in value]
    return value


class CallTools:
    """Runs tools for one call (see module docstring)."""

    def __init__(self, store: ToolStore, *, clock: Clock, emit: Callable[[EventFrame], None],
                 timeout_s: float = 8.0, filler_after_ms: float = 1500.0) -> None:
        self.store = store
        self.clock = clock
        self.emit = emit
        self.timeout_s = timeout_s
        self.filler_after_ms = filler_after_ms
        self.turn = 0
        self.calls: list[dict[str, Any]] = []  # this turn's {"name", "arguments", "result"}
        self.action: tuple[str, str] | None = None  # (action, reason) asked by a tool this turn
        self.slow = asyncio.Event()
        self._count = 0

    def begin(self, turn: int) -> None:
        """A new turn: forget the last one's calls, action and slowness."""
        self.turn, self.calls, self.action = turn, [], None
        self.slow.clear()

    async def call(self, name: str, arguments: Mapping[str, Any]) -> Any:
        self._count += 1
        request = ToolCallRequest(f"call_{self._count}", name, json.dumps(dict(arguments), default=str))
        work = asyncio.ensure_future(run_tool(self.store.get(name), request, arguments, clock=self.clock,
                                              timeout_s=self.timeout_s))
        timer = asyncio.ensure_future(self.clock.sleep_until(self.clock.now_ns() + int(self.filler_after_ms * 1e6)))
        try:
            await asyncio.wait((work, timer), return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                self.slow.set()
            outcome = await work
        finally:
            timer.cancel()
            if not work.done():
                work.cancel()
            await asyncio.gather(work, timer, return_exceptions=True)
        flags: list[SafetyFlag] = []
        result = ({"error": outcome.error} if outcome.error is not None
                  else _screen(outcome.result, f"tool:{name}", flags, self.turn))
        for flag in flags:
            self.emit(flag)
        action = call_action(result)
        if action is not None and self.action is None:
            reason = result.get("reason", "") if isinstance(result, Mapping) else ""
            self.action = (action, str(reason))
        self.calls.append({"name": name, "arguments": dict(arguments), "result": result})
        self.emit(ToolCall(name=name, arguments=request.arguments,
                           result="" if outcome.error is not None else json.dumps(result, default=str),
                           error=outcome.error or "", turn=self.turn))
        return result
