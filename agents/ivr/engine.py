"""IVREngine: runs an agent's deterministic flow (``agents.ivr.flow``) as an :class:`~agents.engine.AgentEngine`.

One engine object serves every call: where a call stands in an agent's flow lives in
``state.memory["ivr"][agent]`` (the waiting step, the answers it did not understand, a
value waiting for confirmation), plain JSON so a state store can keep it; the values
collected go to ``state.slots``, shared with the agents the call is handed to (an ask
step whose slot is already filled is skipped). A turn:

1. normalises the answer once (:func:`~agents.ivr.normalize.normalize`);
2. tries the flow's ``global`` intents (``"a person, please"`` at any step);
3. gives the answer to the waiting step: an ``ask`` parses it into its slot (or asks to
   confirm it first; a "no" with a new value confirms that one), a ``listen`` matches its
   intents; an answer that does not fit is re-prompted, ``max_attempts`` of them lead to
   ``on_fail``;
4. runs the steps that follow (say, tools, branches) until one waits, hands off or acts.

A call that reaches an agent without :meth:`IVREngine.enter` (a silent handoff, or a caller
who spoke first) is entered on the spot: if the answer fits the first waiting step it is
taken as the answer to it, else the agent's opening prompts are spoken.

Text pieces are yielded as soon as each step says them (so speech starts before a slow
tool returns), each after the first with its leading space (the pieces are one text
stream, as an LLM's tokens are), then one :class:`~agents.engine.Reply` with the tools run, a handoff or a
call action. A flow that loops without waiting (more than ``max_steps`` steps in a turn)
or an agent with no valid flow gets an apology and a transfer to a person, never a
stuck turn. Pure apart from the tools: a turn costs tens of microseconds (``perf/ivr_turn.py``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from ..engine import AgentState, Reply, ToolRunner, TurnInput
from .flow import ACTION_TOOLS, Condition, Flow, FlowError, Step, compile_flow
from .normalize import normalize
from .slots import SLOT_TYPES, Answer
from .template import Template, lookup, parse_template, render, value_of

if TYPE_CHECKING:
    from ..spec import AgentSpec

__all__ = ["IVREngine"]

log = logging.getLogger(__name__)

APOLOGY = "Sorry, something went wrong on our side. Let me get you to a person."
_DEFAULT_REPROMPT = "Sorry, I didn't catch that."
_DENIED = "Sorry about that."
_CACHE_SIZE = 256


@dataclass(slots=True)
class _Turn:
    """What one turn produces besides its text."""

    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    handoff: str | None = None
    announce: bool = True
    action: str | None = None

    def reply(self) -> Reply:
        return Reply(handoff=self.handoff, announce=self.announce, action=self.action, tool_calls=self.tool_calls)


class IVREngine:
    """The deterministic engine (see the module docstring); ``today`` dates relative answers ("yesterday")."""

    def __init__(self, *, today: Callable[[], date] = date.today, max_steps: int = 50) -> None:
        self._today = today
        self._max_steps = max_steps
        self._flows: dict[int, tuple[Mapping[str, Any], Flow | None]] = {}

    def flow(self, agent: AgentSpec) -> Flow | None:
        """``agent``'s compiled flow (cached per flow mapping), None if it has none or it is invalid."""
        cached = self._flows.get(id(agent.flow))
        if cached is not None and cached[0] is agent.flow:
            return cached[1]
        compiled: Flow | None = None
        if agent.flow:
            try:
                compiled = compile_flow(agent.flow, agent.file or agent.name)
            except FlowError as exc:
                log.error("agent %s: its flow cannot run: %s", agent.name, exc)
        if len(self._flows) >= _CACHE_SIZE:
            self._flows.pop(next(iter(self._flows)))
        # the mapping is kept with its compiled flow so that its id cannot be reused by another
        self._flows[id(agent.flow)] = (agent.flow, compiled)
        return compiled

    async def enter(self, agent: AgentSpec, state: AgentState, tools: ToolRunner) -> AsyncIterator[str | Reply]:
        """The agent's greeting, then its flow from the start up to the first step that waits."""
        async for piece in _spaced(self._enter(agent, state, tools)):
            yield piece

    async def respond(self, agent: AgentSpec, turn: TurnInput, state: AgentState,
                      tools: ToolRunner) -> AsyncIterator[str | Reply]:
        """Answer ``turn`` at the step the call waits on in ``agent``'s flow."""
        async for piece in _spaced(self._respond(agent, turn, state, tools)):
            yield piece

    async def _enter(self, agent: AgentSpec, state: AgentState, tools: ToolRunner) -> AsyncIterator[str | Reply]:
        turn = _Turn()
        flow = self.flow(agent)
        if agent.greeting:
            yield render(parse_template(agent.greeting), state)
        if flow is None:
            async for piece in self._unavailable(agent, state, tools, turn):
                yield piece
        else:
            _positions(state).pop(agent.name, None)
            async for piece in self._advance(agent, flow, flow.start, state, tools, turn):
                yield piece
        yield turn.reply()

    async def _respond(self, agent: AgentSpec, turn: TurnInput, state: AgentState,
                       tools: ToolRunner) -> AsyncIterator[str | Reply]:
        out = _Turn()
        flow = self.flow(agent)
        if flow is None:
            async for piece in self._unavailable(agent, state, tools, out):
                yield piece
            yield out.reply()
            return
        norm = normalize(turn.text)
        answer = Answer(raw=turn.text, norm=norm, dtmf=turn.dtmf.strip(), today=self._today())
        padded = f" {norm} "
        position = _positions(state).get(agent.name)
        if position is None or position.get("step") not in flow.steps:
            # not entered yet: reach the first waiting step, and speak its prompts only if the
            # answer does not fit it (then the caller hears where they are, nothing is counted)
            opening = [p async for p in self._advance(agent, flow, flow.start, state, tools, out)]
            position = _positions(state).get(agent.name)
            if position is None or out.handoff or out.action:
                for piece in opening:
                    yield piece
                yield out.reply()
                return
            if not self._fits(flow, flow.steps[position["step"]], answer, padded):
                for piece in opening:
                    yield piece
                yield out.reply()
                return
        goto = next((step for intent, step in flow.global_intents if intent.matches(padded, answer.dtmf)), None)
        if goto is not None:
            _positions(state).pop(agent.name, None)
            async for piece in self._advance(agent, flow, goto, state, tools, out):
                yield piece
        else:
            async for piece in self._answer(agent, flow, flow.steps[position["step"]], position, answer, padded,
                                            state, tools, out):
                yield piece
        yield out.reply()

    # -- the waiting step ------------------------------------------------------------------------------------

    def _fits(self, flow: Flow, step: Step, answer: Answer, padded: str) -> bool:
        if any(intent.matches(padded, answer.dtmf) for intent, _ in flow.global_intents):
            return True
        if step.kind == "listen":
            return (step.otherwise is not None and bool(answer.raw.strip() or answer.dtmf)) or any(
                intent.matches(padded, answer.dtmf) for intent, _ in step.intents)
        return SLOT_TYPES[step.type].parse(answer, step.options) is not None

    async def _answer(self, agent: AgentSpec, flow: Flow, step: Step, position: dict[str, Any], answer: Answer,
                      padded: str, state: AgentState, tools: ToolRunner, out: _Turn) -> AsyncIterator[str]:
        goto: str | None = None
        denied = False  # "no" to a confirmation: asked again, not told it was not understood
        if step.kind == "listen":
            goto = next((target for intent, target in step.intents if intent.matches(padded, answer.dtmf)), None)
            if goto is None and step.otherwise is not None and (answer.raw.strip() or answer.dtmf):
                goto = step.otherwise
            if goto is not None and step.slot:
                state.slots[step.slot] = answer.raw.strip() or answer.dtmf
        else:
            parse = SLOT_TYPES[step.type].parse
            pending = position.get("pending")
            if pending is not None:
                said_yes = SLOT_TYPES["yes_no"].parse(answer, {})
                value = parse(answer, step.options) if said_yes is not True else None
                if said_yes is True:
                    state.slots[step.slot] = pending
                    goto = step.next
                elif value is not None and value != pending:  # "no, it's March fourth"
                    position["pending"] = value
                    assert step.confirm is not None
                    yield render(step.confirm, state, {step.slot: value})
                    return
                else:
                    position.pop("pending", None)
                    denied = said_yes is False
            else:
                value = parse(answer, step.options)
                if value is not None and step.confirm is not None:
                    position["pending"] = value
                    yield render(step.confirm, state, {step.slot: value})
                    return
                if value is not None:
                    state.slots[step.slot] = value
                    goto = step.next
        if goto is not None:
            _positions(state).pop(agent.name, None)
            async for piece in self._advance(agent, flow, goto, state, tools, out):
                yield piece
            return
        position["attempts"] = attempts = int(position.get("attempts", 0)) + 1
        if attempts >= step.max_attempts:
            log.info("agent %s: step %s not answered after %d attempts", agent.name, step.name, attempts)
            _positions(state).pop(agent.name, None)
            assert step.on_fail is not None
            async for piece in self._advance(agent, flow, step.on_fail, state, tools, out):
                yield piece
            return
        assert step.prompt is not None
        if denied:
            yield f"{_DENIED} {render(step.prompt, state)}"
        elif step.reprompt is not None:
            yield render(step.reprompt, state)
        else:
            yield f"{_DEFAULT_REPROMPT} {render(step.prompt, state)}"

    # -- running steps -----------------------------------------------------------------------------------------

    async def _advance(self, agent: AgentSpec, flow: Flow, name: str | None, state: AgentState,
                       tools: ToolRunner, out: _Turn) -> AsyncIterator[str]:
        """Run from step ``name`` until a step waits (its position saved), hands off or acts."""
        for _ in range(self._max_steps):
            if name is None:
                return
            step = flow.steps[name]
            if step.kind == "ask" and not step.always and state.slots.get(step.slot) not in (None, ""):
                name = step.next  # already known (from an earlier agent): not asked again
                continue
            if step.say is not None:
                yield render(step.say, state)
            for slot in step.clear:
                state.slots.pop(slot, None)
            for slot, template in step.set:
                state.slots[slot] = value_of(template, state)
            if step.count:
                state.failures[step.count] = state.failures.get(step.count, 0) + 1
            if step.waits:
                _positions(state)[agent.name] = {"step": step.name, "attempts": 0}
                assert step.prompt is not None
                yield render(step.prompt, state)
                return
            if step.kind == "tool":
                args = {key: value_of(value, state) if isinstance(value, Template) else value
                        for key, value in step.args}
                result = await _call(tools, step.tool, args, out)
                if step.result:
                    state.slots[step.result] = result
                if step.caller and isinstance(result, Mapping) and isinstance(result.get(step.caller), Mapping):
                    state.caller.update(result[step.caller])
                failed = isinstance(result, Mapping) and "error" in result
                name = step.on_error if failed and step.on_error else step.next
            elif step.kind == "branch":
                name = next((goto for condition, goto in step.branch if _holds(condition, state)), step.orelse)
            elif step.kind == "handoff":
                _positions(state).pop(agent.name, None)
                out.handoff, out.announce = step.target, step.announce
                return
            elif step.kind == "action":
                reason = render(step.reason, state) if step.reason is not None else ""
                await _call(tools, ACTION_TOOLS[step.action], {"reason": reason} if step.action == "transfer"
                            else {}, out)
                _positions(state).pop(agent.name, None)
                out.action = step.action
                return
            else:
                name = step.next
        log.error("agent %s: flow ran %d steps without waiting (a loop?); transferring", agent.name,
                  self._max_steps)
        _positions(state).pop(agent.name, None)
        async for piece in self._unavailable(agent, state, tools, out):
            yield piece

    async def _unavailable(self, agent: AgentSpec, state: AgentState, tools: ToolRunner,
                           out: _Turn) -> AsyncIterator[str]:
        yield APOLOGY
        await _call(tools, "transfer_to_human", {"reason": f"agent {agent.name} could not go on"}, out)
        out.action = "transfer"


async def _spaced(pieces: AsyncIterator[str | Reply]) -> AsyncIterator[str | Reply]:
    """``pieces`` as one text stream: a space before every sentence but the first, nothing empty."""
    first = True
    async for piece in pieces:
        if isinstance(piece, str):
            if not piece:
                continue
            piece = piece if first else " " + piece
            first = False
        yield piece


async def _call(tools: ToolRunner, name: str, args: dict[str, Any], out: _Turn) -> Any:
    try:
        result = await tools.call(name, args)
    except Exception as exc:  # the runner should answer {"error": ...}; a flow must survive one that raises
        log.warning("tool %s raised %s: %s", name, type(exc).__name__, exc)
        result = {"error": f"{type(exc).__name__}: {exc}"}
    out.tool_calls.append({"name": name, "arguments": args, "result": result})
    return result


def _positions(state: AgentState) -> dict[str, dict[str, Any]]:
    positions: dict[str, dict[str, Any]] = state.memory.setdefault("ivr", {})
    return positions


def _holds(condition: Condition, state: AgentState) -> bool:
    if condition.failures is not None:
        value: Any = state.failures.get(condition.failures, 0)
    else:
        assert condition.slot is not None
        value = lookup(condition.slot, state)
    op, expected = condition.op, condition.value
    if op == "equals":
        return bool(value == expected)
    if op == "not_equals":
        return bool(value != expected)
    if op == "in":
        return bool(value in expected)
    if op == "present":
        return bool((value not in (None, "")) == expected)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return bool(value >= expected) if op == "at_least" else bool(value <= expected)
