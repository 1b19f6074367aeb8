"""The shipped agents on the IVR engine, in scripted conversations over the real domain tools."""

from __future__ import annotations

import json

import pytest

from agents.ivr import IVREngine
from agents.tools.domain import Domain

from .script import Conversation


async def verify(call: Conversation, name: str = "Jane Doe", dob: str = "March third, nineteen eighty",
                 number: str = "P O L one two three four five") -> str:
    """Answer the three auth questions (confirming the date); the text after the number."""
    await call.say(f"Hello, this is {name}.")
    confirm = await call.say(dob)
    assert confirm.text.startswith("I have your date of birth as "), confirm.text
    await call.say("Yes, that's right.")
    return (await call.say(number)).text


async def test_auth_fails_then_succeeds(domain: Domain, engine: IVREngine) -> None:
    call = Conversation("auth", engine=engine)
    opening = await call.start()
    assert opening.text == ("Thank you for calling. Before we go on, I need to verify your identity. "
                            "To get started, may I have your full name?")
    said = await verify(call, dob="March fourth, nineteen eighty")
    assert said == ("Sorry, I couldn't match those details to our records. Let's try again. "
                    "To get started, may I have your full name?")
    assert call.state.failures == {"auth": 1}
    assert "name" not in call.state.slots and "date_of_birth" not in call.state.slots
    said = await verify(call)
    assert said == ("Thank you, Jane. You're verified. How can I help you today? You can report an accident, "
                    "book an appointment, or ask a question.")
    assert call.state.caller == {"id": "CUST-1001", "name": "Jane Doe", "first_name": "Jane",
                                 "policy_number": "POL-12345", "member_number": "MEM-24680"}
    assert call.state.slots["auth"]["verified"] is True


async def test_three_failed_verifications_transfer_to_a_person(domain: Domain, engine: IVREngine) -> None:
    call = Conversation("auth", engine=engine)
    await call.start()
    for attempt in (1, 2):
        said = await verify(call, number="P O L nine nine nine nine nine")
        assert said.startswith("Sorry, I couldn't match those details"), said
        assert call.state.failures["auth"] == attempt
    await call.say("Jane Doe")
    await call.say("3/3/1980")
    await call.say("yes")
    said = await call.say("POL-99999")
    assert said.text == ("I'm sorry, I still can't verify your identity. Let me transfer you to a colleague "
                         "who can help.")
    assert said.action == "transfer"
    assert [c["name"] for c in said.tool_calls] == ["verify_caller", "transfer_to_human"]
    assert said.tool_calls[0]["arguments"] == {"name": "Jane Doe", "date_of_birth": "1980-03-03",
                                               "policy_number": "POL-99999"}
    assert said.tool_calls[1]["result"] == {"action": "transfer", "reason": "identity verification failed three times"}
    assert call.state.failures == {"auth": 3}


async def test_auth_hands_to_fnol_which_files_exactly_what_the_caller_said(domain: Domain,
                                                                           engine: IVREngine) -> None:
    call = Conversation("auth", engine=engine)
    await call.start()
    await verify(call)
    said = await call.say("I'd like to report an accident.")
    assert said.handoffs == ["fnol"] and said.agent == "fnol"
    # the policy number is shared: FNOL looks it up instead of asking again
    assert said.text == "I can help you file a claim. When did the incident happen?"
    assert [c["name"] for c in said.tool_calls] == ["lookup_policy"]
    assert (await call.say("It happened yesterday.")).text == "That was on November 25, 2026. Is that right?"
    assert (await call.say("Yes.")).text == "Where did it happen?"
    await call.say("At the corner of Main Street and Fifth Avenue.")
    await call.say("Another car ran a red light and hit my passenger door.")
    said = await call.say("No, nobody was hurt.")
    assert said.text == "Which vehicle was involved? Your policy covers a 2019 Toyota Corolla."
    said = await call.say("My 2019 Toyota Corolla.")
    # the caller's own words are read back, without doubling the full stops they came with
    assert said.text == ("Let me read that back. Date: November 25, 2026. Place: At the corner of Main Street and "
                         "Fifth Avenue. What happened: Another car ran a red light and hit my passenger door. "
                         "Anyone injured: no. Vehicle: My 2019 Toyota Corolla. Shall I file the claim?")
    said = await call.say("Yes, please file it.")
    assert said.text == ("Filing your claim now. Your claim is filed. Your claim number is C L M, 1 0 0 0 0 1. "
                         "An adjuster will contact you within one business day. "
                         "Is there anything else I can help you with?")
    stored = [json.loads(line) for line in domain.claims.path.read_text().splitlines()]
    assert len(stored) == 1
    record = dict(stored[0])
    assert record.pop("filed_at")
    assert record == {"claim_number": "CLM-100001", "policy_number": "POL-12345", "incident_date": "2026-11-25",
                      "location": "At the corner of Main Street and Fifth Avenue.",
                      "description": "Another car ran a red light and hit my passenger door.",
                      "injuries": False, "vehicle": "My 2019 Toyota Corolla."}
    said = await call.say("No, that's all. Thank you.")
    assert said.text == "Thank you for calling. Goodbye." and said.action == "hangup"


async def test_an_emergency_in_healthcare_is_escalated_at_once(domain: Domain, engine: IVREngine) -> None:
    call = Conversation("healthcare", engine=engine)
    opening = await call.start()
    assert opening.text == "I can help you book an appointment at the clinic. May I have the patient's full name?"
    # at the name question, before any symptom is asked for
    said = await call.say("My husband has chest pain and can't breathe!")
    assert said.action == "transfer"
    assert said.text.startswith("This sounds like it could be an emergency.")
    assert [c["name"] for c in said.tool_calls] == ["transfer_to_human"]


async def test_an_emergency_found_by_triage_is_escalated(domain: Domain, engine: IVREngine) -> None:
    call = Conversation("healthcare", engine=engine)
    await call.start()
    await call.say("Jane Doe")
    said = await call.say("My face is drooping on one side")
    assert said.action == "transfer"
    assert [c["name"] for c in said.tool_calls] == ["triage", "transfer_to_human"]
    assert said.tool_calls[0]["result"]["level"] == "emergency"
    assert said.tool_calls[1]["arguments"] == {"reason": "possible medical emergency: My face is drooping on one side"}


async def test_an_emergency_said_at_the_auth_menu_reaches_healthcare_in_the_same_turn(
        domain: Domain, engine: IVREngine) -> None:
    call = Conversation("auth", engine=engine)
    await call.start()
    await verify(call, number="M E M two four six eight zero")
    said = await call.say("I have crushing chest pain")
    assert said.handoffs == ["healthcare"] and said.action == "transfer"


async def test_the_clinic_books_a_routine_appointment(domain: Domain, engine: IVREngine) -> None:
    call = Conversation("auth", engine=engine)
    await call.start()
    await verify(call, number="M E M two four six eight zero")
    said = await call.say("I'd like to book an appointment.")
    assert said.text == ("I can help you book an appointment at the clinic. "
                         "What brings you in? Please describe your symptoms.")
    assert (await call.say("A sore throat and a cough for a week.")).text == "What day would you like to come in?"
    said = await call.say("Next Tuesday.")
    assert said.text == ("You're booked for December 1, 2026 at 09:00. Your confirmation number is A P T, 5 0 0 1. "
                         "Is there anything else I can help you with?")
    booked = json.loads(domain.appointments.path.read_text())
    assert booked == {"date": "2026-12-01", "time": "09:00", "patient_name": "Jane Doe",
                      "reason": "A sore throat and a cough for a week.", "confirmation": "APT-5001"}


async def test_legal_finds_a_conflict(domain: Domain, engine: IVREngine) -> None:
    call = Conversation("legal", engine=engine)
    await call.start()
    await call.say("This is Jane Doe.")
    said = await call.say("Globex Industries Inc.")
    assert said.action == "hangup"
    assert "conflict of interest" in said.text
    assert said.tool_calls[0]["name"] == "check_conflicts"
    assert said.tool_calls[0]["result"] == {"conflict": True, "matches": [
        {"name": "Globex Industries", "role": "adverse party", "matter": "Acme v. Globex, contract dispute"}]}


async def test_legal_intake_without_a_conflict(domain: Domain, engine: IVREngine) -> None:
    call = Conversation("legal", engine=engine)
    await call.start()
    await call.say("This is Jane Doe.")
    assert (await call.say("Northwind Traders.")).text.startswith("What kind of matter is it?")
    await call.say("It's a business matter, a contract dispute.")
    await call.say("They stopped paying for the software we delivered in June.")
    assert (await call.say("four two five five five five zero one zero zero")).text == (
        "I have 4 2 5 5 5 5 0 1 0 0. Is that right?")
    said = await call.say("Yes.")
    assert said.text == ("Thank you, Jane Doe. An attorney will review your business matter and call you back "
                         "within one business day. Thank you for calling. Goodbye.")
    assert said.action == "hangup"
    assert call.state.slots["matter_type"] == "business" and call.state.slots["phone"] == "4255550100"


async def test_support_answers_from_the_knowledge_base_and_escalates_an_unknown_question(
        domain: Domain, engine: IVREngine) -> None:
    call = Conversation("support", engine=engine)
    assert (await call.start()).text == "I can answer questions about your policy. What's your question?"
    said = await call.say("How does roadside assistance work?")
    assert said.text.startswith("Roadside assistance covers towing to the nearest repair shop")
    assert said.text.endswith("Is there anything else I can help you with?")
    assert said.tool_calls[0]["result"]["topic"] == "roadside"
    said = await call.say("Can I insure my pet llama against space debris?")
    assert said.text == ("I'm sorry, I don't have an answer to that. Let me connect you with a specialist "
                         "who can help.")
    assert said.action == "transfer"
    assert said.tool_calls[-1]["arguments"] == {
        "reason": "a question the knowledge base cannot answer: Can I insure my pet llama against space debris?"}


async def test_a_question_at_the_auth_menu_is_answered_by_support_in_the_same_turn(
        domain: Domain, engine: IVREngine) -> None:
    call = Conversation("auth", engine=engine)
    await call.start()
    await verify(call)
    said = await call.say("I have a question about my deductible.")
    assert said.handoffs == ["support"]
    assert said.text.startswith("Your deductible is the amount you pay")


@pytest.mark.parametrize("scenario", ["insurance", "clinic", "law_firm"])
async def test_each_scenario_demo_caller_reaches_the_end(domain: Domain, engine: IVREngine, scenario: str) -> None:
    import yaml

    from .script import SCENARIOS
    spec = yaml.safe_load((SCENARIOS / f"{scenario}.yaml").read_text())
    call = Conversation(spec["entry"], engine=engine)
    await call.start()
    agents = {spec["entry"]}
    for line in spec["demo"]:
        said = await call.say(line)
        agents.add(said.agent)
    assert call.ended == "hangup", f"{scenario}: {said.text}"
    assert agents <= set(spec["agents"])
    if scenario == "insurance":
        assert agents == {"auth", "fnol"}
        assert json.loads(domain.claims.path.read_text())["claim_number"] == "CLM-100001"


async def test_a_misheard_policy_prefix_still_verifies_and_fnol_gets_the_profiles_number(
        domain: Domain, engine: IVREngine) -> None:
    call = Conversation("auth", engine=engine)
    await call.start()
    said = await verify(call, number="Paul one two three four five")  # a recogniser's "P O L"
    assert said.startswith("Thank you, Jane. You're verified.")
    assert call.state.slots["policy_number"] == "POL-12345"
    said = await call.say("I want to file a claim")
    assert said.tool_calls[0]["arguments"] == {"policy_number": "POL-12345"}
    assert said.tool_calls[0]["result"]["found"] is True


# What Whisper tiny.en wrote for each demo line spoken by Piper (the local pipeline's engines),
# recorded once: digits, hyphens and its own mishearings ("in" for "and") as the engine hears them.
HEARD = {
    "insurance": ["Hello, this is Jane Doe.", "March 3, 1980.", "Yes, that's right.", "P-O-L-1-2-3-4-5.",
                  "I'd like to report an accident.", "It happened yesterday.", "Yes.",
                  "at the corner of Main Street in Fifth Avenue.",
                  "Another car ran a red light and hit my passenger door.", "No, nobody was hurt.",
                  "My 2019 Toyota Corolla.", "Yes, please file it.", "No, that's all. Thank you."],
    "clinic": ["Hi, my name is Jane Doe.", "The third of March, 1980.", "Yes.", "M-E-M-2-4-6-8-0.",
               "I'd like to book an appointment.", "I've had a sore throat in a cough for a week.", "next Tuesday",
               "No, that's all. Thanks."],
    "law_firm": ["This is Jane Doe.", "Northwing traders.", "It's a business matter, a contract dispute.",
                 "They stop paying for the software we delivered in June.", "425, 555, 0100.", "Yes."],
}


@pytest.mark.parametrize("scenario", sorted(HEARD))
async def test_each_demo_reaches_the_end_as_the_local_recogniser_writes_it(
        domain: Domain, engine: IVREngine, scenario: str) -> None:
    import yaml

    from .script import SCENARIOS
    entry = yaml.safe_load((SCENARIOS / f"{scenario}.yaml").read_text())["entry"]
    call = Conversation(entry, engine=engine)
    await call.start()
    for line in HEARD[scenario]:
        said = await call.say(line)
        assert "didn't catch" not in said.text, f"{line!r}: {said.text}"
    assert call.ended == "hangup"
    if scenario == "insurance":
        stored = json.loads(domain.claims.path.read_text())
        assert (stored["location"], stored["policy_number"]) == (
            "at the corner of Main Street in Fifth Avenue.", "POL-12345")
