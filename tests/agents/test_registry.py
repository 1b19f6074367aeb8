"""The agent registry: defaults and extends, Jinja2 prompts, errors at file:line, health,
and a broken file rejected while the old version keeps serving."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agents.registry import AgentRegistry
from agents.scenarios import IntentMatcher, load_scenario
from agents.spec import AgentFileError
from tests.agents.helpers import make_store, stand_in_flows, write_agents, write_scenario


def registry(tmp_path: Path) -> AgentRegistry:
    return AgentRegistry(write_agents(tmp_path / "agents"), tools=make_store(), poll_s=0, validate_flow=stand_in_flows)


def test_agents_inherit_the_base_and_render_their_prompt(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    assert reg.load() == []
    assert reg.names() == ["auth", "fnol", "support"]
    fnol = reg.get("fnol")
    assert (fnol.route, fnol.tools, fnol.capabilities) == ("main", ("file_claim",), ("claims",))
    assert reg.prompt("fnol", slots={"policy_number": "P-4"}) == "You are FNOL. Policy P-4."
    assert reg.prompt("auth", caller={"name": "Jane"}) == "You are auth. Verify Jane."
    assert {h.name: h.status for h in reg.health().values()} == {
        "base": "loaded", "auth": "loaded", "fnol": "loaded", "support": "loaded"}


@pytest.mark.parametrize("text, line, message", [
    ("tools: [file_claim, fly_to_moon]\n", 1, "unknown tool 'fly_to_moon'"),
    ("description: x\nhandoffs:\n  billing: never\n", 3, "handoff to unknown agent 'billing'"),
    ("handoffs:\n  fnol: me\n", 2, "handoff to itself ('fnol')"),
    ("description: x\nprompt: 'Hi {{ caller.name '\n", 2, "prompt: Jinja2 syntax error"),
    ("description: x\nvoice: [a\n", 3, "not valid YAML"),
    ("descripton: typo\n", 1, "unknown field 'descripton'"),
    ("extends: fnol\n", 1, "extends cycle: fnol -> fnol"),
    ("phrases: claim\n", 1, "phrases must be a list of short phrases, got str"),
    ("description: x\nphrases:\n  - claim\n  - 42\n", 4, "phrases[1] must be a non-empty text, got 42"),
    ("phrases: [claim, '  ']\n", 1, "phrases[1] must be a non-empty text"),
    (f"description: x\nphrases:\n  - {'policy number ' * 4}\n", 3, "phrases[0] is 55 characters, at most 50"),
    ("phrases: [" + ", ".join(f"p{i}" for i in range(101)) + "]\n", 1, "phrases: 101 entries, at most 100"),
])
def test_a_broken_agent_is_rejected_at_its_file_and_line_and_the_old_version_keeps_serving(
        tmp_path: Path, text: str, line: int, message: str) -> None:
    reg = registry(tmp_path)
    reg.load()
    old = reg.get("fnol")
    path = tmp_path / "agents" / "fnol.yaml"
    path.write_text(text)
    errors = reg.load()
    assert len(errors) == 1 and errors[0].startswith(f"{path}:{line}: ") and message in errors[0]
    assert reg.get("fnol") == old  # still serving
    health = reg.health()["fnol"]
    assert (health.status, health.serving) == ("error", True) and message in health.error


def test_phrases_are_trimmed_and_deduplicated_and_the_shipped_agents_have_some(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    (tmp_path / "agents" / "fnol.yaml").write_text(
        "tools: [file_claim]\nphrases: [claim, ' tow   truck ', claim, deductible]\n")
    assert reg.load() == []
    assert reg.get("fnol").phrases == ("claim", "tow truck", "deductible")
    assert reg.get("auth").phrases == ()  # none given, none inherited from the base
    shipped = AgentRegistry(Path(__file__).parents[2] / "config" / "agents", poll_s=0)
    assert shipped.load() == []
    for name in ("auth", "fnol", "healthcare", "legal", "support"):
        phrases = shipped.get(name).phrases
        assert 3 <= len(phrases) <= 12 and all(len(p) <= 30 for p in phrases), (name, phrases)
    assert "date of birth" in shipped.get("auth").phrases and "deductible" in shipped.get("fnol").phrases


def test_a_new_broken_agent_does_not_serve_and_others_still_load(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    (tmp_path / "agents" / "legal.yaml").write_text("tools: [nope]\n")
    errors = reg.load()
    assert errors == [f"{tmp_path / 'agents' / 'legal.yaml'}:1: unknown tool 'nope' (tools: file_claim, "
                      "lookup_policy, transfer_to_human)"]
    assert reg.names() == ["auth", "fnol", "support"] and not reg.health()["legal"].serving


async def test_refresh_reloads_only_when_the_folder_changed(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    assert await reg.refresh() is True
    assert await reg.refresh() is False
    (tmp_path / "agents" / "support.yaml").write_text("description: new\ngreeting: Hi.\n")
    assert await reg.refresh() is True
    assert reg.get("support").greeting == "Hi."


def test_scenario_checks_and_intents(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.load()
    scenario = load_scenario(write_scenario(tmp_path / "scenarios"), reg.names())
    assert (scenario.entry, scenario.agents, scenario.demo) == ("auth", ("auth", "fnol", "support"),
                                                                ("P-100", "I had a crash"))
    matcher = IntentMatcher.for_scenario(scenario, {n: reg.get(n).capabilities for n in scenario.agents})
    assert [i.name if (i := matcher.match(t)) else None for t in
            ["What are your Opening  Hours?", "file claims", "a question", "hours"]] == [
        "question", "claims", "question", None]
    bad = tmp_path / "scenarios" / "insurance.yaml"
    bad.write_text(textwrap.dedent("""
        entry: auth
        agents: [auth, fnol]
        intents:
          question: support
        """))
    with pytest.raises(AgentFileError, match=r"insurance.yaml:5: intent 'question' routes to 'support', which is "
                                             r"not one of the scenario's agents \(auth, fnol\)"):
        load_scenario(bad, reg.names())
