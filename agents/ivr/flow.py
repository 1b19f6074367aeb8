"""The IVR flow: its YAML schema, the checks that name the key path of each mistake, and its compiled form.

A flow is an agent file's ``flow:`` mapping::

    flow:
      start: ask_name                 # the first step
      on_fail: to_human               # where an ask/listen step goes after max_attempts (a step may override)
      intents:                        # what a caller can mean, by phrase, pattern or keypad
        human: {phrases: ["a person", "an agent"], patterns: ["\\\\boperator\\\\b"], dtmf: "0"}
      global: {human: to_human}       # intents heard at every step: intent -> step
      steps:
        ask_dob:
          ask: "What is your date of birth?"       # waits for a slot value
          slot: date_of_birth
          type: date                               # a type of agents.ivr.slots
          options: {past: true}
          confirm: "I have {date_of_birth|date}. Is that right?"
          reprompt: "Please say it like March third, nineteen eighty."
          max_attempts: 3                          # answers that are not a value, before on_fail
          always: false                            # ask even if the slot is already filled
          next: verify
        menu:
          listen: "Say claim or question."         # waits for one of its intents
          intents: {claim: to_fnol, question: to_support}
          slot: request                            # keeps what was said (optional)
          otherwise: answer_it                     # an answer no intent matches (else: re-prompts)
        verify:
          tool: verify_caller                      # through the ToolRunner
          args: {name: "{name}", date_of_birth: "{date_of_birth}"}
          result: auth                             # the slot that keeps the result
          caller: caller                           # merge result["caller"] into the caller's profile
          on_error: to_human                       # the tool answered {"error": ...}
          next: check
        check:
          branch:
            - {if: {slot: auth.verified, equals: true}, goto: done}
            - {if: {failures: auth, at_least: 3}, goto: to_human}
          else: retry
        retry: {say: "Let's try again.", count: auth, clear: [name, date_of_birth], next: ask_name}
        to_fnol: {handoff: fnol, announce: true}
        to_human: {say: "One moment.", action: transfer, reason: "verification failed"}

Every step may ``say`` (spoken first), ``clear`` slots, ``set`` slots (templates),
``count`` a failure kind; then does its one kind — ``ask``, ``listen``, ``tool``,
``branch``, ``handoff``, ``action`` (``transfer`` / ``hangup``, through the
``transfer_to_human`` / ``hang_up`` tools) — or none, and goes to ``next``. Templates
are text with ``{slot}``, ``{slot.key}``, ``{caller.key}`` and the filters ``|date``
(said as "March 3, 1980") and ``|spell`` (``POL-12345`` said letter by letter); an
argument that is exactly one ``{...}`` passes the value itself (a ``true``, a number).

Conditions are ``{slot: PATH, OP: VALUE}`` or ``{failures: KIND, OP: N}`` with one OP
of ``equals``, ``not_equals``, ``in``, ``present``, ``at_least``, ``at_most``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError

from .normalize import normalize
from .slots import SLOT_TYPES
from .template import FILTERS, Template, parse_template

__all__ = ["Condition", "Flow", "FlowError", "Intent", "Step", "compile_flow", "flow_handoffs", "flow_problems",
           "flow_tools", "validate_flow"]

ACTION_TOOLS = {"transfer": "transfer_to_human", "hangup": "hang_up"}
KINDS = ("ask", "listen", "tool", "branch", "handoff", "action")
_STEP_KEYS = frozenset({*KINDS, "say", "clear", "set", "count", "next", "slot", "type", "options", "confirm",
                        "reprompt", "max_attempts", "always", "on_fail", "intents", "args", "result", "caller",
                        "on_error", "else", "announce", "reason", "otherwise"})
_KIND_KEYS = {"ask": {"slot", "type", "options", "confirm", "reprompt", "max_attempts", "always", "on_fail"},
              "listen": {"intents", "slot", "otherwise", "reprompt", "max_attempts", "on_fail"},
              "tool": {"args", "result", "caller", "on_error"},
              "branch": {"else"}, "handoff": {"announce"}, "action": {"reason"}}
_FLOW_KEYS = frozenset({"start", "on_fail", "intents", "global", "steps"})
_OPS = ("equals", "not_equals", "in", "present", "at_least", "at_most")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class FlowError(ConfigError):
    """A flow does not pass :func:`validate_flow`; the message lists every problem."""


@dataclass(frozen=True, slots=True)
class Intent:
    """What a caller can mean: normalised phrases (``" phrase "``), compiled patterns and keypad strings."""

    name: str
    phrases: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]
    dtmf: tuple[str, ...]

    def matches(self, padded_norm: str, dtmf: str) -> bool:
        """Whether the answer (normalised text padded with spaces, keypad digits) means this intent."""
        if dtmf and dtmf in self.dtmf:
            return True
        if not padded_norm.strip():
            return False
        return any(p in padded_norm for p in self.phrases) or any(p.search(padded_norm) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class Condition:
    """One branch test: on a slot path or a failure count."""

    slot: tuple[str, ...] | None
    failures: str | None
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class Step:
    """One compiled step (see the module docstring for the keys)."""

    name: str
    kind: str | None
    say: Template | None = None
    clear: tuple[str, ...] = ()
    set: tuple[tuple[str, Template], ...] = ()
    count: str | None = None
    next: str | None = None
    prompt: Template | None = None  # ask / listen
    slot: str = ""
    type: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    confirm: Template | None = None
    reprompt: Template | None = None
    max_attempts: int = 3
    always: bool = False
    on_fail: str | None = None
    intents: tuple[tuple[Intent, str], ...] = ()  # listen: (intent, goto)
    otherwise: str | None = None  # listen: where an answer no intent matches goes
    tool: str = ""
    args: tuple[tuple[str, Any], ...] = ()  # name -> Template or a literal
    result: str | None = None
    caller: str | None = None
    on_error: str | None = None
    branch: tuple[tuple[Condition, str], ...] = ()
    orelse: str | None = None  # branch: when no condition holds
    target: str = ""  # handoff
    announce: bool = True
    action: str = ""
    reason: Template | None = None

    @property
    def waits(self) -> bool:
        """Whether the step waits for the caller."""
        return self.kind in ("ask", "listen")


@dataclass(frozen=True, slots=True)
class Flow:
    """A checked, compiled flow."""

    start: str
    steps: Mapping[str, Step]
    global_intents: tuple[tuple[Intent, str], ...]


def validate_flow(flow: Any, file: str) -> list[str]:
    """Every problem of ``flow``, as ``"flow.<key path>: <what is wrong>"`` (empty: it is valid).

    ``file`` is the agent file the flow came from (the registry's contract); the messages
    leave it out because the registry puts ``file:line:`` in front of them. A caller that
    kept the YAML's key lines can point at each problem's own line with :func:`flow_problems`.
    """
    del file  # named by the caller, in front of the messages
    return [f"{path}: {message}" for path, message in flow_problems(flow)]


def flow_problems(flow: Any) -> list[tuple[str, str]]:
    """Every problem of ``flow`` as ``(key path, message)``; the path (``flow.steps.ask_dob.type``) lets a
    caller that kept the YAML's lines point at the line."""
    return _Compiler(flow).problems


def compile_flow(flow: Any, file: str = "<flow>") -> Flow:
    """The compiled ``flow``; :class:`FlowError` listing every problem if it is not valid."""
    compiler = _Compiler(flow)
    if compiler.problems:
        raise FlowError(f"{file}: " + "; ".join(f"{path}: {message}" for path, message in compiler.problems))
    assert compiler.flow is not None
    return compiler.flow


def flow_tools(flow: Flow) -> set[str]:
    """The tool names ``flow`` calls (its tool steps and the tools behind its actions)."""
    return {s.tool for s in flow.steps.values() if s.kind == "tool"} | {
        ACTION_TOOLS[s.action] for s in flow.steps.values() if s.kind == "action"}


def flow_handoffs(flow: Flow) -> set[str]:
    """The agents ``flow`` hands off to."""
    return {s.target for s in flow.steps.values() if s.kind == "handoff"}


class _Compiler:
    """Checks and compiles in one pass, collecting every problem instead of stopping at the first."""

    def __init__(self, flow: Any) -> None:
        self.problems: list[tuple[str, str]] = []
        self.flow: Flow | None = None
        self._compile(flow)

    def fail(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def _compile(self, flow: Any) -> None:
        if not isinstance(flow, Mapping):
            self.fail("flow", "must be a mapping with start and steps")
            return
        for key in sorted(set(flow) - _FLOW_KEYS, key=str):
            self.fail(f"flow.{key}", f"unknown key (keys: {', '.join(sorted(_FLOW_KEYS))})")
        raw_steps = flow.get("steps")
        if not isinstance(raw_steps, Mapping) or not raw_steps:
            self.fail("flow.steps", "must map step names to steps (at least one)")
            return
        names = {str(k) for k in raw_steps}
        self._names = names
        intents = self._intents(flow.get("intents"))
        self._intent_map = intents
        start = flow.get("start")
        if not isinstance(start, str) or start not in names:
            self.fail("flow.start", f"must name a step (steps: {', '.join(sorted(names))}), got {start!r}")
        on_fail = flow.get("on_fail")
        if on_fail is not None:
            self._ref("flow.on_fail", on_fail)
        global_intents = self._goto_map("flow.global", flow["global"], intents) if "global" in flow else ()
        steps = {str(name): self._step(f"flow.steps.{name}", str(name), raw, on_fail)
                 for name, raw in raw_steps.items()}
        if not self.problems:
            self.flow = Flow(start=str(start), steps=steps, global_intents=global_intents)

    def _ref(self, path: str, value: Any) -> str:
        if not isinstance(value, str) or value not in self._names:
            self.fail(path, f"must name a step (steps: {', '.join(sorted(self._names))}), got {value!r}")
            return ""
        return value

    def _template(self, path: str, value: Any) -> Template | None:
        if not isinstance(value, str):
            self.fail(path, f"must be text, got {type(value).__name__}")
            return None
        template = parse_template(value)
        for part in template.parts:
            if isinstance(part, tuple) and part[1] and part[1] not in FILTERS:
                self.fail(path, f"unknown filter |{part[1]} (filters: {', '.join(FILTERS)})")
        return template

    def _intents(self, raw: Any) -> dict[str, Intent]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.fail("flow.intents", "must map intent names to {phrases, patterns, dtmf}")
            return {}
        out = {}
        for name, spec in raw.items():
            path = f"flow.intents.{name}"
            if not isinstance(spec, Mapping):
                self.fail(path, "must be a mapping with phrases, patterns and/or dtmf")
                continue
            for key in sorted(set(spec) - {"phrases", "patterns", "dtmf"}, key=str):
                self.fail(f"{path}.{key}", "unknown key (keys: dtmf, patterns, phrases)")
            phrases = self._strings(f"{path}.phrases", spec.get("phrases", []))
            patterns = []
            for i, source in enumerate(self._strings(f"{path}.patterns", spec.get("patterns", []))):
                try:
                    patterns.append(re.compile(source))
                except re.error as exc:
                    self.fail(f"{path}.patterns.{i}", f"not a valid regular expression: {exc}")
            dtmf = spec.get("dtmf", [])
            dtmf_list = self._strings(f"{path}.dtmf", [dtmf] if isinstance(dtmf, str | int) else dtmf)
            for i, keys in enumerate(dtmf_list):
                if not re.fullmatch(r"[0-9*#]+", keys):
                    self.fail(f"{path}.dtmf.{i}" if not isinstance(dtmf, str | int) else f"{path}.dtmf",
                              f"keypad keys are 0-9, * and #, got {keys!r}")
            if not ({"phrases", "patterns", "dtmf"} & set(spec)):
                self.fail(path, "needs at least one of phrases, patterns, dtmf")
            out[str(name)] = Intent(str(name), tuple(f" {normalize(p)} " for p in phrases), tuple(patterns),
                                    tuple(dtmf_list))
        return out

    def _strings(self, path: str, value: Any) -> list[str]:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [str(value)]
        if not isinstance(value, list) or not all(isinstance(v, str | int) and not isinstance(v, bool)
                                                  for v in value):
            self.fail(path, "must be a list of text")
            return []
        return [str(v) for v in value]

    def _goto_map(self, path: str, raw: Any, intents: Mapping[str, Intent]) -> tuple[tuple[Intent, str], ...]:
        if not isinstance(raw, Mapping) or not raw:
            self.fail(path, "must map intent names to steps")
            return ()
        out = []
        for name, goto in raw.items():
            if name not in intents:
                self.fail(f"{path}.{name}", f"unknown intent (intents: {', '.join(sorted(intents)) or 'none'})")
                continue
            out.append((intents[name], self._ref(f"{path}.{name}", goto)))
        return tuple(out)

    def _step(self, path: str, name: str, raw: Any, flow_on_fail: Any) -> Step:
        if not _NAME.match(name):
            self.fail(path, "step names are lower-case letters, digits and _")
        if not isinstance(raw, Mapping):
            self.fail(path, "must be a mapping (say, ask, tool, branch, ...)")
            return Step(name, None)
        for key in sorted(set(raw) - _STEP_KEYS, key=str):
            self.fail(f"{path}.{key}", f"unknown key (keys: {', '.join(sorted(_STEP_KEYS))})")
        kinds = [k for k in KINDS if k in raw]
        if len(kinds) > 1:
            self.fail(path, f"a step does one thing; it has {', '.join(kinds)}")
            return Step(name, None)  # what else is wrong depends on which one was meant
        kind = kinds[0] if kinds else None
        allowed = _KIND_KEYS.get(kind or "", set())
        for key in sorted(set(raw) & (set().union(*_KIND_KEYS.values()) - allowed)):
            self.fail(f"{path}.{key}", f"only for {' / '.join(k for k, v in _KIND_KEYS.items() if key in v)} steps")
        fields: dict[str, Any] = {"name": name, "kind": kind}
        if "say" in raw:
            fields["say"] = self._template(f"{path}.say", raw["say"])
        if "clear" in raw:
            fields["clear"] = tuple(self._strings(f"{path}.clear", raw["clear"]))
        if "set" in raw:
            if not isinstance(raw["set"], Mapping):
                self.fail(f"{path}.set", "must map slot names to templates")
            else:
                fields["set"] = tuple((str(k), self._template(f"{path}.set.{k}", str(v) if isinstance(v, int | float)
                                                              else v)) for k, v in raw["set"].items())
        if "count" in raw:
            if not isinstance(raw["count"], str):
                self.fail(f"{path}.count", "must name a kind of failure (like auth)")
            fields["count"] = raw["count"]
        terminal = kind in ("listen", "branch", "handoff", "action")
        if "next" in raw:
            if terminal:
                self.fail(f"{path}.next", f"a {kind} step does not go on to a next step")
            else:
                fields["next"] = self._ref(f"{path}.next", raw["next"])
        elif not terminal:
            self.fail(path, "needs next (the step after it)")
        if kind in ("ask", "listen"):
            fields["prompt"] = self._template(f"{path}.{kind}", raw[kind])
            if "reprompt" in raw:
                fields["reprompt"] = self._template(f"{path}.reprompt", raw["reprompt"])
            attempts = raw.get("max_attempts", 3)
            if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
                self.fail(f"{path}.max_attempts", f"must be a whole number of at least 1, got {attempts!r}")
            fields["max_attempts"] = attempts
            on_fail = raw.get("on_fail", flow_on_fail)
            if on_fail is None:
                self.fail(path, "needs on_fail (or a flow-level on_fail): where to go after max_attempts")
            elif "on_fail" in raw:
                fields["on_fail"] = self._ref(f"{path}.on_fail", on_fail)
            else:
                fields["on_fail"] = on_fail
        if kind == "ask":
            self._ask(path, raw, fields)
        elif kind == "listen":
            fields["intents"] = self._goto_map(f"{path}.intents", raw.get("intents"), self._intent_map)
            if "otherwise" in raw:
                fields["otherwise"] = self._ref(f"{path}.otherwise", raw["otherwise"])
            if "slot" in raw:
                self._slot_name(path, raw, fields)
        elif kind == "tool":
            self._tool(path, raw, fields)
        elif kind == "branch":
            self._branch(path, raw, fields)
        elif kind == "handoff":
            target = raw["handoff"]
            if not isinstance(target, str) or not _NAME.match(target):
                self.fail(f"{path}.handoff", f"must name an agent, got {target!r}")
            fields["target"] = str(target)
            announce = raw.get("announce", True)
            if not isinstance(announce, bool):
                self.fail(f"{path}.announce", "must be true or false")
            fields["announce"] = bool(announce)
        elif kind == "action":
            action = raw["action"]
            if action not in ACTION_TOOLS:
                self.fail(f"{path}.action", f"must be one of {', '.join(ACTION_TOOLS)}, got {action!r}")
            fields["action"] = str(action)
            if "reason" in raw:
                fields["reason"] = self._template(f"{path}.reason", raw["reason"])
        return Step(**fields)

    def _slot_name(self, path: str, raw: Mapping[str, Any], fields: dict[str, Any]) -> None:
        slot = raw.get("slot")
        if not isinstance(slot, str) or not _NAME.match(slot):
            self.fail(f"{path}.slot", f"must name the slot to fill (lower-case, _), got {slot!r}")
        fields["slot"] = str(slot)

    def _ask(self, path: str, raw: Mapping[str, Any], fields: dict[str, Any]) -> None:
        self._slot_name(path, raw, fields)
        type_name = raw.get("type", "text")
        slot_type = SLOT_TYPES.get(type_name) if isinstance(type_name, str) else None
        if slot_type is None:
            self.fail(f"{path}.type", f"unknown slot type {type_name!r} (types: {', '.join(SLOT_TYPES)})")
        fields["type"] = str(type_name)
        options = raw.get("options") or {}
        if not isinstance(options, Mapping):
            self.fail(f"{path}.options", "must be a mapping of the type's options")
            options = {}
        if slot_type is not None:
            for key, value in options.items():
                check = slot_type.options.get(key)
                if check is None:
                    known = ", ".join(slot_type.options) or "none"
                    self.fail(f"{path}.options.{key}", f"not an option of {type_name} (options: {known})")
                elif problem := check(value):
                    self.fail(f"{path}.options.{key}", problem)
            if type_name == "choice" and "choices" not in options:
                self.fail(f"{path}.options", "a choice slot needs options.choices")
        fields["options"] = dict(options)
        if "confirm" in raw:
            fields["confirm"] = self._template(f"{path}.confirm", raw["confirm"])
        always = raw.get("always", False)
        if not isinstance(always, bool):
            self.fail(f"{path}.always", "must be true or false")
        fields["always"] = bool(always)

    def _tool(self, path: str, raw: Mapping[str, Any], fields: dict[str, Any]) -> None:
        tool = raw["tool"]
        if not isinstance(tool, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", tool):
            self.fail(f"{path}.tool", f"must name a tool, got {tool!r}")
        fields["tool"] = str(tool)
        args = raw.get("args") or {}
        if not isinstance(args, Mapping):
            self.fail(f"{path}.args", "must map argument names to values or templates")
            args = {}
        fields["args"] = tuple((str(k), self._template(f"{path}.args.{k}", v) if isinstance(v, str) else v)
                               for k, v in args.items())
        for key in ("result", "caller"):
            if key in raw:
                if not isinstance(raw[key], str) or not _NAME.match(raw[key]):
                    self.fail(f"{path}.{key}", f"must be a name (lower-case, _), got {raw[key]!r}")
                fields[key] = raw[key]
        if "on_error" in raw:
            fields["on_error"] = self._ref(f"{path}.on_error", raw["on_error"])

    def _branch(self, path: str, raw: Mapping[str, Any], fields: dict[str, Any]) -> None:
        cases = raw["branch"]
        if not isinstance(cases, list) or not cases:
            self.fail(f"{path}.branch", "must be a list of {if: condition, goto: step}")
            cases = []
        out = []
        for i, case in enumerate(cases):
            where = f"{path}.branch.{i}"
            if not isinstance(case, Mapping) or set(case) != {"if", "goto"}:
                self.fail(where, "must be {if: condition, goto: step}")
                continue
            condition = self._condition(f"{where}.if", case["if"])
            goto = self._ref(f"{where}.goto", case["goto"])
            if condition is not None:
                out.append((condition, goto))
        fields["branch"] = tuple(out)
        if "else" not in raw:
            self.fail(path, "a branch needs else (the step when no condition holds)")
        else:
            fields["orelse"] = self._ref(f"{path}.else", raw["else"])

    def _condition(self, path: str, raw: Any) -> Condition | None:
        if not isinstance(raw, Mapping):
            self.fail(path, "must be {slot: path, <op>: value} or {failures: kind, <op>: n}")
            return None
        subjects = [k for k in ("slot", "failures") if k in raw]
        ops = [k for k in _OPS if k in raw]
        extra = sorted(set(raw) - {"slot", "failures", *_OPS}, key=str)
        if len(subjects) != 1 or len(ops) != 1 or extra:
            self.fail(path, f"needs one of slot/failures and one of {', '.join(_OPS)}"
                      + (f"; unknown {', '.join(map(str, extra))}" if extra else ""))
            return None
        subject, op = subjects[0], ops[0]
        value = raw[op]
        if not isinstance(raw[subject], str):
            self.fail(f"{path}.{subject}", "must be text")
            return None
        if op in ("at_least", "at_most") and (not isinstance(value, int | float) or isinstance(value, bool)):
            self.fail(f"{path}.{op}", "must be a number")
        if op == "in" and not isinstance(value, list):
            self.fail(f"{path}.in", "must be a list")
        if op == "present" and not isinstance(value, bool):
            self.fail(f"{path}.present", "must be true or false")
        if subject == "failures" and op not in ("at_least", "at_most", "equals"):
            self.fail(f"{path}.{op}", "a failure count takes at_least, at_most or equals")
        return Condition(tuple(raw["slot"].split(".")) if subject == "slot" else None,
                         raw["failures"] if subject == "failures" else None, op, value)
