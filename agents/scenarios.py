"""Scenarios: ``config/scenarios/<name>.yaml``, which agents answer a call and how it is routed.

::

    name: insurance                 # = the file's stem
    description: Contoso insurance line
    entry: auth                     # the agent that takes the call
    agents: [auth, fnol, support]   # the agents of this scenario
    intents:                        # intent -> agent (short form: the intent's name is its phrase)
      claim: fnol
      question:
        agent: support
        phrases: [question, how do i, what is]
    demo:                           # the scripted demo caller's lines
      - Hello, this is Jane Doe

Intent detection (:class:`IntentMatcher`) is explicit: an intent matches when one of its
phrases occurs in the caller's words as whole words, case-insensitively (``_`` in a name
reads as a space); intents are tried in file order, then the capabilities of the
scenario's agents (each capability is an intent routing to its agent). Nothing else
decides.

:func:`load_scenario` checks the file against the registry's agents, raising an
:class:`~agents.spec.AgentFileError` at the offending line.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec import AgentFileError, load_yaml

__all__ = ["Intent", "IntentMatcher", "SCENARIO_FIELDS", "Scenario", "load_scenario", "parse_scenario"]

SCENARIO_FIELDS = frozenset({"name", "description", "entry", "agents", "intents", "demo"})


@dataclass(frozen=True, slots=True)
class Intent:
    """An intent: its name, the agent it routes to, the phrases that detect it."""

    name: str
    agent: str
    phrases: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One scenario file, checked."""

    name: str
    entry: str
    agents: tuple[str, ...]
    description: str = ""
    intents: tuple[Intent, ...] = ()
    demo: tuple[str, ...] = ()
    file: str = ""
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)


class IntentMatcher:
    """Finds the first intent whose phrase the caller said (module docstring)."""

    def __init__(self, intents: Sequence[Intent]) -> None:
        self.intents = tuple(intents)
        self._patterns = [
            (intent, re.compile(r"\b(?:" + "|".join(re.escape(p.lower()).replace(r"\ ", r"\s+")
                                                    for p in intent.phrases) + r")\b"))
            for intent in self.intents if intent.phrases]

    @classmethod
    def for_scenario(cls, scenario: Scenario, capabilities: Mapping[str, Sequence[str]]) -> IntentMatcher:
        """The scenario's intents, then each agent's capabilities (agent name -> capabilities)."""
        intents = list(scenario.intents)
        named = {intent.name for intent in intents}
        for agent in scenario.agents:
            for capability in capabilities.get(agent, ()):
                if capability not in named:
                    named.add(capability)
                    intents.append(Intent(capability, agent, (capability.replace("_", " "),)))
        return cls(intents)

    def match(self, text: str) -> Intent | None:
        """The first intent detected in ``text``, or None."""
        lowered = text.lower()
        for intent, pattern in self._patterns:
            if pattern.search(lowered):
                return intent
        return None


def load_scenario(path: str | Path, agents: Collection[str] | None = None) -> Scenario:
    """Read and check a scenario file (blocking); ``agents``: the registry's agent names."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AgentFileError(file, None, f"cannot read the scenario: {exc.strerror or exc}") from None
    data, lines = load_yaml(text, file)
    return parse_scenario(data, file, lines, stem=Path(path).stem, agents=agents)


def parse_scenario(data: Any, file: str, lines: Mapping[str, int], *, stem: str,
                   agents: Collection[str] | None = None) -> Scenario:
    """The :class:`Scenario` of a parsed file; :class:`AgentFileError` at the first problem."""

    def fail(key: str, message: str) -> AgentFileError:
        return AgentFileError(file, lines.get(key), message)

    if not isinstance(data, Mapping):
        raise AgentFileError(file, 1, "a scenario file is a mapping (name, entry, agents, intents, demo)")
    unknown = sorted(set(data) - SCENARIO_FIELDS)
    if unknown:
        raise fail(str(unknown[0]), f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(SCENARIO_FIELDS))})")
    name = data.get("name", stem)
    if name != stem:
        raise fail("name", f"name {name!r} must be the file's stem {stem!r}")
    members = data.get("agents")
    if not isinstance(members, list) or not members or not all(isinstance(a, str) for a in members):
        raise fail("agents", "agents must be a non-empty list of agent names")
    if agents is not None:
        for i, agent in enumerate(members):
            if agent not in agents:
                raise fail(f"agents.{i}", f"unknown agent {agent!r} (agents: {', '.join(sorted(agents))})")
    entry = data.get("entry")
    if not isinstance(entry, str) or entry not in members:
        raise fail("entry", f"entry must be one of the scenario's agents ({', '.join(members)}), got {entry!r}")
    intents: list[Intent] = []
    raw_intents = data.get("intents") or {}
    if not isinstance(raw_intents, Mapping):
        raise fail("intents", "intents must map an intent to an agent")
    for intent, target in raw_intents.items():
        key = f"intents.{intent}"
        phrases: list[Any] = [str(intent).replace("_", " ")]
        if isinstance(target, Mapping):
            extra = target.get("phrases") or []
            if not isinstance(extra, list) or not all(isinstance(p, str) and p.strip() for p in extra):
                raise fail(f"{key}.phrases", f"intent {intent!r}: phrases must be a list of words or phrases")
            phrases += extra
            target = target.get("agent")
        if not isinstance(target, str) or target not in members:
            raise fail(key, f"intent {intent!r} routes to {target!r}, which is not one of the scenario's agents "
                            f"({', '.join(members)})")
        intents.append(Intent(str(intent), target, tuple(p.strip() for p in phrases)))
    demo = data.get("demo") or []
    if not isinstance(demo, list) or not all(isinstance(line, str) and line.strip() for line in demo):
        raise fail("demo", "demo must be a list of lines the demo caller says")
    description = data.get("description") or ""
    return Scenario(name=name, entry=entry, agents=tuple(members), description=str(description).strip(),
                    intents=tuple(intents), demo=tuple(demo), file=file, lines=dict(lines))
