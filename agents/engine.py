"""The agent engine interface: what the orchestrator asks of whatever produces an agent's words.

An :class:`AgentEngine` runs one agent (an :class:`~agents.spec.AgentSpec`) for one
turn: :meth:`AgentEngine.respond` answers the caller's :class:`TurnInput`,
:meth:`AgentEngine.enter` is what the agent says when it takes over. Both stream text
pieces (``str``), then at most one :class:`Reply` that closes the turn: a handoff to
another agent, a call action (``"transfer"`` to a human, ``"hangup"``) and the tools it
ran. Pieces spoken before the ``Reply`` are heard as they come; a ``Reply.text`` is
spoken after them.

Two engines implement it: the deterministic IVR engine (``agents.ivr``, the embedded
default with no model) and the LLM engine (the orchestrator's, on the model router).
Both keep the call's state in the :class:`AgentState` they are given, never in
themselves, so one engine object serves every call, and an agent handed a call finds
the slots the previous one filled (when the handoff shares context).

Tools run through a :class:`ToolRunner` (the orchestrator's, on the tool store): it
checks the arguments against the tool's schema, runs it within its time limit on the
call's clock and records the call; a failure comes back as ``{"error": ...}``, never as
an exception.

In a Protocol an async generator is declared with ``def ... -> AsyncIterator[...]``;
implementations write ``async def respond(...)`` with ``yield``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .spec import AgentSpec

__all__ = ["AgentEngine", "AgentState", "Reply", "ToolRunner", "TurnInput"]


@dataclass(slots=True)
class TurnInput:
    """One caller turn: the final transcript (``""`` if none), the DTMF digits pressed, its turn id."""

    text: str
    dtmf: str = ""
    turn: int = 0


@dataclass(slots=True)
class AgentState:
    """The call's state an engine reads and updates: shared across the call's agents.

    ``agent`` is the agent in charge; ``slots`` the values collected (``date_of_birth``,
    ``policy_number``, ...); ``memory`` an engine's own bookkeeping (the IVR flow's current
    step, pending confirmations); ``caller`` what is known of the caller (their verified
    profile); ``failures`` counts per kind (``"auth"``: failed verifications, ...).
    """

    agent: str
    slots: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    caller: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Reply:
    """The end of an engine's turn (at most one per turn, after the text pieces).

    ``text`` is spoken after the streamed pieces; ``handoff`` names the agent taking the
    call (``announce``: its greeting is spoken; else it answers directly); ``action`` is a
    call action (``"transfer"`` to a human, ``"hangup"``); ``tool_calls`` lists the tools
    run this turn as ``{"name", "arguments", "result"}``; ``share_context: False`` starts
    the new agent of a handoff with no slots and no history.
    """

    text: str = ""
    handoff: str | None = None
    announce: bool = True
    action: str | None = None  # "transfer" | "hangup"
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    share_context: bool = True


class ToolRunner(Protocol):
    """Runs the tool store's tools for an engine (arguments checked, time-limited, recorded)."""

    async def call(self, name: str, arguments: Mapping[str, Any]) -> Any:
        """The result of tool ``name`` (JSON-like), or ``{"error": "..."}`` if it failed."""
        ...


class AgentEngine(Protocol):
    """Produces an agent's words for a turn (see module docstring)."""

    def respond(self, agent: AgentSpec, turn: TurnInput, state: AgentState,
                tools: ToolRunner) -> AsyncIterator[str | Reply]:
        """Answer ``turn``: text pieces, then at most one :class:`Reply`."""
        ...

    def enter(self, agent: AgentSpec, state: AgentState, tools: ToolRunner) -> AsyncIterator[str | Reply]:
        """What ``agent`` says when it takes the call (its greeting, its flow's first prompt)."""
        ...
