"""Orchestrator (``use: orchestrator``): the brain node that runs a scenario's agents.

Per call it holds the agent in charge (an :class:`~agents.engine.AgentState`, shared by
the call's agents) and, per caller turn:

1. refreshes the registry (a changed agent file takes effect at this turn);
2. screens the transcript for prompt injections (:mod:`agents.safety`): the neutralised
   text is what the history and the engines see, each match a ``SafetyFlag`` event;
3. detects the intent (the scenario's :class:`~agents.scenarios.IntentMatcher`) and keeps
   its name in ``state.memory["intent"]`` for the agents (an auth flow may use it); once
   the entry agent has handed the call on, an intent routed to another agent switches
   to it (announced) and that agent answers this turn;
4. runs the agent in charge through the engine: the LLM engine (:mod:`agents.llm_engine`)
   when an LLM endpoint is configured (``OPENAI_BASE_URL`` or ``AZURE_OPENAI_ENDPOINT``;
   ``engine: llm|ivr`` forces one), else the embedded IVR engine (``agents.ivr``);
5. follows the engine's :class:`~agents.engine.Reply`: a handoff emits ``AgentSwitch``
   and the new agent answers in the same turn — announced: its ``enter()`` (greeting,
   first prompt, or for the LLM its answer to the caller's words); silent: its
   ``respond()`` to the same input. ``share_context: false`` in the reply (or
   ``share_context: false`` in the settings) starts the new agent with no slots and no
   history. An agent handed the call twice in one turn is a handoff loop: the turn
   fails with that error and the caller hears the apology. A call action (``Reply.action``
   or a tool's ``{"action": ...}``) emits ``CallAction``, which the report records and a
   transport with a control plane acts on.

Replies are screened before they leave (:class:`~agents.safety.ReplyScreen`: no markup,
code or system-prompt leak). A tool still running after ``filler_after_ms`` makes the
caller hear the ``filler``. The call's state is saved to short-term memory after every
turn (:mod:`agents.memory`); a call whose state is found there when it starts (its media
reconnected to this worker after another ran it) goes on from it: the same agent, slots and
flow position, and no greeting. With a long-term memory and the caller's id (given by the
data tier, :meth:`Orchestrator.use_memory`), the caller's stored profile is read when the
call starts: a returning caller whose profile has a name hears ``welcome_back`` before the
greeting; when the call ends, what the call learnt of the caller (``AgentState.caller``,
their verified profile) is remembered with a summary of the call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pipeline.errors import ConfigError, ServiceError
from pipeline.frames import DTMF, AgentSwitch, CallAction, EventFrame, FinalTranscript, SafetyFlag, Speak, Start
from pipeline.settings import Doc, Range
from processors.llm.llm_node import LLMBrain, LLMBrainSettings

from .engine import AgentEngine, AgentState, Reply, TurnInput
from .llm_engine import LLMEngine
from .memory import LongTermMemory, ShortTermMemory, StateStore, StoreShortTerm, default_short_term
from .registry import AgentRegistry, shared_registry
from .safety import ReplyScreen, screen_input
from .scenarios import IntentMatcher, Scenario, load_scenario
from .spec import AgentSpec
from .tools.runner import CallTools
from .tools.store import ToolStore, default_store

__all__ = ["Orchestrator", "OrchestratorSettings", "ivr_engine", "llm_configured", "resolve_config_path",
           "scenario_file"]

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[1]
_ENTER = "\x00enter"  # a Speak of this text: the entry agent takes the call (at Start)
_LLM_ENV = ("OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT")
_PROFILE_WAIT_S = 1.0  # the longest the first greeting waits for the caller's profile


def llm_configured() -> bool:
    """True when an LLM endpoint is configured in the environment."""
    return any(os.environ.get(name) for name in _LLM_ENV)


def ivr_engine() -> AgentEngine | None:
    """The embedded IVR engine (``agents.ivr.IVREngine``), if installed."""
    try:
        from agents import ivr
    except ImportError:
        return None
    engine = getattr(ivr, "IVREngine", None)
    return engine() if engine is not None else None


@dataclass(frozen=True, kw_only=True)
class OrchestratorSettings(LLMBrainSettings):
    """The scenario, the engine and the handoff policy (plus the LLM brain's settings)."""

    scenario: Annotated[str, Doc("the scenario: a name in `scenarios`, or a file")] = "insurance"
    agents: Annotated[str, Doc("the agents folder (relative: to the working folder, else the project)")] = (
        "config/agents")
    scenarios: Annotated[str, Doc("the scenarios folder")] = "config/scenarios"
    engine: Annotated[Literal["auto", "llm", "ivr"], Doc(
        "auto: the LLM when OPENAI_BASE_URL or AZURE_OPENAI_ENDPOINT is set, else the IVR engine")] = "auto"
    announce_handoffs: Annotated[bool, Doc("LLM handoffs: the new agent greets the caller first")] = True
    share_context: Annotated[bool, Doc("handoffs carry the slots and history to the new agent")] = True
    max_handoffs: Annotated[int, Range(ge=1, le=8), Doc("handoffs within one turn before it fails")] = 3
    reload_poll_ms: Annotated[float, Range(ge=0), Doc("look for changed agent files at most this often")] = 500.0
    welcome_back: Annotated[str, Doc(
        "said before the greeting to a returning caller whose stored profile has a name ({first_name}, {name}); "
        "blank: never")] = "Welcome back, {first_name}."


def resolve_config_path(path: str) -> Path:
    """A settings path: as given when absolute or present in the working folder, else in the
    project (blocking: it looks at the file system)."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() or candidate.exists() else _REPO / candidate


def scenario_file(settings: OrchestratorSettings) -> Path:
    """The scenario file ``settings`` name: a ``.yaml`` path, else ``<scenarios>/<name>.yaml`` (blocking)."""
    given = Path(settings.scenario)
    if given.suffix in (".yaml", ".yml"):
        return resolve_config_path(str(given))
    return resolve_config_path(settings.scenarios) / f"{given}.yaml"


class Orchestrator(LLMBrain):
    """Runs a scenario's agents as the pipeline's brain (see module docstring).

    ``engine``, ``registry``, ``tools``, ``memory`` and ``long_term`` may be given (tests,
    embedding); else the engine follows ``settings.engine``, the registry is the worker's
    for ``settings.agents``, the tools the default store, the memory in-process, and there
    is no long-term memory.
    """

    Settings = OrchestratorSettings
    settings: OrchestratorSettings
    consumes = (FinalTranscript, Speak, DTMF)

    def __init__(self, settings: OrchestratorSettings | None = None, *, name: str | None = None,
                 engine: AgentEngine | None = None, registry: AgentRegistry | None = None,
                 tools: ToolStore | None = None, memory: ShortTermMemory | None = None,
                 long_term: LongTermMemory | None = None) -> None:
        super().__init__(settings, name=name)
        self.engine = engine
        self.registry = registry
        self.store = tools if tools is not None else default_store()
        self.memory = memory if memory is not None else default_short_term()
        self.long_term = long_term
        self.caller_id = ""  # who is calling (a phone number, a name): the long-term memory's key
        self.scenario: Scenario | None = None
        self.agent_state = AgentState(agent="")
        self.matcher = IntentMatcher(())
        self.tool_runner: CallTools | None = None
        self.live_turn = 0
        self.resumed = False  # the call's state came from short-term memory (another worker had the call)
        self._dtmf = ""

    async def setup(self) -> None:
        settings = self.settings
        if self.registry is None:
            folder = await asyncio.to_thread(resolve_config_path, settings.agents)
            self.registry = await shared_registry(folder, poll_s=settings.reload_poll_ms / 1000)
        else:
            await self.registry.refresh(force=self.registry.version == 0)
        registry = self.registry
        scenario_path = await asyncio.to_thread(scenario_file, settings)
        self.scenario = scenario = await asyncio.to_thread(load_scenario, scenario_path, registry.names())
        if self.engine is None:
            kind = settings.engine
            if kind == "auto":
                kind = "llm" if llm_configured() else "ivr"
            if kind == "llm":
                self.engine = LLMEngine(self, announce_handoffs=settings.announce_handoffs)
            else:
                self.engine = ivr_engine()
                if self.engine is None:
                    raise ConfigError("the IVR engine (agents.ivr) is not installed, and no LLM endpoint is "
                                      f"configured ({' or '.join(_LLM_ENV)})", node=self.name)
        if isinstance(self.engine, LLMEngine):
            await super().setup()
        self.agent_state = AgentState(agent=scenario.entry)
        stored = await self.memory.load(self.ctx.call_id)
        if stored is not None and stored.state.get("agent") in scenario.agents:
            # The call ran on another worker until its media reconnected here: go on from its state.
            data = stored.state
            self.agent_state = AgentState(agent=data["agent"], slots=dict(data.get("slots", {})),
                                          memory=dict(data.get("memory", {})), caller=dict(data.get("caller", {})),
                                          failures=dict(data.get("failures", {})))
            self.resumed = True
            self._restore_history(stored.turns)
            logger.info("call %s: resumed with agent %s, %d slots, %d turns", self.ctx.call_id,
                        self.agent_state.agent, len(self.agent_state.slots), len(stored.turns))
        self.matcher = IntentMatcher.for_scenario(
            scenario, {name: registry.get(name).capabilities for name in scenario.agents})
        self.tool_runner = CallTools(self.store, clock=self.ctx.clock, emit=self.emit,
                                     timeout_s=settings.tool_timeout_ms / 1000,
                                     filler_after_ms=settings.filler_after_ms)

    def use_memory(self, *, short_term: ShortTermMemory | StateStore | None = None,
                   long_term: LongTermMemory | None = None, caller_id: str = "") -> None:
        """Give this call the worker's memories and the caller's id (before the call starts);
        what is not given (None, "") stays as it was.

        ``short_term`` may be a plain :class:`~agents.memory.StateStore` (the data tier's
        live state, which may not import the agents' types): it is adapted here."""
        if short_term is not None:
            self.memory = StoreShortTerm(short_term) if isinstance(short_term, StateStore) else short_term
        if long_term is not None:
            self.long_term = long_term
        if caller_id:
            self.caller_id = caller_id

    async def cleanup(self) -> None:
        if self.long_term is not None and self.caller_id:
            state = self.agent_state
            try:
                await self.long_term.remember(self.caller_id, dict(state.caller), {
                    "call_id": self.ctx.call_id, "last_agent": state.agent, "verified": bool(state.caller)})
            except Exception:  # a failing store must not fail the call's end
                logger.exception("call %s: could not remember caller %r", self.ctx.call_id, self.caller_id)
        await super().cleanup()

    # -- the LLM engine's view of the call --------------------------------------------------

    def system_prompt(self, agent: AgentSpec, state: AgentState) -> str:
        """``agent``'s prompt rendered for this call."""
        assert self.registry is not None and self.scenario is not None
        return self.registry.prompt(agent.name, caller=state.caller, slots=state.slots, scenario=self.scenario)

    def context(self, state: AgentState) -> list[dict[str, str]]:
        """The history as heard, from the turn the agent's context starts at."""
        start = int(state.memory.get("context_from", 0))
        return [{"role": m.role, "content": m.content} for m in self.conversation.history if m.turn >= start]

    # -- frames -----------------------------------------------------------------------------

    def on_event(self, event: EventFrame) -> None:
        if type(event) is Start:
            entry = self.agent_state.agent
            spec = self.registry.get(entry) if self.registry is not None else None
            voice, phrases = (spec.voice, spec.phrases) if spec is not None else ("", ())
            if self.resumed:  # the agent in charge goes on at the caller's next words; nothing is re-said
                self.emit(AgentSwitch(agent_from="", agent_to=entry, announced=False, voice=voice, phrases=phrases,
                                      reason="resumed: the call's agent on the worker it came from"))
                return
            self.emit(AgentSwitch(agent_from="", agent_to=entry, reason="the scenario's entry agent", voice=voice,
                                  phrases=phrases))
            turn = self.ctx.next_turn()
            self.enqueue(Speak(_ENTER, turn=turn))
            return
        super().on_event(event)

    async def process(self, frame: FinalTranscript | Speak | DTMF) -> None:
        if isinstance(frame, DTMF):
            self._dtmf += frame.digits
            frame = FinalTranscript("", turn=frame.turn or self.ctx.next_turn())
        if isinstance(frame, Speak) and frame.text == _ENTER:
            self._close_previous()
            await self._speak(frame.turn, self._enter(frame.turn), interruptible=True)
            return
        if isinstance(frame, FinalTranscript):
            clean, flags = screen_input(frame.text)
            for flag in flags:
                self.emit(SafetyFlag(flag=flag.kind, matched=flag.matched, source=flag.source, turn=frame.turn))
            if flags:
                frame = dataclasses.replace(frame, text=clean)
        await super().process(frame)

    def respond(self, text: str, turn: int) -> AsyncIterator[str]:
        dtmf, self._dtmf = self._dtmf, ""
        return self._turn(TurnInput(text=text, dtmf=dtmf, turn=turn))

    # -- turns ------------------------------------------------------------------------------

    async def _enter(self, turn: int) -> AsyncIterator[str]:
        welcome = await self._welcome_back()
        if welcome:
            yield welcome + " "
        greeting = self.settings.greeting.strip()
        if greeting:
            yield greeting
        async for piece in self._run(turn, None, "enter"):
            yield piece

    async def _welcome_back(self) -> str:
        """``welcome_back`` for a caller whose stored profile has a name, else ""."""
        template = self.settings.welcome_back.strip()
        if not template or self.long_term is None or not self.caller_id:
            return ""
        try:
            # bounded: the greeting waits for this read, and a slow store must not hold it up
            profile = await asyncio.wait_for(self.long_term.profile(self.caller_id), _PROFILE_WAIT_S)
        except Exception as exc:
            logger.warning("call %s: no profile for caller %r (%s); greeting as a first-time caller",
                           self.ctx.call_id, self.caller_id, exc or type(exc).__name__)
            return ""
        name = str(profile.get("name") or "").strip()
        first = str(profile.get("first_name") or "").strip() or (name.split()[0] if name else "")
        if not first:
            return ""
        try:
            return template.format(first_name=first, name=name or first)
        except (KeyError, IndexError, ValueError) as exc:
            logger.warning("orchestrator %s: welcome_back %r has a bad placeholder (%s); not said", self.name,
                           template, exc)
            return ""

    async def _turn(self, turn_input: TurnInput) -> AsyncIterator[str]:
        assert self.registry is not None and self.scenario is not None
        await self.registry.refresh()
        state = self.agent_state
        intent = self.matcher.match(turn_input.text) if turn_input.text else None
        mode: Literal["enter", "respond"] = "respond"
        if intent is not None:
            state.memory["intent"] = intent.name
            if state.memory.get("entry_done") and intent.agent != state.agent:
                self._switch(intent.agent, f"intent {intent.name}", announced=True, share=True,
                             turn=turn_input.turn)
                mode = "enter"
        said: list[str] = []
        async for piece in self._run(turn_input.turn, turn_input, mode):
            said.append(piece)
            yield piece
        await self.memory.save(self.ctx.call_id, state, {"turn": turn_input.turn, "agent": state.agent,
                                                         "caller": turn_input.text, "bot": "".join(said).strip()})

    def _restore_history(self, turns: list[dict[str, Any]]) -> None:
        """The conversation of a call resumed here, from its saved turns (what the bot meant to
        say: how much was heard stayed with the worker that played it); the call's turn ids go
        on from the last one."""
        last = 0
        for saved in turns:
            number = int(saved.get("turn") or 0)
            last = max(last, number)
            self.conversation.add_user(str(saved.get("caller", "")), number)
            if saved.get("bot"):
                self.conversation.begin_bot(number)
                self.conversation.bot_text_queued(number, str(saved["bot"]))
                self.conversation.end_bot(number)
        self.ctx.turn = max(self.ctx.turn, last)

    async def _run(self, turn: int, turn_input: TurnInput | None,
                   mode: Literal["enter", "respond"]) -> AsyncIterator[str]:
        """The agent in charge (and those it hands off to) for one turn, screened."""
        assert self.registry is not None and self.engine is not None and self.tool_runner is not None
        registry, engine, tools, state = self.registry, self.engine, self.tool_runner, self.agent_state
        self.live_turn = turn
        tools.begin(turn)
        screen = ReplyScreen()
        seen = {state.agent}
        filler_said = False
        first = True
        while True:
            agent = registry.get(state.agent)
            if isinstance(engine, LLMEngine):
                screen.system_prompt = self.system_prompt(agent, state)
            source = (engine.respond(agent, turn_input, state, tools) if mode == "respond" and turn_input is not None
                      else engine.enter(agent, state, tools))
            reply: Reply | None = None
            boundary = not first
            iterator = aiter(source)
            while True:
                step = asyncio.ensure_future(anext(iterator))
                try:
                    if not filler_said and self.settings.filler.strip():
                        slow = asyncio.ensure_future(tools.slow.wait())
                        try:
                            await asyncio.wait((step, slow), return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            slow.cancel()
                        if not step.done():
                            filler_said = True
                            yield screen.feed((" " if not first else "") + self.settings.filler.strip() + " ")
                            first = False
                    item = await step
                except StopAsyncIteration:
                    break
                finally:
                    if not step.done():
                        step.cancel()
                        await asyncio.gather(step, return_exceptions=True)
                if isinstance(item, Reply):
                    reply = item
                    break
                piece = (" " + item if boundary and item[:1] not in (" ", "") else item)
                boundary = False
                out = screen.feed(piece)
                first = False
                if out:
                    yield out
            await _close(iterator)
            if reply is not None and reply.text:
                out = screen.feed(reply.text if first or reply.text[:1] == " " else " " + reply.text)
                first = False
                if out:
                    yield out
            action = (reply.action, "") if reply is not None and reply.action else tools.action
            if action is not None:
                self.emit(CallAction(action=action[0], reason=action[1], agent=state.agent, turn=turn))
                break
            if reply is None or not reply.handoff:
                break
            target = reply.handoff
            if target in seen:
                raise ServiceError(f"handoff loop in turn {turn}: {state.agent} -> {target}, which already had "
                                   "the call this turn")
            if len(seen) > self.settings.max_handoffs:
                raise ServiceError(f"more than {self.settings.max_handoffs} handoffs in turn {turn}")
            self._switch(target, f"handoff from {state.agent}", announced=reply.announce,
                         share=self.settings.share_context and reply.share_context, turn=turn)
            seen.add(target)
            mode = "enter" if reply.announce else "respond"
        rest = screen.finish()
        if rest:
            yield rest
        for flag in screen.flags:
            self.emit(SafetyFlag(flag=flag.kind, matched=flag.matched, source=flag.source, turn=turn))

    def _switch(self, target: str, reason: str, *, announced: bool, share: bool, turn: int) -> None:
        assert self.registry is not None and self.scenario is not None
        if target not in self.scenario.agents:
            raise ServiceError(f"{self.agent_state.agent} handed off to {target!r}, which is not an agent of scenario "
                               f"{self.scenario.name} ({', '.join(self.scenario.agents)})")
        spec = self.registry.get(target)
        state = self.agent_state
        if state.agent == self.scenario.entry:
            state.memory["entry_done"] = True
        if not share:
            state.slots.clear()
            keep: dict[str, Any] = {k: state.memory[k] for k in ("entry_done", "intent") if k in state.memory}
            state.memory.clear()
            state.memory.update(keep, context_from=turn)
        self.emit(AgentSwitch(agent_from=state.agent, agent_to=target, reason=reason, announced=announced, turn=turn,
                              voice=spec.voice, phrases=spec.phrases))
        logger.info("call %s turn %d: %s -> %s (%s)", self.ctx.call_id, turn, state.agent, target, reason)
        state.agent = target


async def _close(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
