"""IVREngine behaviours on small inline flows: re-prompts and their limit, confirmations, DTMF and
global intents, entry without enter(), tool errors, shared slots, loops and agents without a flow."""

from __future__ import annotations

from typing import Any

from agents.ivr import APOLOGY, IVREngine

from .script import Conversation, agent_from

TOOLS = ("transfer_to_human", "hang_up", "lookup_policy")


def flow(**steps: Any) -> dict[str, Any]:
    return {
        "start": "ask_dob",
        "on_fail": "give_up",
        "intents": {
            "human": {"phrases": ["a person"], "dtmf": "0"},
            "claim": {"phrases": ["claim"], "dtmf": "1"},
            "question": {"patterns": [r"\bhow (do|does)\b"], "dtmf": ["2", "22#"]},
        },
        "global": {"human": "to_human"},
        "steps": {
            "ask_dob": {"ask": "Your date of birth?", "slot": "dob", "type": "date", "options": {"past": True},
                        "confirm": "I have {dob|date}. Right?", "max_attempts": 2, "next": "menu"},
            "menu": {"listen": "Claim or question?", "intents": {"claim": "claim", "question": "question"},
                     "reprompt": "Say claim, or press 1."},
            "claim": {"say": "Claim it is, {dob|date}.", "handoff": "fnol"},
            "question": {"say": "Question it is.", "handoff": "support", "announce": False},
            "to_human": {"say": "Putting you through.", "action": "transfer", "reason": "asked"},
            "give_up": {"say": "Let me get someone.", "action": "transfer", "reason": "not understood"},
            **steps,
        },
    }


def call(engine: IVREngine, spec: dict[str, Any] | None = None) -> Conversation:
    agent = agent_from(spec or flow(), tools=TOOLS)
    return Conversation("test", engine=engine, agents={"test": agent})


async def test_an_answer_that_is_no_date_is_reprompted_then_fails_after_max_attempts(engine: IVREngine) -> None:
    c = call(engine)
    assert (await c.start()).text == "Your date of birth?"
    said = await c.say("banana")
    assert said.text == "Sorry, I didn't catch that. Your date of birth?" and said.action is None
    assert c.state.memory["ivr"]["test"] == {"step": "ask_dob", "attempts": 1}
    said = await c.say("purple")
    assert said.text == "Let me get someone." and said.action == "transfer"
    assert said.tool_calls == [{"name": "transfer_to_human", "arguments": {"reason": "not understood"},
                                "result": {"action": "transfer", "reason": "not understood"}}]
    assert "test" not in c.state.memory["ivr"]


async def test_a_turn_with_nothing_recognised_is_reprompted_and_counted(engine: IVREngine) -> None:
    c = call(engine)
    await c.start()
    assert (await c.say("")).text == "Sorry, I didn't catch that. Your date of birth?"
    assert c.state.memory["ivr"]["test"]["attempts"] == 1


async def test_a_date_in_the_future_is_not_a_date_of_birth(engine: IVREngine) -> None:
    c = call(engine)
    await c.start()
    assert (await c.say("December first 2030")).text == "Sorry, I didn't catch that. Your date of birth?"


async def test_a_confirmation_yes_fills_the_slot_no_asks_again_and_a_new_value_is_confirmed(
        engine: IVREngine) -> None:
    c = call(engine)
    await c.start()
    assert (await c.say("3/3/1980")).text == "I have March 3, 1980. Right?"
    assert "dob" not in c.state.slots
    assert (await c.say("No, it's March fourth, nineteen eighty")).text == "I have March 4, 1980. Right?"
    assert (await c.say("no")).text == "Sorry about that. Your date of birth?"
    assert (await c.say("the 5th of March 1980")).text == "I have March 5, 1980. Right?"
    assert (await c.say("yes that's right")).text == "Claim or question?"
    assert c.state.slots == {"dob": "1980-03-05"}


async def test_dtmf_chooses_intents_and_repromts_use_the_step_reprompt(engine: IVREngine) -> None:
    c = call(engine)
    await c.start()
    await c.say("1980-03-03")
    await c.say(dtmf="1")  # a key is yes
    assert (await c.say(dtmf="9")).text == "Say claim, or press 1."
    said = await c.say(dtmf="22#")
    # support is not announced: it hears the same turn (keys only: no question in it, so it asks)
    assert said.text == "Question it is. What's your question?" and said.handoffs == ["support"]


async def test_a_handoff_names_the_target_and_whether_it_is_announced(engine: IVREngine) -> None:
    c = call(engine)
    await c.start()
    await c.say("1980-03-03")
    await c.say("yes")
    agent = c.agents["test"]
    pieces = [p async for p in engine.respond(agent, _turn("I want to file a claim"), c.state, c.tools)]
    assert pieces[0] == "Claim it is, March 3, 1980."
    reply = pieces[-1]
    assert (reply.handoff, reply.announce, reply.action, reply.text) == ("fnol", True, None, "")


async def test_a_global_intent_is_heard_at_any_step_by_words_or_keys(engine: IVREngine) -> None:
    c = call(engine)
    await c.start()
    said = await c.say("can I talk to a person please")
    assert said.text == "Putting you through." and said.action == "transfer"
    c = call(engine)
    await c.start()
    await c.say("March 3 1980")
    assert (await c.say(dtmf="0")).action == "transfer"


async def test_an_agent_reached_without_enter_takes_a_fitting_answer_or_says_its_prompts(
        engine: IVREngine) -> None:
    c = call(engine)
    said = await c.say("March third nineteen eighty")  # the caller spoke first: taken as the answer
    assert said.text == "I have March 3, 1980. Right?"
    c = call(engine)
    said = await c.say("hello?")  # does not fit: the prompt, and nothing counted
    assert said.text == "Your date of birth?"
    assert c.state.memory["ivr"]["test"] == {"step": "ask_dob", "attempts": 0}


async def test_a_slot_filled_by_an_earlier_agent_is_not_asked_again(engine: IVREngine) -> None:
    c = call(engine)
    c.state.slots["dob"] = "1980-03-03"
    assert (await c.start()).text == "Claim or question?"


async def test_a_tool_error_goes_to_on_error_and_results_fill_slots(engine: IVREngine) -> None:
    spec = flow(
        ask_dob={"tool": "lookup_policy", "args": {"policy_number": "{policy}"}, "result": "policy",
                 "on_error": "oops", "next": "found"},
        found={"branch": [{"if": {"slot": "policy.found", "equals": True}, "goto": "yes"}], "else": "no"},
        yes={"say": "Found {policy.vehicle}.", "next": "menu"},
        no={"say": "Not found.", "next": "menu"},
        oops={"say": "The policy service failed.", "next": "menu"})
    c = call(engine, spec)
    c.state.slots["policy"] = "POL-12345"
    assert (await c.start()).text == "Found 2019 Toyota Corolla. Claim or question?"
    c = call(engine, spec)
    c.state.slots["policy"] = 12345  # not a string: the tool answers with an error
    c.tools.agent = None
    said = await c.start()
    assert said.tool_calls[0]["name"] == "lookup_policy"


async def test_a_tool_that_raises_is_an_error_result_not_a_dead_turn(engine: IVREngine) -> None:
    class Raising:
        async def call(self, name: str, arguments: Any) -> Any:
            raise RuntimeError("boom")

    spec = flow(ask_dob={"tool": "lookup_policy", "args": {}, "result": "r", "on_error": "oops", "next": "menu"},
                oops={"say": "Sorry, the service failed.", "next": "menu"})
    agent = agent_from(spec, tools=TOOLS)
    pieces = [p async for p in engine.enter(agent, _state(), Raising())]
    assert pieces[:2] == ["Sorry, the service failed.", " Claim or question?"]  # one stream: spaces included
    assert pieces[2].tool_calls == [{"name": "lookup_policy", "arguments": {}, "result": {"error": "RuntimeError: boom"}}]


async def test_a_flow_looping_without_waiting_apologises_and_transfers(engine: IVREngine) -> None:
    spec = flow(ask_dob={"count": "loops", "next": "again"}, again={"say": "x", "next": "ask_dob"})
    c = call(engine, spec)
    said = await c.start()
    assert said.text.endswith(APOLOGY) and said.action == "transfer"
    assert c.state.failures["loops"] == 25  # 50 steps: half of them count


async def test_an_agent_without_a_valid_flow_apologises_and_transfers(engine: IVREngine) -> None:
    c = call(engine, {"start": "nowhere", "steps": {"a": {"say": "hi"}}})
    said = await c.start()
    assert said.text == APOLOGY and said.action == "transfer"
    c = Conversation("test", engine=engine, agents={"test": agent_from({}, tools=TOOLS, greeting="Hi.")})
    said = await c.say("hello")
    assert said.text == APOLOGY and said.action == "transfer"


async def test_a_changed_flow_is_compiled_again_and_a_call_whose_step_vanished_restarts(engine: IVREngine) -> None:
    c = call(engine)
    await c.start()
    old = c.agents["test"]
    assert engine.flow(old) is engine.flow(old)  # cached
    new_flow = flow()
    new_flow["start"] = "menu"
    del new_flow["steps"]["ask_dob"]
    c.agents["test"] = agent_from(new_flow, tools=TOOLS)
    said = await c.say("I have a claim")  # waits on ask_dob, which no longer exists: entered afresh
    assert said.text == "Claim it is, . I can help you file a claim. What is your policy number?"
    assert said.handoffs == ["fnol"]


def _turn(text: str) -> Any:
    from agents.engine import TurnInput
    return TurnInput(text=text)


def _state() -> Any:
    from agents.engine import AgentState
    return AgentState(agent="test")
