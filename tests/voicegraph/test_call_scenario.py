"""voicegraph call --scenario: the shipped scenarios as text calls through the CLI on the
IVR engine (each scenario's demo caller), the JSON report's agent fields, and the
command-line errors; voicegraph validate on agent and scenario files."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.tools.domain import Domain, use_domain
from voicegraph.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def domain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Domain]:
    """The IVR engine (no LLM endpoint) and the domain's records in a temp folder."""
    for name in ("OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    made = Domain(state_dir=tmp_path / "state")
    previous = use_domain(made)
    yield made
    use_domain(previous)


def call_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["call", *argv, "--json"]) == 0, capsys.readouterr().err
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report["errors"] == [] and report["ended"] == "eos"
    return report


def tools_of(report: dict[str, Any]) -> list[str]:
    return [call["name"] for turn in report["turns"] for call in turn["tool_calls"]]


def test_the_insurance_demo_authenticates_hands_to_fnol_and_files_the_callers_claim(
        domain: Domain, capsys: pytest.CaptureFixture[str]) -> None:
    report = call_json(["--scenario", "insurance", "--pipeline", "text"], capsys)
    assert report["pipeline"] == "scenario_text"
    turns = report["turns"]
    assert len(turns) == 14  # the entry agent's opening, then the 13 demo lines
    assert [t["agent"] for t in turns] == ["auth"] * 5 + ["fnol"] * 9
    verify = turns[4]
    assert verify["caller_text"] == "P O L one two three four five."
    assert verify["tool_calls"][0]["name"] == "verify_caller"
    assert verify["tool_calls"][0]["arguments"] == {"name": "Jane Doe", "date_of_birth": "1980-03-03",
                                                   "policy_number": "POL-12345"}
    assert verify["tool_calls"][0]["result"]["verified"] is True
    handoff = turns[5]
    assert handoff["handoffs"] == [{"from": "auth", "to": "fnol", "reason": "handoff from auth", "announced": True}]
    assert handoff["bot_text"] == "I can help you file a claim. When did the incident happen?"
    filed = turns[12]
    [claim_call] = filed["tool_calls"]
    assert claim_call["name"] == "file_claim"
    assert claim_call["result"] == {"filed": True, "claim_number": "CLM-100001", "status": "open"}
    assert "Your claim number is C L M, 1 0 0 0 0 1." in filed["bot_text"]
    assert turns[13]["action"] == {"action": "hangup", "reason": "", "agent": "fnol"}
    [stored] = asyncio.run(domain.claims.read())
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    assert {k: v for k, v in stored.items() if k != "filed_at"} == {
        "claim_number": "CLM-100001", "policy_number": "POL-12345", "incident_date": yesterday,
        "location": "At the corner of Main Street and Fifth Avenue.",
        "description": "Another car ran a red light and hit my passenger door.",
        "injuries": False, "vehicle": "My 2019 Toyota Corolla."}


def test_the_clinic_demo_books_an_appointment_after_verification(
        domain: Domain, capsys: pytest.CaptureFixture[str]) -> None:
    report = call_json(["--scenario", "clinic", "--pipeline", "text"], capsys)
    turns = report["turns"]
    assert len(turns) == 9
    assert turns[-1]["agent"] == "healthcare"
    assert [h["to"] for t in turns for h in t["handoffs"]] == ["healthcare"]
    assert tools_of(report)[:1] == ["verify_caller"]
    assert "book_appointment" in tools_of(report)
    [booked] = asyncio.run(domain.appointments.read())
    assert booked["patient_name"] == "Jane Doe" and booked["confirmation"] == "APT-5001"


def test_the_law_firm_demo_runs_the_conflict_check(capsys: pytest.CaptureFixture[str]) -> None:
    report = call_json(["--scenario", "law_firm", "--pipeline", "text"], capsys)
    assert {t["agent"] for t in report["turns"]} == {"legal"}
    checks = [c for t in report["turns"] for c in t["tool_calls"] if c["name"] == "check_conflicts"]
    assert [c["arguments"] for c in checks] == [{"party": "Northwind Traders."}]  # as said
    assert checks[0]["result"]["conflict"] is False


def test_text_lines_make_a_typed_call_with_the_agent_fields_per_turn(capsys: pytest.CaptureFixture[str]) -> None:
    report = call_json(["--scenario", "insurance", "--text", "Hello, this is Jane Doe."], capsys)
    assert report["pipeline"] == "scenario_text"
    greeting, answer = report["turns"]
    assert answer["caller_text"] == "Hello, this is Jane Doe."
    assert answer["bot_text"] == "Thank you. What is your date of birth?"
    for turn in (greeting, answer):
        assert turn["agent"] == "auth"
        assert turn["route"] is None and turn["model"] is None  # the IVR engine: no model
        assert turn["tool_calls"] == [] and turn["handoffs"] == [] and turn["safety"] == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--scenario", "nope", "--pipeline", "text"],
     "error: --scenario nope: no scenario 'nope' in {scenarios} (scenarios: clinic, insurance, law_firm)\n"),
    (["--scenario", "insurance", "--pipeline", "local"],
     "error: {local}: --scenario insurance: pipeline 'local' has no orchestrator brain (a node with "
     "'use: orchestrator'); the scenario pipelines are 'scenario' (spoken) and 'scenario_text'\n"),
    (["--scenario", "insurance", "--text", "hi", "--say", "hi"],
     "error: --text (typed lines) and --say (spoken lines) cannot be combined\n"),
    (["--scenario", "insurance", "--text", "hi", "--pipeline", "scenario"],
     "error: --text lines are typed, but the caller of 'scenario' (SpeechCaller) speaks: use --say on a speech "
     "pipeline, or a text pipeline\n"),
    (["--scenario", "insurance", "--via", "acs", "--text", "hello"],
     "error: --via acs places a spoken call: give the caller's lines with --say (or none: the scenario's demo)\n"),
])
def test_bad_scenario_options_exit_2_before_the_call(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["call", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == message.format(scenarios=Path("config/scenarios"),
                                          local=ROOT / "config" / "pipelines" / "local.yaml")


# --- validate: agents and scenarios ------------------------------------------------------------


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    """A copy of the shipped agents and scenarios."""
    for folder in ("agents", "scenarios"):
        shutil.copytree(ROOT / "config" / folder, tmp_path / "config" / folder)
    return tmp_path / "config"


def test_validate_checks_the_shipped_agents_and_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    for name in ("auth", "fnol", "support", "healthcare", "legal"):
        assert f"config/agents/{name}.yaml (agent {name}: " in out
    assert "config/scenarios/insurance.yaml (scenario insurance: entry auth, 3 agents, 2 intents, 13 demo lines)" in out


def test_validate_names_the_file_and_line_of_a_broken_agent(
        config_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fnol = config_copy / "agents" / "fnol.yaml"
    lines = fnol.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("tools:"))
    lines[at] = "tools: [lookup_policy, file_a_claim]"
    fnol.write_text("\n".join(lines) + "\n")
    assert main(["validate", str(config_copy / "agents"), str(config_copy / "scenarios")]) == 1
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == 1  # the scenarios naming fnol are still fine: the agent exists, broken
    assert errors[0].startswith(f"error: {fnol}:{at + 1}: unknown tool 'file_a_claim' (tools: ")
    assert f"ok: {config_copy / 'agents' / 'auth.yaml'}" in captured.out
    assert f"ok: {config_copy / 'scenarios' / 'insurance.yaml'}" in captured.out


def test_validate_names_the_line_of_a_scenario_routing_to_an_unknown_agent(
        config_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = config_copy / "scenarios" / "insurance.yaml"
    text = scenario.read_text()
    scenario.write_text(text.replace("question: support", "question: helpdesk"))
    line = next(i + 1 for i, row in enumerate(text.splitlines()) if "question: support" in row)
    assert main(["validate", str(scenario)]) == 1
    assert capsys.readouterr().err == (
        f"error: {scenario}:{line}: intent 'question' routes to 'helpdesk', which is not one of the scenario's "
        "agents (auth, fnol, support)\n")
