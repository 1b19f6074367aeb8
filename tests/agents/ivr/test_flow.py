"""validate_flow: every shipped flow passes; a broken one gets errors naming the key path."""

from __future__ import annotations

import pytest

from agents.ivr import compile_flow, flow_handoffs, flow_problems, flow_tools, validate_flow
from agents.ivr.flow import FlowError

from .script import AGENTS, load_agent

SHIPPED = sorted(p.stem for p in AGENTS.glob("*.yaml") if p.stem != "base")


def test_the_shipped_agents_are_all_there() -> None:
    assert SHIPPED == ["auth", "custom_template", "fnol", "healthcare", "legal", "support"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_flow_passes_and_uses_only_its_agents_tools_and_handoffs(name: str) -> None:
    agent = load_agent(name)
    assert validate_flow(agent.flow, agent.file) == []
    flow = compile_flow(agent.flow, agent.file)
    assert flow_tools(flow) <= set(agent.tools), f"{name}: flow tools not in tools:"
    assert flow_handoffs(flow) <= set(agent.handoffs), f"{name}: flow handoffs not in handoffs:"
    assert agent.prompt.strip() and agent.description


def test_a_broken_flow_gets_every_error_with_its_key_path() -> None:
    broken = {
        "start": "nowhere",
        "colour": "blue",
        "intents": {"yes": {"phrases": ["yes"], "dtmf": "1x"}, "empty": {}},
        "steps": {
            "ask_dob": {"ask": "When?", "slot": "date_of_birth", "type": "dat", "next": "verify"},
            "ask_num": {"ask": "Number?", "slot": "n", "type": "number", "options": {"min": "one", "maxx": 3},
                        "next": "verify", "on_fail": "gone"},
            "verify": {"tool": "verify_caller", "args": {"name": "{name|shout}"}, "next": "check"},
            "check": {"branch": [{"if": {"slot": "auth.verified", "equals": True}, "goto": "missing"},
                                 {"if": {"slot": "x"}, "goto": "check"}]},
            "menu": {"listen": "Say yes.", "intents": {"yes": "check", "no": "check"}, "next": "check",
                     "on_fail": "check"},
            "two": {"say": "hi", "tool": "x", "handoff": "fnol"},
            "bad": {"action": "explode", "reason": "why"},
        },
    }
    assert flow_problems(broken) == [
        ("flow.colour", "unknown key (keys: global, intents, on_fail, start, steps)"),
        ("flow.intents.yes.dtmf", "keypad keys are 0-9, * and #, got '1x'"),
        ("flow.intents.empty", "needs at least one of phrases, patterns, dtmf"),
        ("flow.start", "must name a step (steps: ask_dob, ask_num, bad, check, menu, two, verify), got 'nowhere'"),
        ("flow.steps.ask_dob", "needs on_fail (or a flow-level on_fail): where to go after max_attempts"),
        ("flow.steps.ask_dob.type", "unknown slot type 'dat' (types: text, name, date, number, digits, policy_id, "
                                    "yes_no, choice)"),
        ("flow.steps.ask_num.on_fail", "must name a step (steps: ask_dob, ask_num, bad, check, menu, two, verify), "
                                       "got 'gone'"),
        ("flow.steps.ask_num.options.min", "must be a whole number"),
        ("flow.steps.ask_num.options.maxx", "not an option of number (options: min, max)"),
        ("flow.steps.verify.args.name", "unknown filter |shout (filters: date, spell)"),
        ("flow.steps.check.branch.0.goto", "must name a step (steps: ask_dob, ask_num, bad, check, menu, two, "
                                           "verify), got 'missing'"),
        ("flow.steps.check.branch.1.if", "needs one of slot/failures and one of equals, not_equals, in, present, "
                                         "at_least, at_most"),
        ("flow.steps.check", "a branch needs else (the step when no condition holds)"),
        ("flow.steps.menu.next", "a listen step does not go on to a next step"),
        ("flow.steps.menu.intents.no", "unknown intent (intents: empty, yes)"),
        ("flow.steps.two", "a step does one thing; it has tool, handoff"),
        ("flow.steps.bad.action", "must be one of transfer, hangup, got 'explode'"),
    ]
    errors = validate_flow(broken, "config/agents/broken.yaml")
    assert errors[0] == "flow.colour: unknown key (keys: global, intents, on_fail, start, steps)"
    assert len(errors) == 17
    with pytest.raises(FlowError, match=r"broken.yaml: flow.colour: unknown key"):
        compile_flow(broken, "broken.yaml")


@pytest.mark.parametrize(("flow", "problem"), [
    (None, ("flow", "must be a mapping with start and steps")),
    ({"start": "a"}, ("flow.steps", "must map step names to steps (at least one)")),
    ({"start": "a", "steps": {"a": {"say": "hi"}}}, ("flow.steps.a", "needs next (the step after it)")),
    ({"start": "a", "steps": {"a": "hi"}}, ("flow.steps.a", "must be a mapping (say, ask, tool, branch, ...)")),
    ({"start": "a", "steps": {"a": {"handoff": "fnol", "slot": "x"}}},
     ("flow.steps.a.slot", "only for ask / listen steps")),
    ({"start": "a", "steps": {"a": {"ask": "?", "slot": "x", "type": "choice", "next": "a", "on_fail": "a"}}},
     ("flow.steps.a.options", "a choice slot needs options.choices")),
    ({"start": "a", "intents": {"i": {"patterns": ["(unclosed"]}}, "steps": {"a": {"handoff": "x"}}},
     ("flow.intents.i.patterns.0", "not a valid regular expression: missing ), unterminated subpattern at "
                                   "position 0")),
])
def test_single_problems(flow: object, problem: tuple[str, str]) -> None:
    assert flow_problems(flow) == [problem]
