"""The model router: named routes of ordered deployments, rules choosing the route per turn,
failover within the turn, and a circuit breaker per deployment.

``config/models.yaml`` (parsed once by :func:`load_models` into :class:`ModelsConfig`)::

    deployments:
      azure-gpt-4o:
        kind: azure                       # or openai: any OpenAI-compatible server
        model: gpt-4o                     # the model, or Azure's deployment name
        base_url_env: AZURE_OPENAI_ENDPOINT
        api_key_env: AZURE_OPENAI_API_KEY
        api_version: "2024-10-21"
        first_token_timeout_ms: 2000
        total_timeout_ms: 20000
    routes:
      fast: [azure-gpt-4o-mini, local]    # tried in this order
      reasoning: [azure-o1, azure-gpt-4o]
    default_route: fast
    rules:                                # first match wins; no match: default_route
      - {when: {agent: legal}, route: reasoning}
      - {when: {tools: true, min_chars: 200}, route: reasoning}
    breaker: {failures: 3, window_ms: 60000, cooldown_ms: 30000}

A rule's ``when`` lists conditions that must all hold: ``agent`` and ``intent`` (a name or
a list of names), ``tools`` (the turn offers tools, or not), ``min_chars``/``max_chars``
(the length of what the caller said). Nothing else picks a route.

Within one turn, :meth:`ModelRouter.open` tries the route's deployments in order until
one produces its first token (text, a tool call, or the end). It moves on after a 429
(the deployment is skipped until its ``retry-after`` has passed, for every call of the
worker), any other HTTP error status, a connection error, or no first token within the
deployment's ``first_token_timeout_ms`` on the call's clock (the abandoned stream is
closed). Once a token has been produced the turn stays on that deployment: words
already spoken cannot be taken back, so a later failure is the brain's to recover from
(its apology). 5xx, connection errors and first-token timeouts also count towards the
deployment's breaker: ``failures`` within ``window_ms`` open it, and it is skipped for
``cooldown_ms``; then one turn tries it again (half-open): success closes the breaker,
a failure opens it for another cool-down. Breakers and ``retry-after`` live on the
router's own clock and are shared by every call using the router.

Every turn gets a :class:`RouteRecord`: the route and the rule that chose it, the
deployment that served it, and each deployment passed over with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import openai

from pipeline.clock import Clock, MonotonicClock
from pipeline.config import load_yaml
from pipeline.errors import ConfigError, ServiceError
from pipeline.settings import Doc, Range, coerce_settings

from .openai_chat import ChatStream, Delta, Endpoint, EndpointNotConfigured, client_for, open_stream

__all__ = [
    "BreakerSettings",
    "DeploymentSpec",
    "Failover",
    "ModelRouter",
    "ModelsConfig",
    "NoDeploymentAnswered",
    "RouteRecord",
    "RouteRule",
    "RoutedStream",
    "TurnFeatures",
    "load_models",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DeploymentSpec:
    """One model deployment: where it is, what it is called, how long it may take."""

    kind: Annotated[Literal["openai", "azure"], Doc("openai: any OpenAI-compatible server; azure: Azure OpenAI")]
    model: Annotated[str, Doc("the model name, or the Azure deployment name")]
    model_env: Annotated[str, Doc("environment variable that overrides model, if set")] = ""
    base_url: Annotated[str, Doc("the base URL (OpenAI: .../v1; Azure: the resource endpoint)")] = ""
    base_url_env: Annotated[str, Doc("environment variable holding the base URL (wins over base_url)")] = ""
    api_key_env: Annotated[str, Doc("environment variable holding the API key (keys never live in YAML)")] = ""
    api_version: Annotated[str, Doc("Azure OpenAI API version")] = "2024-10-21"
    api_version_env: Annotated[str, Doc("environment variable overriding api_version")] = ""
    auth: Annotated[Literal["key", "entra"], Doc("Azure: an API key, or Entra ID (azure-identity)")] = "key"
    first_token_timeout_ms: Annotated[float, Range(gt=0, le=600_000), Doc(
        "no first token by then: fail over to the next deployment")] = 3000.0
    total_timeout_ms: Annotated[float, Range(gt=0, le=3_600_000), Doc(
        "the whole answer (each tool round) must be done by then")] = 30_000.0

    def endpoint(self, env: Mapping[str, str]) -> Endpoint:
        return Endpoint.resolve(kind=self.kind, base_url=self.base_url, base_url_env=self.base_url_env,
                                api_key_env=self.api_key_env, api_version=self.api_version,
                                api_version_env=self.api_version_env, auth=self.auth, env=env)

    def model_name(self, env: Mapping[str, str]) -> str:
        return (env.get(self.model_env, "") if self.model_env else "") or self.model


@dataclass(frozen=True, kw_only=True)
class BreakerSettings:
    """When a failing deployment is taken out of rotation, and for how long."""

    failures: Annotated[int, Range(ge=1), Doc("failures within window_ms that open the breaker")] = 3
    window_ms: Annotated[float, Range(gt=0), Doc("the window failures are counted in")] = 60_000.0
    cooldown_ms: Annotated[float, Range(gt=0), Doc("how long an open breaker skips the deployment")] = 30_000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnFeatures:
    """What a route rule may look at."""

    agent: str = ""
    intent: str = ""
    tools: bool = False
    chars: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRule:
    """``when`` all these hold (None: any), use ``route``; ``line`` is where it is written."""

    route: str
    agents: frozenset[str] | None = None
    intents: frozenset[str] | None = None
    tools: bool | None = None
    min_chars: int | None = None
    max_chars: int | None = None
    line: int = 0

    def matches(self, f: TurnFeatures) -> bool:
        return ((self.agents is None or f.agent in self.agents)
                and (self.intents is None or f.intent in self.intents)
                and (self.tools is None or f.tools == self.tools)
                and (self.min_chars is None or f.chars >= self.min_chars)
                and (self.max_chars is None or f.chars <= self.max_chars))

    def describe(self) -> str:
        parts = [f"{k}={sorted(v) if isinstance(v, frozenset) else v}" for k, v in
                 (("agent", self.agents), ("intent", self.intents), ("tools", self.tools),
                  ("min_chars", self.min_chars), ("max_chars", self.max_chars)) if v is not None]
        return f"rule at line {self.line}: " + (", ".join(parts) or "always")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelsConfig:
    """A parsed, checked ``models.yaml``."""

    deployments: Mapping[str, DeploymentSpec]
    routes: Mapping[str, tuple[str, ...]]
    default_route: str
    rules: tuple[RouteRule, ...] = ()
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    file: str = ""

    def choose(self, features: TurnFeatures) -> tuple[str, str]:
        """(route, why) for a turn with ``features``."""
        for rule in self.rules:
            if rule.matches(features):
                return rule.route, rule.describe()
        return self.default_route, "default route"


# --- loading --------------------------------------------------------------------------------

_TOP = ("deployments", "routes", "default_route", "rules", "breaker")
_WHEN = ("agent", "intent", "tools", "min_chars", "max_chars")


def load_models(path: str | Path) -> ModelsConfig:
    """Parse and check a models file; every problem is a ``ConfigError`` naming file, line and key."""
    file = str(path)
    data = load_yaml(path)
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mapping with deployments, routes, default_route, rules, breaker", file=file)
    line = _lines(data)
    for key in data:
        if key not in _TOP:
            raise ConfigError(f"unknown key '{key}' (keys: {', '.join(_TOP)})", file=file, line=line(key))
    raw_deps = data.get("deployments")
    if not isinstance(raw_deps, Mapping) or not raw_deps:
        raise ConfigError("'deployments' must be a non-empty mapping of name -> settings", file=file,
                          line=line("deployments"))
    deployments: dict[str, DeploymentSpec] = {}
    dep_line = _lines(raw_deps)
    for name, raw in raw_deps.items():
        if not isinstance(raw, Mapping):
            raise ConfigError(f"deployments.{name}: expected a mapping of settings", file=file, line=dep_line(name))
        try:
            deployments[name] = coerce_settings(DeploymentSpec, raw, file=file, lines=getattr(raw, "key_lines", {}),
                                                default_line=dep_line(name) or 0)
        except ConfigError as exc:
            raise ConfigError(f"deployments.{name}: {exc.reason}", file=file, line=exc.line) from None
    raw_routes = data.get("routes")
    if not isinstance(raw_routes, Mapping) or not raw_routes:
        raise ConfigError("'routes' must be a non-empty mapping of name -> list of deployments", file=file,
                          line=line("routes"))
    routes: dict[str, tuple[str, ...]] = {}
    route_line = _lines(raw_routes)
    for name, names in raw_routes.items():
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"routes.{name}: expected a non-empty list of deployment names", file=file,
                              line=route_line(name))
        for n in names:
            if n not in deployments:
                raise ConfigError(f"routes.{name}: unknown deployment '{n}' (deployments: "
                                  f"{', '.join(sorted(deployments))})", file=file, line=route_line(name))
        routes[name] = tuple(names)
    default = data.get("default_route", next(iter(routes)))
    if default not in routes:
        raise ConfigError(f"default_route: unknown route {default!r} (routes: {', '.join(routes)})", file=file,
                          line=line("default_route"))
    rules = _rules(data.get("rules") or [], routes, file, line("rules"))
    raw_breaker = data.get("breaker") or {}
    if not isinstance(raw_breaker, Mapping):
        raise ConfigError("breaker: expected a mapping", file=file, line=line("breaker"))
    try:
        breaker = coerce_settings(BreakerSettings, raw_breaker, file=file,
                                  lines=getattr(raw_breaker, "key_lines", {}), default_line=line("breaker") or 0)
    except ConfigError as exc:
        raise ConfigError(f"breaker: {exc.reason}", file=file, line=exc.line) from None
    return ModelsConfig(deployments=deployments, routes=routes, default_route=default, rules=rules, breaker=breaker,
                        file=file)


def _rules(raw: Any, routes: Mapping[str, Any], file: str, at: int | None) -> tuple[RouteRule, ...]:
    if not isinstance(raw, list):
        raise ConfigError("'rules' must be a list of {when, route}", file=file, line=at)
    out = []
    lines = getattr(raw, "item_lines", [at] * len(raw))
    for i, item in enumerate(raw):
        where, ln = f"rules[{i}]", lines[i]
        if not isinstance(item, Mapping) or set(item) - {"when", "route"} or "route" not in item:
            raise ConfigError(f"{where}: expected {{when: {{...}}, route: NAME}}", file=file, line=ln)
        if item["route"] not in routes:
            raise ConfigError(f"{where}: unknown route {item['route']!r} (routes: {', '.join(routes)})", file=file,
                              line=ln)
        when = item.get("when") or {}
        if not isinstance(when, Mapping) or set(when) - set(_WHEN):
            raise ConfigError(f"{where}.when: conditions are {', '.join(_WHEN)}", file=file, line=ln)
        values: dict[str, Any] = {}
        for key in ("agent", "intent"):
            if key in when:
                names = when[key] if isinstance(when[key], list) else [when[key]]
                if not all(isinstance(n, str) and n for n in names):
                    raise ConfigError(f"{where}.when.{key}: expected a name or a list of names", file=file, line=ln)
                values[key + "s"] = frozenset(names)
        if "tools" in when:
            if not isinstance(when["tools"], bool):
                raise ConfigError(f"{where}.when.tools: expected true or false", file=file, line=ln)
            values["tools"] = when["tools"]
        for key in ("min_chars", "max_chars"):
            if key in when:
                if not isinstance(when[key], int) or isinstance(when[key], bool) or when[key] < 0:
                    raise ConfigError(f"{where}.when.{key}: expected a whole number >= 0", file=file, line=ln)
                values[key] = when[key]
        out.append(RouteRule(route=item["route"], line=ln or 0, **values))
    return tuple(out)


def _lines(mapping: Any) -> Any:
    return lambda key: getattr(mapping, "line_of", lambda _k: None)(key)


# --- routing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failover:
    """A deployment passed over in a turn, and why."""

    deployment: str
    reason: str


@dataclass(slots=True, kw_only=True)
class RouteRecord:
    """How one model request of a turn was routed."""

    route: str
    why: str
    deployment: str = ""
    model: str = ""
    failovers: list[Failover] = field(default_factory=list)
    first_token_ms: float | None = None  # from the request to the first token, on the call's clock


class NoDeploymentAnswered(ServiceError):
    """Every deployment of the route failed or was skipped; ``record`` says why."""

    def __init__(self, record: RouteRecord) -> None:
        self.record = record
        reasons = "; ".join(f"{f.deployment}: {f.reason}" for f in record.failovers)
        super().__init__(f"route {record.route!r}: no deployment answered ({reasons})")


@dataclass(slots=True)
class _Health:
    failures: deque[int] = field(default_factory=deque)  # times, ns on the router's clock
    open_until: int = 0
    half_open: bool = False
    skip_until: int = 0  # retry-after


class _Failed(Exception):
    def __init__(self, reason: str, *, breaker: bool, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.breaker, self.retry_after_s = reason, breaker, retry_after_s


class RoutedStream:
    """The deltas of the deployment that won a turn, its first one included.

    Iterate it once; :meth:`aclose` closes the HTTP stream (also when abandoned early).
    """

    def __init__(self, stream: ChatStream, first: Delta, *, clock: Clock, deadline_ns: int, name: str) -> None:
        self.stream, self._clock, self._deadline, self._name = stream, clock, deadline_ns, name
        self._first: Delta | None = first

    def __aiter__(self) -> RoutedStream:
        return self

    async def __anext__(self) -> Delta:
        first = self._first
        if first is not None:
            self._first = None
            return first
        delta = await self.stream.__anext__()
        if self._clock.now_ns() > self._deadline:
            raise ServiceError(f"deployment {self._name!r}: answer not finished within its total timeout")
        return delta

    async def aclose(self) -> None:
        """Close the HTTP stream (dropping the connection if it is unfinished)."""
        await self.stream.aclose()


class ModelRouter:
    """Routes turns to deployments (see module docstring); one per worker, shared by calls.

    Args:
        config: the parsed models file.
        clock: the clock of breakers and ``retry-after`` (a virtual one in tests).
        env: where endpoints and keys are read (default ``os.environ``), once, here.
    """

    def __init__(self, config: ModelsConfig, *, clock: Clock | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or MonotonicClock()
        env = os.environ if env is None else env
        self._endpoints: dict[str, Endpoint | str] = {}  # name -> endpoint, or why it is not configured
        self._models: dict[str, str] = {}
        for name, spec in config.deployments.items():
            self._models[name] = spec.model_name(env)
            try:
                self._endpoints[name] = spec.endpoint(env)
            except EndpointNotConfigured as exc:
                self._endpoints[name] = f"not configured: {exc}"
        self._health = {name: _Health() for name in config.deployments}

    def choose(self, features: TurnFeatures) -> RouteRecord:
        """A new record for a turn: the route its rules pick, and why."""
        route, why = self.config.choose(features)
        return RouteRecord(route=route, why=why)

    def skip_reason(self, name: str) -> str | None:
        """Why ``name`` is not tried now (None: it is)."""
        endpoint = self._endpoints[name]
        if isinstance(endpoint, str):
            return endpoint
        health, now = self._health[name], self.clock.now_ns()
        if now < health.skip_until:
            return f"rate limited for {(health.skip_until - now) / 1e9:.1f} s more (retry-after)"
        if health.open_until:
            if now < health.open_until:
                return f"circuit open for {(health.open_until - now) / 1e9:.1f} s more"
            health.open_until, health.half_open = 0, True  # cool-down over: one turn may try it
        return None

    async def open(self, record: RouteRecord, messages: Sequence[Mapping[str, Any]], *, clock: Clock,
                   tools: Sequence[Mapping[str, Any]] = (), temperature: float | None = None,
                   max_tokens: int | None = None) -> RoutedStream:
        """The stream of the first deployment of ``record.route`` to produce a token.

        ``clock`` is the call's (first-token timeouts). Fills ``record``; raises
        :class:`NoDeploymentAnswered` when none did.
        """
        for name in self.config.routes[record.route]:
            skip = self.skip_reason(name)
            if skip is not None:
                record.failovers.append(Failover(name, skip))
                continue
            spec, endpoint = self.config.deployments[name], self._endpoints[name]
            assert isinstance(endpoint, Endpoint)
            started = clock.now_ns()
            try:
                stream, first = await self._first_token(endpoint, spec, self._models[name], messages, clock, tools,
                                                        temperature, max_tokens)
            except _Failed as failed:
                self._failed(name, failed)
                record.failovers.append(Failover(name, failed.reason))
                logger.warning("router: %s failed (%s); route %s falls over", name, failed.reason, record.route)
                continue
            self._succeeded(name)
            record.deployment, record.model = name, self._models[name]
            record.first_token_ms = (clock.now_ns() - started) / 1e6
            return RoutedStream(stream, first, clock=clock, name=name,
                                deadline_ns=started + int(spec.total_timeout_ms * 1e6))
        raise NoDeploymentAnswered(record)

    async def _first_token(self, endpoint: Endpoint, spec: DeploymentSpec, model: str,
                           messages: Sequence[Mapping[str, Any]], clock: Clock, tools: Sequence[Mapping[str, Any]],
                           temperature: float | None, max_tokens: int | None) -> tuple[ChatStream, Delta]:
        async def first() -> tuple[ChatStream, Delta]:
            client = await client_for(endpoint)
            # The SDK's read timeout catches a stream that stalls between tokens.
            timeout = openai.Timeout(spec.total_timeout_ms / 1000, read=spec.first_token_timeout_ms / 1000)
            stream = await open_stream(client, model=model, messages=messages, tools=tools, temperature=temperature,
                                       max_tokens=max_tokens, timeout=timeout)
            try:
                return stream, await anext(stream)
            except BaseException:
                await stream.aclose()
                raise

        attempt = asyncio.ensure_future(first())
        timer = asyncio.ensure_future(clock.sleep_until(clock.now_ns() + int(spec.first_token_timeout_ms * 1e6)))
        try:
            await asyncio.wait((attempt, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not attempt.done():
                attempt.cancel()  # closes the stream if it was open
            await asyncio.gather(attempt, timer, return_exceptions=True)
        if attempt.cancelled():
            raise _Failed(f"no first token within {spec.first_token_timeout_ms:g} ms", breaker=True)
        exc = attempt.exception()
        if exc is None:
            return attempt.result()
        raise _classify(exc) from exc

    def _failed(self, name: str, failed: _Failed) -> None:
        health, now = self._health[name], self.clock.now_ns()
        if failed.retry_after_s is not None:
            health.skip_until = now + int(failed.retry_after_s * 1e9)
        if not failed.breaker:
            return
        settings = self.config.breaker
        health.failures.append(now)
        while health.failures and health.failures[0] < now - int(settings.window_ms * 1e6):
            health.failures.popleft()
        if health.half_open or len(health.failures) >= settings.failures:
            health.open_until = now + int(settings.cooldown_ms * 1e6)
            health.half_open = False
            health.failures.clear()
            logger.warning("router: circuit of %s open for %g ms", name, settings.cooldown_ms)

    def _succeeded(self, name: str) -> None:
        health = self._health[name]
        health.failures.clear()
        health.half_open = False


def _classify(exc: BaseException) -> _Failed:
    """Why a deployment failed, and what it means for it."""
    if isinstance(exc, openai.RateLimitError):
        retry = _retry_after(exc.response.headers)
        return _Failed(f"HTTP 429 (retry after {retry:g} s)", breaker=False, retry_after_s=retry)
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else None
        text = message if isinstance(message, str) else exc.message
        return _Failed(f"HTTP {exc.status_code}: {text[:120]}", breaker=exc.status_code >= 500)
    if isinstance(exc, openai.APIConnectionError):
        return _Failed(f"{type(exc).__name__}: {exc.message}", breaker=True)
    if isinstance(exc, StopAsyncIteration):
        return _Failed("the stream ended without a token", breaker=True)
    if isinstance(exc, EndpointNotConfigured):
        return _Failed(f"not configured: {exc}", breaker=False)
    return _Failed(f"{type(exc).__name__}: {exc}", breaker=True)


def _retry_after(headers: Mapping[str, str]) -> float:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (1 s when neither is a number)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name, ""))
        except ValueError:
            continue
        if 0 <= value < float("inf"):
            return value / scale
    return 1.0
