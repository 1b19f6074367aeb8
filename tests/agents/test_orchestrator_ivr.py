"""The orchestrator on a deterministic engine (a stand-in for the IVR engine): the entry
agent greets, handoffs announced and silent with shared context, the new agent answering
in the same turn, call actions, intents, handoff loops, memory."""

from __future__ import annotations

from pathlib import Path

from tests.agents.helpers import CLAIMS, text_call


async def test_handoff_auth_to_fnol_shares_context_and_fnol_answers_in_the_same_turn(tmp_path: Path) -> None:
    CLAIMS.clear()
    report = await text_call(tmp_path, ["It is P-100", "I had a crash on Main Street"])
    greeting, verify, claim = report["turns"]
    assert greeting["bot_text"] == "Welcome to Contoso. Please say your policy number."
    assert greeting["agent"] == "auth" and greeting["handoffs"] == []
    assert verify["bot_text"] == ("Thank you Jane Doe, you are verified. I can help you file a claim. "
                                  "Tell me what happened, policy P-100.")
    assert verify["agent"] == "fnol"
    assert verify["handoffs"] == [{"from": "auth", "to": "fnol", "reason": "handoff from auth", "announced": True}]
    assert verify["tool_calls"] == [{"name": "lookup_policy", "arguments": {"policy_number": "P-100"},
                                     "result": {"policy_number": "P-100", "holder": "Jane Doe",
                                                "vehicle": "blue Golf"}}]
    assert claim["bot_text"] == "Your claim number is CL-0001." and claim["agent"] == "fnol"
    assert CLAIMS == [{"policy_number": "P-100", "description": "I had a crash on Main Street", "injuries": False}]
    assert report["errors"] == []


async def test_a_silent_handoff_lets_the_new_agent_answer_the_same_words(tmp_path: Path) -> None:
    report = await text_call(tmp_path, ["quiet P-7"])
    turn = report["turns"][1]
    # No greeting: fnol answers "quiet P-7" itself (its fallback), policy slot shared.
    assert turn["bot_text"] == "Please describe the accident."
    assert turn["handoffs"] == [{"from": "auth", "to": "fnol", "reason": "handoff from auth", "announced": False}]


async def test_a_transfer_tool_becomes_a_call_action_in_the_report(tmp_path: Path) -> None:
    report = await text_call(tmp_path, ["Get me a human please"])
    turn = report["turns"][1]
    assert turn["bot_text"] == "Transferring you now."
    assert turn["action"] == {"action": "transfer", "reason": "caller asked", "agent": "auth"}


async def test_an_intent_routes_once_the_entry_agent_is_done(tmp_path: Path) -> None:
    report = await text_call(tmp_path, ["What are your opening hours", "P-1", "What are your opening hours"])
    before, _, after = report["turns"][1:]
    # Before verification the intent is only remembered; auth keeps the call.
    assert before["agent"] == "auth" and before["bot_text"] == "Sorry, what is your policy number?"
    assert after["agent"] == "support"
    assert after["handoffs"] == [{"from": "fnol", "to": "support", "reason": "intent question", "announced": True}]
    assert after["bot_text"] == "Support here."


async def test_a_handoff_loop_in_one_turn_is_an_error_and_the_caller_hears_the_apology(tmp_path: Path) -> None:
    report = await text_call(tmp_path, ["P-1", "loop"])
    turn = report["turns"][2]
    assert [h["to"] for h in turn["handoffs"]] == ["support"]
    assert turn["bot_text"].endswith("Sorry, something went wrong on my side. Could you say that again?")
    assert any("handoff loop in turn" in e and "support -> fnol" in e for e in report["errors"])
