"""LLMEngine: an agent answered by a model, on the orchestrator's router (H8's machinery).

Per turn the request is the agent's rendered prompt as the system message, then the
call's history as the caller heard it (from the turn the agent's context starts at:
a handoff without shared context starts it afresh). The tools offered are the agent's
(from the tool store, arguments checked before they run) plus one handoff tool per
target in its ``handoffs`` (``handoff_to_<target>``, described by when to use it).

Each request goes through the LLM brain's :meth:`~processors.llm.llm_node.LLMBrain.ask_model`
(the orchestrator is an LLM brain): tokens leave as they arrive; tool calls are run (through
the orchestrator's :class:`~agents.tools.runner.CallTools`) and their results sent back,
at most ``max_tool_rounds`` times, the last round offering no tools. A handoff tool ends
the turn for this agent at once with a :class:`~agents.engine.Reply` naming the target
(the orchestrator switches agents and the new one answers in the same turn).
Arguments that are not a JSON object are sent back to the model as a tool error, so it
can correct itself; an empty reply raises :class:`~processors.llm.llm_node.EmptyReply`
(the orchestrator's apology follows).

:meth:`LLMEngine.enter` speaks the agent's greeting and, when the caller's last words are
still unanswered (a handoff), the agent's answer to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from processors.llm.llm_node import EmptyReply, ModelRequest
from processors.llm.router import TurnFeatures
from processors.llm.tools import ToolArgumentsError, ToolCallRequest, parse_arguments, tool_schema

from .engine import AgentState, Reply, ToolRunner, TurnInput
from .spec import AgentSpec

if TYPE_CHECKING:
    from .orchestrator import Orchestrator

__all__ = ["HANDOFF_PREFIX", "LLMEngine"]

HANDOFF_PREFIX = "handoff_to_"


def handoff_schema(target: str, when: str) -> dict[str, Any]:
    """The ``tools`` entry of the handoff tool to ``target``."""
    return {"type": "function", "function": {
        "name": f"{HANDOFF_PREFIX}{target}",
        "description": f"Hand the call to the {target} agent: {when or 'when the caller needs it'}.",
        "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}, "additionalProperties": False},
    }}


class LLMEngine:
    """The model-backed :class:`~agents.engine.AgentEngine` of one orchestrator (one call)."""

    def __init__(self, host: Orchestrator, *, announce_handoffs: bool = True) -> None:
        self.host = host
        self.announce_handoffs = announce_handoffs

    async def respond(self, agent: AgentSpec, turn: TurnInput, state: AgentState,
                      tools: ToolRunner) -> AsyncIterator[str | Reply]:
        async for item in self._loop(agent, state, tools, turn.turn, len(turn.text)):
            yield item

    async def enter(self, agent: AgentSpec, state: AgentState, tools: ToolRunner) -> AsyncIterator[str | Reply]:
        if agent.greeting:
            yield agent.greeting
        history = self.host.context(state)
        if history and history[-1]["role"] == "user":
            gap = bool(agent.greeting)
            async for item in self._loop(agent, state, tools, self.host.live_turn, len(history[-1]["content"])):
                if gap and isinstance(item, str) and item:
                    item = item if item[0].isspace() else " " + item
                    gap = False
                yield item

    def _schemas(self, agent: AgentSpec) -> list[dict[str, Any]]:
        out = []
        for name in agent.tools:
            tool = self.host.store.get(name)
            if tool is not None:
                out.append(tool_schema(tool))
        out += [handoff_schema(target, when) for target, when in agent.handoffs.items()]
        return out

    @staticmethod
    async def _run(agent: AgentSpec, call: ToolCallRequest, tools: ToolRunner) -> Any:
        """One call of the model's: bad JSON and tools the agent does not have go back as errors."""
        try:
            arguments: Mapping[str, Any] = parse_arguments(call)
        except ToolArgumentsError as exc:
            return {"error": str(exc)}
        if call.name not in agent.tools:
            return {"error": f"unknown tool {call.name!r} (this agent's tools: {', '.join(agent.tools) or 'none'})"}
        return await tools.call(call.name, arguments)

    async def _loop(self, agent: AgentSpec, state: AgentState, tools: ToolRunner, turn: int,
                    chars: int) -> AsyncIterator[str | Reply]:
        host = self.host
        settings = host.settings
        schemas = self._schemas(agent)
        messages: list[dict[str, Any]] = [{"role": "system", "content": host.system_prompt(agent, state)},
                                          *host.context(state)]
        features = TurnFeatures(agent=agent.name, intent=str(state.memory.get("intent", "")), tools=bool(schemas),
                                chars=chars)
        route = (agent.route, f"agent {agent.name}'s route") if agent.route else None
        spoken = False
        ran: list[dict[str, Any]] = []
        for round_ in range(settings.max_tool_rounds + 1):
            offered = schemas if round_ < settings.max_tool_rounds else []
            request = ModelRequest()
            async with contextlib.aclosing(host.ask_model(request, turn, features, messages, offered,
                                                          route=route)) as pieces:
                async for piece in pieces:
                    yield piece
            spoken = spoken or bool(request.said)
            calls = request.calls
            if not calls:
                if not spoken:
                    raise EmptyReply(f"deployment {request.deployment!r} answered with no text and no tool call")
                if ran:
                    yield Reply(tool_calls=ran)
                return
            messages.append(request.assistant_message())
            for call in calls:
                if call.name.startswith(HANDOFF_PREFIX):
                    target = call.name[len(HANDOFF_PREFIX):]
                    yield Reply(handoff=target, announce=self.announce_handoffs, tool_calls=ran)
                    return
            work = asyncio.ensure_future(asyncio.gather(*(self._run(agent, call, tools) for call in calls)))
            try:
                values: list[Any] = await work
            finally:
                if not work.done():
                    work.cancel()
                    await asyncio.gather(work, return_exceptions=True)
            for call, value in zip(calls, values, strict=True):
                ran.append({"name": call.name, "arguments": call.arguments, "result": value})
                messages.append({"role": "tool", "tool_call_id": call.id,
                                 "content": value if isinstance(value, str) else json.dumps(value, default=str)})
        raise EmptyReply("unreachable: the last round offers no tools")  # pragma: no cover
