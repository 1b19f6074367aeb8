"""The tool store: typed Python functions become tools the LLM and the IVR engine call.

``ToolStore.register(fn)`` (or the :func:`tool` decorator on the default store) reads an
async function's signature and docstring and makes a :class:`StoreTool`, a
:class:`processors.llm.tools.Tool`: the name is the function's, the description the
docstring's first line, and the JSON schema comes from the type hints — ``str``,
``int``, ``float``, ``bool``, ``Literal[...]`` (an ``enum``), ``X | None`` (optional),
``list[X]``. A parameter without a default is required.

Before a call, the arguments are checked against that schema
(:class:`ToolValidationError`, whose message says which argument is wrong and what was
expected, goes back to the model or the IVR engine as ``{"error": ...}``): unknown
arguments, missing required ones, wrong types, values outside an enum. ``int`` accepts
a JSON integer only (a model writing ``"3"`` is told so), ``float`` any number.

Call actions: a tool whose result is a mapping with ``"action": "transfer"`` or
``"hangup"`` (``transfer_to_human``, ``hang_up``) asks the orchestrator to act on the
call (:func:`call_action`).

Helpers for tools: :func:`fetch_json` reads a local JSON file off the event loop;
:class:`HttpAction` calls an HTTP service with a timeout per attempt, retries on
connection errors, 429 and 5xx (with backoff), and one ``Idempotency-Key`` for all the
attempts of one action, so a retried POST is not applied twice.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import types
import typing
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import aiohttp

from pipeline.errors import ConfigError, ServiceError

__all__ = [
    "CALL_ACTIONS",
    "HttpAction",
    "StoreTool",
    "ToolStore",
    "ToolValidationError",
    "call_action",
    "default_store",
    "fetch_json",
    "schema_for",
    "tool",
]

CALL_ACTIONS = frozenset({"transfer", "hangup"})
_JSON_TYPES: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


class ToolValidationError(ServiceError):
    """Tool arguments that do not match the tool's schema."""


def call_action(result: Any) -> str | None:
    """``"transfer"``/``"hangup"`` when a tool's result asks for that call action, else None."""
    if isinstance(result, Mapping):
        action = result.get("action")
        if action in CALL_ACTIONS:
            return str(action)
    return None


def _type_schema(hint: Any, where: str) -> tuple[dict[str, Any], bool]:
    """The JSON schema of a type hint, and whether it allows None."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in get_args(hint) if a is not type(None)]
        if len(members) != 1:
            raise ConfigError(f"{where}: only X | None unions are supported, got {hint}")
        return _type_schema(members[0], where)[0], True
    if origin is Literal:
        values = list(get_args(hint))
        kinds = {type(v) for v in values}
        if len(kinds) != 1 or next(iter(kinds)) not in _JSON_TYPES:
            raise ConfigError(f"{where}: Literal values must all be str, int, float or bool")
        return {"type": _JSON_TYPES[next(iter(kinds))], "enum": values}, False
    if origin is list:
        (item,) = get_args(hint) or (str,)
        return {"type": "array", "items": _type_schema(item, where)[0]}, False
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}, False
    raise ConfigError(f"{where}: unsupported parameter type {hint!r} (str, int, float, bool, Literal, "
                      "X | None, list[X])")


def schema_for(fn: Callable[..., Any]) -> dict[str, Any]:
    """The OpenAI ``parameters`` schema of ``fn``'s typed signature (:class:`ConfigError` if untyped)."""
    name = getattr(fn, "__name__", repr(fn))
    hints = typing.get_type_hints(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool {name}: *args and **kwargs cannot be described to a model")
        if param.name not in hints:
            raise ConfigError(f"tool {name}: parameter {param.name!r} has no type hint")
        schema, nullable = _type_schema(hints[param.name], f"tool {name}, parameter {param.name!r}")
        properties[param.name] = schema
        if param.default is inspect.Parameter.empty and not nullable:
            required.append(param.name)
    out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def _check(value: Any, schema: Mapping[str, Any], where: str) -> None:
    kind = schema.get("type")
    ok = {"string": lambda v: isinstance(v, str),
          "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
          "boolean": lambda v: isinstance(v, bool),
          "array": lambda v: isinstance(v, list)}[str(kind)](value)
    if not ok:
        raise ToolValidationError(f"{where} must be {'an' if str(kind)[0] in 'ai' else 'a'} {kind}, "
                                  f"got {json.dumps(value)}")
    if "enum" in schema and value not in schema["enum"]:
        raise ToolValidationError(f"{where} must be one of {json.dumps(schema['enum'])}, got {json.dumps(value)}")
    if kind == "array":
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{where}[{i}]")


def validate_arguments(name: str, schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` checked against ``schema`` (:class:`ToolValidationError` naming the problem)."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    unknown = sorted(set(arguments) - set(properties))
    if unknown:
        raise ToolValidationError(f"{name}: unknown argument {unknown[0]!r} (arguments: {', '.join(properties)})")
    missing = [key for key in schema.get("required", ()) if arguments.get(key) is None]
    if missing:
        raise ToolValidationError(f"{name}: missing required argument {missing[0]!r}")
    for key, value in arguments.items():
        if value is not None:
            _check(value, properties[key], f"{name}: argument {key!r}")
    return dict(arguments)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreTool:
    """A registered function as an LLM :class:`~processors.llm.tools.Tool`, arguments checked."""

    name: str
    description: str
    fn: Callable[..., Awaitable[Any]]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None
    slow: bool = False  # known to be slow (a filler is expected)

    async def call(self, arguments: Mapping[str, Any]) -> Any:
        checked = validate_arguments(self.name, self.parameters, arguments)
        return await self.fn(**checked)


class ToolStore:
    """Tools by name (see module docstring)."""

    def __init__(self, functions: Iterable[Callable[..., Awaitable[Any]]] = ()) -> None:
        self._tools: dict[str, StoreTool] = {}
        for fn in functions:
            self.register(fn)

    def register(self, fn: Callable[..., Awaitable[Any]], *, name: str | None = None,
                 description: str | None = None, timeout_s: float | None = None) -> StoreTool:
        """Add ``fn`` (an async function with type hints); returns its tool."""
        tool_name = name or fn.__name__
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"tool {tool_name}: must be an async function")
        doc = description if description is not None else (inspect.getdoc(fn) or "").strip().split("\n")[0]
        if not doc:
            raise ConfigError(f"tool {tool_name}: needs a description (the docstring's first line)")
        made = StoreTool(name=tool_name, description=doc, fn=fn, parameters=schema_for(fn), timeout_s=timeout_s)
        self._tools[tool_name] = made
        return made

    def get(self, name: str) -> StoreTool | None:
        """The tool called ``name``, or None."""
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._tools)


_default: ToolStore | None = None
_default_lock = threading.Lock()


def default_store() -> ToolStore:
    """The worker's store: what :func:`tool` registered, plus ``agents.tools.domain.DOMAIN_TOOLS``.

    Graphs are built in threads (the readiness check, a call's graph): the store is made
    under a lock and published only once every tool is in it, so no thread sees it half full.
    """
    global _default
    if _default is not None:
        return _default
    with _default_lock:
        if _default is None:
            store = ToolStore()
            try:
                from agents.tools.domain import DOMAIN_TOOLS  # type: ignore[import-not-found,unused-ignore]
            except ImportError:  # the shipped domain tools are optional for the runtime
                DOMAIN_TOOLS = []
            for fn in DOMAIN_TOOLS:
                store.register(fn)
            _default = store
        return _default


def tool(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Decorator: register ``fn`` on the default store; ``fn`` is returned unchanged."""
    default_store().register(fn)
    return fn


async def fetch_json(path: str | Path) -> Any:
    """A local JSON document, read and parsed off the event loop."""
    return await asyncio.to_thread(lambda: json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass(frozen=True, kw_only=True)
class HttpAction:
    """An HTTP call with a timeout per attempt, retries and an idempotency key (module docstring)."""

    url: str
    method: str = "POST"
    timeout_s: float = 3.0
    attempts: int = 3
    backoff_s: float = 0.2  # doubled after each failed attempt
    headers: Mapping[str, str] = field(default_factory=dict)

    async def __call__(self, payload: Any = None, *, session: aiohttp.ClientSession | None = None,
                       idempotency_key: str | None = None) -> Any:
        """The JSON (or text) response; :class:`ServiceError` after the last failed attempt."""
        key = idempotency_key or uuid.uuid4().hex
        headers = {**self.headers, "Idempotency-Key": key}
        own = session is None
        client = session or aiohttp.ClientSession()
        problem = ""
        try:
            for attempt in range(self.attempts):
                if attempt:
                    await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
                try:
                    async with client.request(self.method, self.url, json=payload, headers=headers,
                                              timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as response:
                        if response.status == 429 or response.status >= 500:
                            problem = f"HTTP {response.status}"
                            continue
                        if response.status >= 400:
                            raise ServiceError(f"{self.method} {self.url}: HTTP {response.status}: "
                                               f"{(await response.text())[:200]}")
                        if response.content_type == "application/json":
                            return await response.json()
                        return await response.text()
                except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                    problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            if own:
                await client.close()
        raise ServiceError(f"{self.method} {self.url}: failed after {self.attempts} attempts ({problem})")
