"""AgentSpec: one agent file (``config/agents/<name>.yaml``) as a typed, checked value.

The fields are the agents contract's::

    name: fnol                      # = the file's stem
    extends: base                   # defaults from another agent file (deep merge; base.yaml by default)
    description: "First notice of loss: files an insurance claim"
    capabilities: [claims]          # what intents the orchestrator may route to it
    greeting: "I can help you file a claim."   # said when it takes over (announced handoffs)
    prompt: |                       # Jinja2 template (LLM engine): caller, slots, agent, scenario, now
      You are ...
    tools: [lookup_policy, file_claim]         # names in the tool store
    route: fast                     # model route (config/models.yaml); blank: the models file's rules
    voice: ""                       # TTS voice for this agent (blank: the pipeline's)
    phrases: [claim, deductible]    # words to listen for while it is in charge (Azure STT's phrase list)
    handoffs:                       # targets it may hand off to, and when (the LLM's handoff tools)
      support: "the caller asks a general question"
    flow: {...}                     # the IVR engine's flow, checked by agents.ivr.validate_flow

:func:`parse_agent` turns the merged mapping into an :class:`AgentSpec`, raising
:class:`AgentFileError` naming the file and the line of the offending key (from
:func:`load_yaml`, which keeps each key's line). Cross-file checks (tools exist,
handoff targets exist, no cycles) belong to the registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from pipeline.errors import ConfigError

__all__ = ["AGENT_FIELDS", "AgentFileError", "AgentSpec", "Lines", "load_yaml", "parse_agent"]

Lines = dict[str, int]  # "handoffs.support" -> 1-based line of that key

AGENT_FIELDS = frozenset({"name", "extends", "description", "capabilities", "greeting", "prompt", "tools",
                          "route", "voice", "phrases", "handoffs", "flow"})
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
MAX_PHRASE_CHARS = 50
"""A phrase list entry is a word or a short phrase (a name, a product term), not a sentence."""
MAX_PHRASES = 100


class AgentFileError(ConfigError):
    """An agent or scenario file is wrong; the message starts with ``file:line:``."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        super().__init__(message, file=file, line=line)
        self.path = file


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent, as its file (merged with what it extends) describes it."""

    name: str
    description: str = ""
    capabilities: tuple[str, ...] = ()
    greeting: str = ""
    prompt: str = ""  # the Jinja2 source; the registry renders it per turn
    tools: tuple[str, ...] = ()
    route: str = ""
    voice: str = ""
    phrases: tuple[str, ...] = ()  # biases recognition while this agent is in charge (Azure STT)
    handoffs: Mapping[str, str] = field(default_factory=dict)  # target agent -> when to hand off
    flow: Mapping[str, Any] = field(default_factory=dict)  # the IVR engine's, schema in agents.ivr
    extends: str | None = None
    file: str = ""
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line(self, key: str) -> int | None:
        """The line of ``key`` (dotted: ``"handoffs.support"``) in :attr:`file`, if known."""
        return self.lines.get(key)


def load_yaml(text: str, file: str) -> tuple[Any, Lines]:
    """Parse ``text`` (safe YAML) and the line of each mapping key, by dotted path.

    A syntax error becomes an :class:`AgentFileError` at the line YAML reports.
    """
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise AgentFileError(file, line, f"not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise AgentFileError(file, None, f"not valid YAML: {exc}") from None
    lines: Lines = {}
    if node is not None:
        _key_lines(node, "", lines)
    return data, lines


def _key_lines(node: yaml.Node, prefix: str, lines: Lines) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                path = f"{prefix}{key.value}"
                lines[path] = key.start_mark.line + 1
                if isinstance(value, yaml.ScalarNode):  # where the text itself starts (a block: next line)
                    lines[path + ":text"] = value.start_mark.line + 1 + (value.style in ("|", ">"))
                _key_lines(value, path + ".", lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{prefix}{i}"] = item.start_mark.line + 1
            _key_lines(item, f"{prefix}{i}.", lines)


def parse_agent(data: Any, file: str, lines: Mapping[str, int], *, stem: str) -> AgentSpec:
    """The :class:`AgentSpec` of a merged agent mapping; :class:`AgentFileError` at the first problem."""

    def fail(key: str, message: str) -> AgentFileError:
        return AgentFileError(file, lines.get(key), message)

    if not isinstance(data, Mapping):
        raise AgentFileError(file, 1, "an agent file is a mapping of fields (name, description, prompt, ...)")
    unknown = sorted(set(data) - AGENT_FIELDS)
    if unknown:
        raise fail(str(unknown[0]), f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(AGENT_FIELDS))})")
    name = data.get("name", stem)
    if name != stem:
        raise fail("name", f"name {name!r} must be the file's stem {stem!r}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("name", f"name {name!r}: lower-case letters, digits and _ (starting with a letter)")

    def text(key: str) -> str:
        value = data.get(key, "")
        if value is None:
            return ""
        if not isinstance(value, str):
            raise fail(key, f"{key} must be text, got {type(value).__name__}")
        return value

    def names(key: str) -> tuple[str, ...]:
        value = data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise fail(key, f"{key} must be a list of names")
        return tuple(value)

    handoffs = data.get("handoffs") or {}
    phrases = _phrases(data.get("phrases"), fail)
    if not isinstance(handoffs, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | None) for k, v in handoffs.items()):
        raise fail("handoffs", "handoffs must map a target agent to when to hand off to it (text)")
    flow = data.get("flow") or {}
    if not isinstance(flow, Mapping):
        raise fail("flow", "flow must be a mapping (the IVR engine's flow)")
    extends = data.get("extends")
    if extends is not None and not isinstance(extends, str):
        raise fail("extends", "extends must name an agent file")
    return AgentSpec(name=name, description=text("description").strip(), capabilities=names("capabilities"),
                     greeting=text("greeting").strip(), prompt=text("prompt"), tools=names("tools"),
                     route=text("route").strip(), voice=text("voice").strip(), phrases=phrases,
                     handoffs={k: (v or "").strip() for k, v in handoffs.items()}, flow=dict(flow),
                     extends=extends, file=file, lines=dict(lines))


def _phrases(value: Any, fail: Callable[[str, str], AgentFileError]) -> tuple[str, ...]:
    """The ``phrases`` field: short texts, each checked at its own line."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise fail("phrases", f"phrases must be a list of short phrases, got {type(value).__name__}")
    if len(value) > MAX_PHRASES:
        raise fail("phrases", f"phrases: {len(value)} entries, at most {MAX_PHRASES}")
    out: list[str] = []
    for i, phrase in enumerate(value):
        if not isinstance(phrase, str) or not phrase.strip():
            raise fail(f"phrases.{i}", f"phrases[{i}] must be a non-empty text, got {phrase!r}")
        if len(phrase.strip()) > MAX_PHRASE_CHARS:
            raise fail(f"phrases.{i}", f"phrases[{i}] is {len(phrase.strip())} characters, at most "
                                       f"{MAX_PHRASE_CHARS}: a word or a short phrase")
        out.append(" ".join(phrase.split()))
    return tuple(dict.fromkeys(out))
