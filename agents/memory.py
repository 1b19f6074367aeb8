"""Memory of the agents: short-term (this call) and long-term (the caller, across calls).

Two small interfaces with in-process implementations; the state issue puts them on
Redis (short-term, shared by the workers) and Cosmos/SQLite (long-term). The
orchestrator saves a call's :class:`~agents.engine.AgentState` after every turn
(``ShortTermMemory``), reads the caller's profile when the call starts and appends a
summary of the call when it ends (``LongTermMemory``).

Values are plain JSON-like data (what the engines keep in ``AgentState``), so the
persistent implementations only serialise them.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from .engine import AgentState

__all__ = ["CallMemory", "InProcessLongTerm", "InProcessShortTerm", "LongTermMemory", "ShortTermMemory",
           "StateStore", "StoreShortTerm", "default_short_term", "use_short_term"]


@dataclass(slots=True)
class CallMemory:
    """What short-term memory keeps of one call."""

    call_id: str
    state: dict[str, Any] = field(default_factory=dict)  # the AgentState, as data
    turns: list[dict[str, Any]] = field(default_factory=list)  # {"turn", "agent", "caller", "bot"}
    agents: list[str] = field(default_factory=list)  # the agents in charge, in order


class ShortTermMemory(Protocol):
    """The session: turns, slots and agent assignment of live calls."""

    async def save(self, call_id: str, state: AgentState, turn: dict[str, Any] | None = None) -> None:
        """Store ``state`` (and one more turn, if given) for ``call_id``."""
        ...

    async def load(self, call_id: str) -> CallMemory | None:
        """What is stored for ``call_id`` (a copy), or None."""
        ...

    async def drop(self, call_id: str) -> None:
        """Forget ``call_id`` (the call ended)."""
        ...


class LongTermMemory(Protocol):
    """Callers across calls: their profile and their past calls."""

    async def profile(self, caller_id: str) -> dict[str, Any]:
        """The stored profile of ``caller_id`` (empty if unknown)."""
        ...

    async def remember(self, caller_id: str, profile: dict[str, Any], call: dict[str, Any]) -> None:
        """Merge ``profile`` into the caller's and append ``call`` (a summary) to their past calls."""
        ...

    async def past_calls(self, caller_id: str) -> list[dict[str, Any]]:
        """The summaries of the caller's past calls, oldest first."""
        ...


def state_data(state: AgentState) -> dict[str, Any]:
    """``state`` as plain data (deep copy), what a store keeps."""
    return copy.deepcopy(asdict(state))


class InProcessShortTerm:
    """:class:`ShortTermMemory` in a dict of this worker."""

    def __init__(self) -> None:
        self._calls: dict[str, CallMemory] = {}

    async def save(self, call_id: str, state: AgentState, turn: dict[str, Any] | None = None) -> None:
        memory = self._calls.setdefault(call_id, CallMemory(call_id))
        memory.state = state_data(state)
        if not memory.agents or memory.agents[-1] != state.agent:
            memory.agents.append(state.agent)
        if turn is not None:
            memory.turns.append(dict(turn))

    async def load(self, call_id: str) -> CallMemory | None:
        memory = self._calls.get(call_id)
        return copy.deepcopy(memory) if memory is not None else None

    async def drop(self, call_id: str) -> None:
        self._calls.pop(call_id, None)


@runtime_checkable
class StateStore(Protocol):
    """A store of call states below the agents' layer (the live-state side-car,
    ``processors.sidecars.live.LiveState``): plain data in, plain data out."""

    async def save_state(self, call_id: str, state: AgentState, turn: dict[str, Any] | None = None) -> None: ...

    async def load_state(self, call_id: str) -> dict[str, Any] | None: ...

    async def drop_state(self, call_id: str) -> None: ...


class StoreShortTerm:
    """:class:`ShortTermMemory` on a :class:`StateStore` (the store's data made a :class:`CallMemory`)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def save(self, call_id: str, state: AgentState, turn: dict[str, Any] | None = None) -> None:
        await self.store.save_state(call_id, state, turn)

    async def load(self, call_id: str) -> CallMemory | None:
        data = await self.store.load_state(call_id)
        if data is None:
            return None
        return CallMemory(call_id, state=data.get("state", {}), turns=list(data.get("turns", [])),
                          agents=list(data.get("agents", [])))

    async def drop(self, call_id: str) -> None:
        await self.store.drop_state(call_id)


_worker_short_term: ShortTermMemory | None = None


def use_short_term(memory: ShortTermMemory | None) -> None:
    """Make ``memory`` this worker's short-term memory: orchestrators built from now on
    without one of their own use it (the live-state store on Redis, shared by the workers).
    ``None``: back to one in-process memory per orchestrator."""
    global _worker_short_term
    _worker_short_term = memory


def default_short_term() -> ShortTermMemory:
    """The worker's short-term memory (:func:`use_short_term`), else a new in-process one."""
    return _worker_short_term if _worker_short_term is not None else InProcessShortTerm()


class InProcessLongTerm:
    """:class:`LongTermMemory` in dicts of this worker."""

    def __init__(self) -> None:
        self._profiles: dict[str, dict[str, Any]] = {}
        self._calls: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)

    async def profile(self, caller_id: str) -> dict[str, Any]:
        return copy.deepcopy(self._profiles.get(caller_id, {}))

    async def remember(self, caller_id: str, profile: dict[str, Any], call: dict[str, Any]) -> None:
        self._profiles.setdefault(caller_id, {}).update(copy.deepcopy(profile))
        self._calls[caller_id].append(copy.deepcopy(call))

    async def past_calls(self, caller_id: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self._calls.get(caller_id, []))
