"""Shared pieces of the agents tests: agent folders written on the fly, a stand-in IVR
engine (the real one is H11's ``agents.ivr``), a tool store with test tools, and text
calls through the orchestrator with the call report."""

from __future__ import annotations

import re
import textwrap
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.engine import AgentState, Reply, ToolRunner, TurnInput
from agents.orchestrator import Orchestrator
from agents.registry import AgentRegistry
from agents.spec import AgentSpec
from agents.tools.store import ToolStore
from pipeline.config import build_graph, load_pipeline
from pipeline.context import CallContext
from pipeline.registry import default_registry
from voicegraph.call import CallOptions, run_call_report

CLAIMS: list[dict[str, Any]] = []


async def lookup_policy(policy_number: str) -> dict[str, Any]:
    """Look up a policy by its number."""
    return {"policy_number": policy_number, "holder": "Jane Doe", "vehicle": "blue Golf"}


async def file_claim(policy_number: str, description: str, injuries: bool = False) -> dict[str, Any]:
    """File a claim; returns the claim number."""
    CLAIMS.append({"policy_number": policy_number, "description": description, "injuries": injuries})
    return {"claim_number": f"CL-{len(CLAIMS):04d}"}


async def transfer_to_human(reason: str) -> dict[str, Any]:
    """Transfer the caller to a human agent."""
    return {"action": "transfer", "reason": reason}


def make_store(*extra: Any) -> ToolStore:
    return ToolStore([lookup_policy, file_claim, transfer_to_human, *extra])


AGENTS = {
    "base": """
        description: a test agent
        route: main
        prompt: "You are {{ agent.name }} of Contoso."
        """,
    "auth": """
        description: verifies the caller
        greeting: Welcome to Contoso. Please say your policy number.
        prompt: "You are auth. Verify {{ caller.name or 'the caller' }}."
        tools: [lookup_policy, transfer_to_human]
        handoffs:
          fnol: the caller is verified and wants to file a claim
          support: the caller is verified and has a question
        flow:
          rules:
            - match: "quiet (?P<policy>P-\\\\d+)"
              say: ""
              slot: policy_number
              handoff: fnol
              announce: false
            - match: "human|agent"
              tool: transfer_to_human
              arguments: {reason: caller asked}
              say: Transferring you now.
            - match: "(?P<policy>P-\\\\d+)"
              tool: lookup_policy
              arguments: {policy_number: "{policy}"}
              slot: policy_number
              say: Thank you {holder}, you are verified.
              handoff: fnol
          fallback: Sorry, what is your policy number?
        """,
    "fnol": """
        description: files claims
        capabilities: [claims]
        greeting: I can help you file a claim.
        prompt: "You are FNOL. Policy {{ slots.policy_number }}."
        tools: [file_claim]
        phrases: [claim, collision]
        handoffs:
          support: a general question
        flow:
          enter: Tell me what happened, policy {policy_number}.
          rules:
            - match: "(?P<what>.*crash.*)"
              tool: file_claim
              arguments: {policy_number: "{policy_number}", description: "{what}"}
              say: Your claim number is {claim_number}.
            - match: "loop"
              handoff: support
              announce: false
          fallback: Please describe the accident.
        """,
    "support": """
        description: answers questions
        capabilities: [question]
        greeting: Support here.
        prompt: "You are support."
        flow:
          rules:
            - match: "loop"
              handoff: fnol
              announce: false
          fallback: Our hours are eight to eight.
        """,
}

SCENARIO = """
    name: insurance
    entry: auth
    agents: [auth, fnol, support]
    intents:
      question:
        agent: support
        phrases: [opening hours]
    demo: [P-100, I had a crash]
    """


def stand_in_flows(flow: Mapping[str, Any], file: str) -> list[str]:
    """The flows above are the stand-in engine's (``rules``), not the IVR engine's: not checked."""
    return []


def write_agents(folder: Path, agents: Mapping[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (agents or AGENTS).items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text))
    return folder


def write_scenario(folder: Path, text: str = SCENARIO) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "insurance.yaml"
    path.write_text(textwrap.dedent(text))
    return path


class StandInEngine:
    """A tiny deterministic engine over the test flows above (``rules`` of regex -> tool,
    slot, say, handoff), standing in for the IVR engine in these tests."""

    async def enter(self, agent: AgentSpec, state: AgentState, tools: ToolRunner) -> AsyncIterator[str | Reply]:
        if agent.greeting:
            yield agent.greeting
        prompt = agent.flow.get("enter")
        if prompt:
            yield " " + prompt.format(**state.slots)

    async def respond(self, agent: AgentSpec, turn: TurnInput, state: AgentState,
                      tools: ToolRunner) -> AsyncIterator[str | Reply]:
        for rule in agent.flow.get("rules", []):
            match = re.search(rule["match"], turn.text, re.I)
            if match is None:
                continue
            values: dict[str, Any] = {**state.slots, **match.groupdict()}
            if "slot" in rule:
                state.slots[rule["slot"]] = match.group(1)
            calls = []
            if "tool" in rule:
                arguments = {k: v.format(**values) for k, v in rule.get("arguments", {}).items()}
                result = await tools.call(rule["tool"], arguments)
                calls.append({"name": rule["tool"], "arguments": arguments, "result": result})
                if isinstance(result, Mapping):
                    values.update(result)
            yield Reply(text=rule.get("say", "").format(**values), handoff=rule.get("handoff"),
                        announce=rule.get("announce", True), tool_calls=calls)
            return
        yield agent.flow.get("fallback", "Sorry?")


def registered() -> None:
    default_registry.register("orchestrator", Orchestrator)


async def text_call(tmp_path: Path, lines: Sequence[str], *, engine: Any = None, store: ToolStore | None = None,
                    registry: AgentRegistry | None = None, settings: str = "", env_pipeline: str = "",
                    router: Any = None) -> dict[str, Any]:
    """A text call through the orchestrator on the agents of ``tmp_path / 'agents'``; the report."""
    registered()
    store = store or make_store()
    agents = tmp_path / "agents"
    if not agents.exists():
        write_agents(agents)
    scenario = tmp_path / "scenarios" / "insurance.yaml"
    if not scenario.exists():
        write_scenario(scenario.parent)
    pipeline = tmp_path / "call.yaml"
    pipeline.write_text(textwrap.dedent(f"""
        nodes:
          caller: {{use: text_caller}}
          brain:
            use: orchestrator
            scenario: {scenario}
            agents: {agents}
            engine: {"llm" if router is not None else "ivr"}
            {settings}
        edges:
          - caller -> brain -> caller
        """))
    graph = build_graph(load_pipeline(pipeline))
    brain = graph.nodes["brain"]
    assert isinstance(brain, Orchestrator)
    brain.store = store
    brain.registry = registry or AgentRegistry(agents, tools=store, poll_s=0, validate_flow=stand_in_flows)
    if router is not None:
        brain.router = router
    else:
        brain.engine = engine or StandInEngine()
    return await run_call_report(graph, CallOptions(pipeline=pipeline, say=tuple(lines)), ctx=CallContext())
