"""LLMBrain (``use: llm``): the streaming LLM brain on the model router and the ``openai`` SDK.

Each caller turn becomes a chat request: the system prompt plus the conversation *as the
caller heard it* (``Conversation.messages()``, kept by :class:`BrainProcessor`). The
router picks the route (``route`` fixed in the settings, else the rules of the models
file on :meth:`LLMBrain.features`) and the first deployment that produces a token; text
pieces leave as ``LLMToken``s the moment they arrive (sentence aggregation is
downstream).

Tools: when the model calls tools, the calls are assembled from the streamed deltas,
run (all calls of a round at once, each within its timeout on the call's clock), and
their results sent back in a new request of the same turn, at most ``max_tool_rounds``
times; the last round offers no tools, so the model has to answer. If the tools of a
round are not done after ``filler_after_ms``, the ``filler`` is spoken meanwhile. The
tool exchanges stay within the turn: the history keeps what the caller heard.

Interruption: a barge-in (``FlushStart``) abandons the stream the moment it happens
(``BrainProcessor`` iterates ``respond()`` through ``interruptible()``); closing this
generator closes the SDK stream, which drops the HTTP connection, so the server stops
generating; a running tool is cancelled. The history then keeps the heard part only.

Recovery: an empty reply, tool-call arguments that are not a JSON object, no
deployment answering (errors, hangs past the first-token timeout), a stream failing
mid-way: the error is reported and the caller hears the brain's ``apology``; the turn
always ends.

Per model request, a ``ModelTurn`` event says which route and deployment answered, why,
what was passed over, the time to first token and the usage; ``MetricsEvent``s carry
``llm_ttft`` (ms) and the token counts; each tool run is a ``ToolCall`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pipeline.errors import ConfigError, ServiceError
from pipeline.frames import MetricsEvent, ModelTurn, ToolCall
from pipeline.settings import Doc, Range

from .brain import BrainProcessor, BrainSettings
from .router import ModelRouter, NoDeploymentAnswered, RoutedStream, RouteRecord, TurnFeatures, load_models
from .tools import Tool, ToolCallRequest, ToolOutcome, parse_arguments, run_tool, tool_schema

__all__ = ["EmptyReply", "LLMBrain", "LLMBrainSettings", "ModelRequest", "shared_router"]

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]


class EmptyReply(ServiceError):
    """The model answered with neither text nor a tool call."""


@dataclass(slots=True)
class ModelRequest:
    """What one request of a tool loop got back (filled by :meth:`LLMBrain.ask_model`)."""

    said: list[str] = field(default_factory=list)
    calls: list[ToolCallRequest] = field(default_factory=list)
    deployment: str = ""

    def assistant_message(self) -> dict[str, Any]:
        """The assistant's message asking for the tool calls, for the next request."""
        return {"role": "assistant", "content": "".join(self.said) or None,
                "tool_calls": [call.message() for call in self.calls]}


@dataclass(frozen=True, kw_only=True)
class LLMBrainSettings(BrainSettings):
    """The LLM brain's prompt, models and tool policy (plus the ``greeting`` and ``apology``)."""

    system_prompt: Annotated[str, Doc("the system message of every request")] = (
        "You are a helpful voice assistant on a phone call. Answer in one to three short spoken sentences, "
        "without markup, lists or emojis.")
    models: Annotated[str, Doc("the models file (routes, deployments, rules); relative: to the working "
                               "folder, else to the project")] = "config/models.yaml"
    route: Annotated[str, Doc("always use this route (blank: the models file's rules choose per turn)")] = ""
    agent: Annotated[str, Doc("the agent name route rules see")] = ""
    max_tool_rounds: Annotated[int, Range(ge=0, le=16), Doc("tool-call rounds per turn before the model must "
                                                           "answer")] = 4
    tool_timeout_ms: Annotated[float, Range(gt=0), Doc("a tool's time limit unless the tool sets its own")] = 8000.0
    filler_after_ms: Annotated[float, Range(ge=0), Doc("tools still running after this long: say the filler")] = (
        1500.0)
    filler: Annotated[str, Doc("said while slow tools run (blank: silence)")] = "One moment please."
    temperature: Annotated[float | None, Range(ge=0, le=2), Doc("sampling temperature (null: the model's)")] = None
    max_tokens: Annotated[int | None, Range(ge=1), Doc("longest answer per request, in tokens (null: no limit)")] = (
        None)


_routers: dict[str, asyncio.Future[ModelRouter]] = {}


async def shared_router(path: str | Path) -> ModelRouter:
    """The worker's router for the models file at ``path``, loaded once off the loop."""
    resolved = _resolve(str(path))
    made = _routers.get(resolved)
    if made is None:
        made = _routers[resolved] = asyncio.ensure_future(
            asyncio.to_thread(lambda: ModelRouter(load_models(resolved))))
    try:
        return await asyncio.shield(made)
    except Exception:
        _routers.pop(resolved, None)  # a fixed file is read again by the next call
        raise


def _resolve(path: str) -> str:
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return str(candidate)
    return str(_REPO / candidate)


class LLMBrain(BrainProcessor):
    """Answers with a streaming LLM through the model router (see module docstring).

    For agents built on it: ``tools`` (name -> :class:`~processors.llm.tools.Tool`) are
    offered on every turn; ``router`` may be set before the call starts (else the
    worker's shared router for ``settings.models``); override :meth:`features` to give
    the route rules an intent; ``conversation.system_prompt`` may change between turns.
    """

    Settings = LLMBrainSettings
    settings: LLMBrainSettings

    def __init__(self, settings: LLMBrainSettings | None = None, *, name: str | None = None,
                 tools: Iterable[Tool] = ()) -> None:
        super().__init__(settings, name=name)
        self.conversation.system_prompt = self.settings.system_prompt or None
        self.tools: dict[str, Tool] = {tool.name: tool for tool in tools}
        self.router: ModelRouter | None = None

    async def setup(self) -> None:
        if self.router is None:
            self.router = await shared_router(self.settings.models)
        route = self.settings.route
        if route and route not in self.router.config.routes:
            raise ConfigError(f"route {route!r} is not in {self.router.config.file} "
                              f"(routes: {', '.join(self.router.config.routes)})", node=self.name)

    def features(self, text: str) -> TurnFeatures:
        """What the route rules see of this turn (agents add the intent)."""
        return TurnFeatures(agent=self.settings.agent, tools=bool(self.tools), chars=len(text))

    def respond(self, text: str, turn: int) -> AsyncIterator[str]:
        return self._answer(text, turn)

    async def _answer(self, text: str, turn: int) -> AsyncIterator[str]:
        settings = self.settings
        schemas = [tool_schema(tool) for tool in self.tools.values()]
        messages: list[dict[str, Any]] = list(self.conversation.messages())
        features = self.features(text)
        spoken = False
        for round_ in range(settings.max_tool_rounds + 1):
            offered = schemas if round_ < settings.max_tool_rounds else []
            request = ModelRequest()
            route = (settings.route, "fixed by the node's settings") if settings.route else None
            async with contextlib.aclosing(self.ask_model(request, turn, features, messages, offered,
                                                          route=route)) as pieces:
                async for piece in pieces:
                    yield piece
            said, calls = request.said, request.calls
            if not calls:
                if not said and not spoken:
                    raise EmptyReply(f"deployment {request.deployment!r} answered with no text and no tool call")
                return
            spoken = spoken or bool(said)
            if not offered:
                raise ServiceError(f"the model still calls tools after {settings.max_tool_rounds} rounds")
            arguments = [parse_arguments(call) for call in calls]
            messages.append(request.assistant_message())
            timeout_s = settings.tool_timeout_ms / 1000
            work = asyncio.ensure_future(asyncio.gather(*(
                run_tool(self.tools.get(call.name), call, args, clock=self.ctx.clock, timeout_s=timeout_s)
                for call, args in zip(calls, arguments, strict=True))))
            try:
                filler = settings.filler.strip()
                if filler and not await self._done_within(work, settings.filler_after_ms):
                    spoken = True
                    yield (" " if said else "") + filler + " "
                outcomes: list[ToolOutcome] = await work
            finally:
                if not work.done():
                    work.cancel()
                    await asyncio.gather(work, return_exceptions=True)
            for outcome in outcomes:
                messages.append({"role": "tool", "tool_call_id": outcome.call.id, "content": outcome.content})
                self.emit(ToolCall(name=outcome.call.name, arguments=outcome.call.arguments,
                                   result="" if outcome.error is not None else outcome.content,
                                   error=outcome.error or "", turn=turn))
        raise ServiceError("unreachable: the last round offers no tools")  # pragma: no cover

    async def ask_model(self, request: ModelRequest, turn: int, features: TurnFeatures,
                        messages: list[dict[str, Any]], tools: list[dict[str, Any]], *,
                        route: tuple[str, str] | None = None) -> AsyncGenerator[str, None]:
        """One request of a turn's tool loop: choose the route (``route``: a fixed one and
        why), stream the answer's text as it comes, report the model turn, and leave the
        text and tool calls in ``request``. Close it (``aclosing``) to close the stream at once."""
        router = self.router
        if router is None:
            raise ServiceError(f"{self.name}: no model router (setup did not run)")
        record = router.choose(features)
        if route is not None:
            record.route, record.why = route
        settings = self.settings
        try:
            routed = await router.open(record, messages, clock=self.ctx.clock, tools=tools,
                                       temperature=settings.temperature, max_tokens=settings.max_tokens)
        except NoDeploymentAnswered:
            self._report(turn, record, None)
            raise
        request.deployment = record.deployment
        try:
            async for delta in routed:
                if delta.text:
                    request.said.append(delta.text)
                    yield delta.text
        finally:
            await routed.aclose()  # at once, also when abandoned: the server stops generating
            self._report(turn, record, routed)
        request.calls = routed.stream.tool_calls.calls()

    async def _done_within(self, work: asyncio.Future[Any], ms: float) -> bool:
        """Wait for ``work`` at most ``ms`` on the call's clock; True if it is done."""
        clock = self.ctx.clock
        timer = asyncio.ensure_future(clock.sleep_until(clock.now_ns() + int(ms * 1e6)))
        try:
            await asyncio.wait((work, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return work.done()

    def _report(self, turn: int, record: RouteRecord, routed: RoutedStream | None) -> None:
        usage = routed.stream.usage if routed is not None else None
        prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        self.emit(ModelTurn(route=record.route, deployment=record.deployment, model=record.model, why=record.why,
                            failovers=tuple(f"{f.deployment}: {f.reason}" for f in record.failovers),
                            first_token_ms=record.first_token_ms, prompt_tokens=prompt,
                            completion_tokens=completion, turn=turn))
        if record.first_token_ms is not None:
            self.emit(MetricsEvent(node=self.name, name="llm_ttft", value=record.first_token_ms, turn=turn))
        if usage is not None:
            self.emit(MetricsEvent(node=self.name, name="llm_prompt_tokens", value=prompt, unit="tokens", turn=turn))
            self.emit(MetricsEvent(node=self.name, name="llm_completion_tokens", value=completion, unit="tokens",
                                   turn=turn))

