"""Tools an LLM may call: the minimal interface, the assembly of streamed calls, and running one.

A :class:`Tool` is anything with a ``name``, a ``description``, a JSON-schema
``parameters`` object, a ``timeout_s`` and an async ``call(arguments) -> result``;
:class:`FunctionTool` wraps an async function. The model sees :func:`tool_schema`; its
calls arrive in pieces across stream chunks (an index, then an id and a name, then
fragments of the JSON arguments), which :class:`ToolCallAssembler` puts back together.
:func:`run_tool` runs one call with its timeout on the call's clock and never raises:
whatever happens becomes a :class:`ToolOutcome` whose ``content`` is what the model
reads next (the result as JSON, or ``{"error": ...}``).

Checking arguments against the schema is left to the tool (the agents' tool store
generates schemas from typed signatures and checks them there); this module only
insists that the arguments are a JSON object (:class:`ToolArgumentsError` otherwise).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pipeline.clock import Clock
from pipeline.errors import ServiceError

__all__ = [
    "FunctionTool",
    "Tool",
    "ToolArgumentsError",
    "ToolCallAssembler",
    "ToolCallRequest",
    "ToolOutcome",
    "parse_arguments",
    "run_tool",
    "tool_schema",
]


@runtime_checkable
class Tool(Protocol):
    """What the LLM brain needs of a tool."""

    @property
    def name(self) -> str:
        """The function name the model calls (``^[a-zA-Z0-9_-]{1,64}$``)."""
        ...

    @property
    def description(self) -> str:
        """What it does, for the model."""
        ...

    @property
    def parameters(self) -> Mapping[str, Any]:
        """The JSON schema of its arguments (``{"type": "object", "properties": ...}``)."""
        ...

    @property
    def timeout_s(self) -> float | None:
        """How long a call may take; None: the brain's default."""
        ...

    async def call(self, arguments: Mapping[str, Any]) -> Any:
        """Run with the parsed arguments; the result must be JSON-serialisable (or a str)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionTool:
    """A :class:`Tool` made of an async function taking the arguments mapping."""

    name: str
    description: str
    fn: Callable[[Mapping[str, Any]], Awaitable[Any]]
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    timeout_s: float | None = None

    async def call(self, arguments: Mapping[str, Any]) -> Any:
        return await self.fn(arguments)


def tool_schema(tool: Tool) -> dict[str, Any]:
    """The ``tools`` entry of a chat request for ``tool``."""
    return {"type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)}}


class ToolArgumentsError(ServiceError):
    """The model's tool-call arguments are not a JSON object."""


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """One complete tool call from the model."""

    id: str
    name: str
    arguments: str  # the JSON text, as the model wrote it

    def message(self) -> dict[str, Any]:
        """This call as an entry of the assistant message's ``tool_calls``."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


class ToolCallAssembler:
    """Puts streamed tool-call deltas back together, by their ``index``.

    ``add(index, id, name, arguments)`` takes one delta's fields (None where a chunk
    leaves them out); :meth:`calls` returns the complete calls in index order.
    """

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: dict[int, list[str]] = {}  # index -> [id, name, arguments...]

    def __bool__(self) -> bool:
        return bool(self._parts)

    def add(self, index: int, call_id: str | None, name: str | None, arguments: str | None) -> None:
        parts = self._parts.get(index)
        if parts is None:
            parts = self._parts[index] = ["", ""]
        if call_id:
            parts[0] = call_id
        if name:
            parts[1] += name  # some servers split the name too
        if arguments:
            parts.append(arguments)

    def calls(self) -> list[ToolCallRequest]:
        out = []
        for index in sorted(self._parts):
            parts = self._parts[index]
            out.append(ToolCallRequest(parts[0] or f"call_{index}", parts[1], "".join(parts[2:])))
        return out


def parse_arguments(call: ToolCallRequest) -> dict[str, Any]:
    """The arguments of ``call`` as a mapping; :class:`ToolArgumentsError` if they are not one."""
    text = call.arguments.strip() or "{}"
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ToolArgumentsError(f"tool call {call.name!r}: arguments are not valid JSON ({exc}): {text[:80]!r}") \
            from None
    if not isinstance(value, dict):
        raise ToolArgumentsError(f"tool call {call.name!r}: arguments must be a JSON object, got {text[:80]!r}")
    return value


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """How one tool call went: ``content`` goes back to the model."""

    call: ToolCallRequest
    arguments: Mapping[str, Any]
    result: Any = None
    error: str | None = None
    elapsed_ms: float = 0.0

    @property
    def content(self) -> str:
        if self.error is not None:
            return json.dumps({"error": self.error})
        return self.result if isinstance(self.result, str) else json.dumps(self.result, default=str)


async def run_tool(tool: Tool | None, call: ToolCallRequest, arguments: Mapping[str, Any], *, clock: Clock,
                   timeout_s: float) -> ToolOutcome:
    """Run ``call`` on ``tool`` within ``tool.timeout_s`` (else ``timeout_s``) on ``clock``.

    Never raises (except on cancellation, a barge-in): an unknown tool, a timeout or an
    exception become the outcome's ``error``.
    """
    start = clock.now_ns()
    if tool is None:
        return ToolOutcome(call, arguments, error=f"unknown tool {call.name!r}")
    limit = tool.timeout_s if tool.timeout_s is not None else timeout_s
    work = asyncio.ensure_future(tool.call(arguments))
    timer = asyncio.ensure_future(clock.sleep_until(start + int(limit * 1e9)))
    try:
        await asyncio.wait((work, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not work.done():
            work.cancel()
        await asyncio.gather(work, timer, return_exceptions=True)
    elapsed = (clock.now_ns() - start) / 1e6
    if work.cancelled():
        return ToolOutcome(call, arguments, error=f"timed out after {limit:g} s", elapsed_ms=elapsed)
    exc = work.exception()
    if exc is not None:
        return ToolOutcome(call, arguments, error=f"{type(exc).__name__}: {exc}", elapsed_ms=elapsed)
    return ToolOutcome(call, arguments, result=work.result(), elapsed_ms=elapsed)
