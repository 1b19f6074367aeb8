"""A call resumed by another worker: the orchestrator finds the call's state in short-term
memory when it starts (the media reconnected to this worker) and goes on from it: the same
agent and slots, the conversation so far, no second greeting, turn ids after the last one."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from agents.engine import AgentState
from agents.memory import CallMemory, InProcessShortTerm, use_short_term
from tests.agents.helpers import CLAIMS, text_call


class Stored:
    """Short-term memory holding one call's state, whatever the new call's id (the test
    cannot know it): what the Redis store answers the worker that takes a call over."""

    def __init__(self, memory: CallMemory) -> None:
        self.memory = memory
        self.saved: list[dict[str, Any]] = []

    async def save(self, call_id: str, state: AgentState, turn: dict[str, Any] | None = None) -> None:
        self.saved.append({"agent": state.agent, "slots": dict(state.slots), "turn": turn})

    async def load(self, call_id: str) -> CallMemory | None:
        return copy.deepcopy(self.memory)

    async def drop(self, call_id: str) -> None:
        return None


async def test_the_second_half_of_a_call_goes_on_where_the_first_stopped(tmp_path: Path) -> None:
    first = InProcessShortTerm()
    use_short_term(first)
    try:
        report = await text_call(tmp_path, ["It is P-100"])
        assert [t["agent"] for t in report["turns"]] == ["auth", "fnol"]
        (memory,) = first._calls.values()
        assert memory.state["agent"] == "fnol" and memory.state["slots"]["policy_number"] == "P-100"
        assert memory.turns == [{"turn": 2, "agent": "fnol", "caller": "It is P-100", "bot": (
            "Thank you Jane Doe, you are verified. I can help you file a claim. Tell me what happened, policy P-100.")}]

        CLAIMS.clear()
        resumed = Stored(memory)
        use_short_term(resumed)
        report = await text_call(tmp_path, ["I had a crash on Main Street"])
    finally:
        use_short_term(None)
    (turn,) = report["turns"]  # no greeting: the caller's words are the first turn
    assert turn["agent"] == "fnol" and turn["bot_text"] == "Your claim number is CL-0001."
    assert CLAIMS == [{"policy_number": "P-100", "description": "I had a crash on Main Street", "injuries": False}]
    assert resumed.saved[-1]["turn"]["turn"] == 3  # after the first half's turn 2
    assert resumed.saved[-1]["slots"]["policy_number"] == "P-100"


async def test_a_stored_state_of_an_agent_the_scenario_lacks_is_not_resumed(tmp_path: Path) -> None:
    use_short_term(Stored(CallMemory("x", state={"agent": "nobody", "slots": {"policy_number": "P-9"}})))
    try:
        report = await text_call(tmp_path, ["It is P-100"])
    finally:
        use_short_term(None)
    assert report["turns"][0]["bot_text"] == "Welcome to Contoso. Please say your policy number."
