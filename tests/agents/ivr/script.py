"""Scripted conversations on the IVR engine, driven through AgentEngine.respond/enter directly.

:class:`Conversation` plays the orchestrator's small part a test needs (and no more): it
follows handoffs — announced ones enter the new agent, silent ones give it the same turn —
and records every piece said, tool run and call action. Tools run for real over
:data:`agents.tools.domain.DOMAIN_TOOLS` (through :class:`DirectTools`, which also insists
the agent lists the tool, as the tool store's runner does).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agents.engine import AgentState, Reply, TurnInput
from agents.ivr import IVREngine
from agents.spec import AgentSpec, parse_agent
from agents.tools.domain import DOMAIN_TOOLS

AGENTS = Path(__file__).resolve().parents[3] / "config" / "agents"
SCENARIOS = Path(__file__).resolve().parents[3] / "config" / "scenarios"
_FUNCTIONS = {fn.__name__: fn for fn in DOMAIN_TOOLS}


def _merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) \
            else value
    return out


def load_agent(name: str) -> AgentSpec:
    """A shipped agent, merged over base.yaml as the registry does."""
    base = yaml.safe_load((AGENTS / "base.yaml").read_text())
    data = _merge(base, yaml.safe_load((AGENTS / f"{name}.yaml").read_text()))
    return parse_agent(data, str(AGENTS / f"{name}.yaml"), {}, stem=name)


def agent_from(flow: Mapping[str, Any], *, name: str = "test", tools: tuple[str, ...] = (),
               greeting: str = "") -> AgentSpec:
    """An agent made of an inline flow."""
    return AgentSpec(name=name, flow=dict(flow), tools=tools, greeting=greeting, file=f"{name}.yaml")


class DirectTools:
    """A ToolRunner calling the domain functions; a tool the agent does not list is an error."""

    def __init__(self) -> None:
        self.agent: AgentSpec | None = None
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, name: str, arguments: Mapping[str, Any]) -> Any:
        self.calls.append((name, dict(arguments)))
        if self.agent is not None and name not in self.agent.tools:
            return {"error": f"agent {self.agent.name} has no tool {name}"}
        fn = _FUNCTIONS.get(name)
        if fn is None:
            return {"error": f"no tool {name}"}
        try:
            inspect.signature(fn).bind(**arguments)
        except TypeError as exc:
            return {"error": str(exc)}
        return await fn(**arguments)


@dataclass
class Said:
    """One turn's outcome."""

    text: str
    agent: str  # in charge at the end of the turn
    handoffs: list[str] = field(default_factory=list)
    action: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


class Conversation:
    """A call on the IVR engine (see module docstring)."""

    def __init__(self, entry: str, *, engine: IVREngine, agents: Mapping[str, AgentSpec] | None = None) -> None:
        self.engine = engine
        self.agents = dict(agents or {})
        self.state = AgentState(agent=entry)
        self.tools = DirectTools()
        self.turn = 0
        self.ended: str | None = None

    def agent(self, name: str) -> AgentSpec:
        if name not in self.agents:
            self.agents[name] = load_agent(name)
        return self.agents[name]

    async def start(self) -> Said:
        """The entry agent takes the call."""
        said = Said("", self.state.agent)
        await self._collect(self.engine.enter(self._current(), self.state, self.tools), said, None)
        return said

    async def say(self, text: str = "", dtmf: str = "") -> Said:
        """One caller turn."""
        assert self.ended is None, f"the call already ended ({self.ended})"
        self.turn += 1
        turn = TurnInput(text=text, dtmf=dtmf, turn=self.turn)
        said = Said("", self.state.agent)
        await self._collect(self.engine.respond(self._current(), turn, self.state, self.tools), said, turn)
        return said

    def _current(self) -> AgentSpec:
        spec = self.agent(self.state.agent)
        self.tools.agent = spec
        return spec

    async def _collect(self, pieces: AsyncIterator[str | Reply], said: Said, turn: TurnInput | None) -> None:
        for _ in range(5):  # at most this many handoffs in one turn
            reply = None
            texts = []
            async for piece in pieces:
                if isinstance(piece, Reply):
                    assert reply is None, "more than one Reply in a turn"
                    reply = piece
                else:
                    assert reply is None, "text after the Reply"
                    texts.append(piece)
            # pieces carry their own spaces; one agent's words and the next's are separate sentences
            said.text = " ".join(t for t in [said.text, "".join(texts), reply.text if reply else ""] if t)
            if reply is None:
                return
            said.tool_calls += reply.tool_calls
            if reply.action:
                said.action = self.ended = reply.action
                return
            if reply.handoff is None:
                return
            said.handoffs.append(reply.handoff)
            self.state.agent = said.agent = reply.handoff
            if reply.announce or turn is None:
                pieces = self.engine.enter(self._current(), self.state, self.tools)
            else:
                pieces = self.engine.respond(self._current(), turn, self.state, self.tools)
        raise AssertionError("handoff loop")
