"""The agent registry: ``config/agents/*.yaml`` loaded, checked, rendered and hot-reloaded.

Loading (blocking; :meth:`AgentRegistry.refresh` runs it in a thread):

* every ``*.yaml`` but ``base.yaml`` is an agent; ``base.yaml`` holds the defaults every
  agent inherits; ``extends: other`` inherits from ``other.yaml`` instead (which itself
  inherits from base). Mappings merge deeply, the child winning; lists and text are
  replaced. An ``extends`` cycle is an error.
* the merged mapping becomes an :class:`~agents.spec.AgentSpec`; its prompt is compiled
  as a Jinja2 template (sandboxed), rendered per turn by :meth:`AgentRegistry.prompt`
  with ``caller``, ``slots``, ``agent``, ``scenario`` and ``now``.
* cross-checks: every tool is in the tool store; every handoff target is an agent and
  not the agent itself; the ``flow`` passes the IVR engine's ``validate_flow(flow, file)``.

Each problem is an :class:`~agents.spec.AgentFileError` naming the file and the line of
the offending key. One broken file never stops the others from loading.

Health: :meth:`AgentRegistry.health` says per agent ``loaded`` or ``error`` (with the
error), and whether an older version is still serving.

Hot reload: :meth:`AgentRegistry.refresh` compares the folder's names, sizes and mtimes
(one ``os.scandir``, in a thread) with the last load, at most every ``poll_s`` seconds,
and reloads when they changed. The orchestrator calls it at the start of every turn,
so a changed or added agent takes effect at the next turn of every live call. A file
that fails to load is rejected and the agent's previous version keeps serving (its
health says ``error`` with the reason). A turn already running keeps the spec it
started with: specs are immutable, and the registry swaps whole snapshots.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from pipeline.errors import ConfigError

from .spec import AgentFileError, AgentSpec, load_yaml, parse_agent
from .tools.store import ToolStore, default_store

__all__ = ["AgentHealth", "AgentRegistry", "FlowValidator", "ivr_flow_validator", "shared_registry"]

logger = logging.getLogger(__name__)

FlowValidator = Callable[[Mapping[str, Any], str], list[str]]
Stamp = tuple[tuple[str, int, int], ...]
BASE = "base"


def ivr_flow_validator() -> FlowValidator | None:
    """The IVR engine's ``validate_flow`` when the engine is installed, else None."""
    try:
        from agents.ivr import validate_flow  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    return validate_flow  # type: ignore[no-any-return,unused-ignore]


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """How an agent's file loaded: ``status`` is ``loaded`` or ``error``; ``serving`` says
    whether a version of it (an older one, after an error) answers calls."""

    name: str
    file: str
    status: str
    error: str = ""
    serving: bool = True


@dataclass(frozen=True, slots=True)
class _Loaded:
    spec: AgentSpec
    template: jinja2.Template


_env = SandboxedEnvironment(undefined=jinja2.ChainableUndefined, autoescape=False, keep_trailing_newline=False)


def _merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class AgentRegistry:
    """The agents of one folder (see module docstring)."""

    def __init__(self, folder: str | Path, *, tools: ToolStore | None = None,
                 validate_flow: FlowValidator | None = None, poll_s: float = 0.5) -> None:
        self.folder = Path(folder)
        self.tools = tools if tools is not None else default_store()
        self.validate_flow = validate_flow if validate_flow is not None else ivr_flow_validator()
        self.poll_s = poll_s
        self.version = 0  # bumped by every load that changed something
        self._agents: dict[str, _Loaded] = {}
        self._health: dict[str, AgentHealth] = {}
        self._stamp: Stamp | None = None
        self._checked_at = float("-inf")
        self._refreshing: asyncio.Future[bool] | None = None

    # -- reading -------------------------------------------------------------------------

    def get(self, name: str) -> AgentSpec:
        """The serving spec of agent ``name`` (:class:`ConfigError` if there is none)."""
        loaded = self._agents.get(name)
        if loaded is None:
            raise ConfigError(f"no agent {name!r} in {self.folder} (agents: {', '.join(self.names()) or 'none'})")
        return loaded.spec

    def names(self) -> list[str]:
        """The serving agents, sorted."""
        return sorted(self._agents)

    def health(self) -> dict[str, AgentHealth]:
        """Per agent file: loaded, or the error that rejected it."""
        return dict(self._health)

    def errors(self) -> list[str]:
        """Every load error, ``file:line: message``."""
        return [h.error for h in self._health.values() if h.status == "error"]

    def prompt(self, name: str, **variables: Any) -> str:
        """Agent ``name``'s prompt rendered with ``variables`` (``caller``, ``slots``, ``scenario``, ...)."""
        loaded = self._agents.get(name)
        if loaded is None:
            raise ConfigError(f"no agent {name!r} in {self.folder}")
        variables.setdefault("agent", loaded.spec)
        variables.setdefault("now", datetime.datetime.now().astimezone())
        return loaded.template.render(**variables).strip()

    # -- loading -------------------------------------------------------------------------

    def stamp(self) -> Stamp:
        """The folder's YAML files as (name, size, mtime) (blocking)."""
        try:
            with os.scandir(self.folder) as entries:
                files = [(e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries
                         if e.name.endswith((".yaml", ".yml")) and e.is_file()]
        except FileNotFoundError:
            return ()
        return tuple(sorted(files))

    def load(self) -> list[str]:
        """(Re)load the folder now (blocking); returns the errors. Agents that fail keep
        their previous version serving."""
        stamp = self.stamp()
        raw: dict[str, tuple[str, Any, dict[str, int]]] = {}
        failed: dict[str, AgentFileError] = {}
        for name, _size, _mtime in stamp:
            path = self.folder / name
            stem = path.stem
            try:
                data, lines = load_yaml(path.read_text(encoding="utf-8"), str(path))
                raw[stem] = (str(path), data, lines)
            except AgentFileError as exc:
                failed[stem] = exc
            except OSError as exc:
                failed[stem] = AgentFileError(str(path), None, f"cannot read: {exc}")
        fresh: dict[str, _Loaded] = {}
        for stem, (file, data, lines) in raw.items():
            if stem == BASE:
                continue
            try:
                fresh[stem] = self._build(stem, file, data, lines, raw)
            except AgentFileError as exc:
                failed[stem] = exc
        # Serving set: the fresh good ones, plus the previous version of those that failed.
        serving = dict(fresh)
        for stem in failed:
            if stem != BASE and stem in self._agents:
                serving[stem] = self._agents[stem]
        for stem, loaded in list(fresh.items()):
            try:
                self._cross_check(loaded.spec, serving)
            except AgentFileError as exc:
                failed[stem] = exc
                if stem in self._agents:
                    serving[stem] = self._agents[stem]
                else:
                    del serving[stem]
        if BASE in failed:  # every agent inherits from it: keep all previous versions
            for stem, loaded in self._agents.items():
                serving.setdefault(stem, loaded)
        health: dict[str, AgentHealth] = {}
        for stem in sorted(set(raw) | set(failed) | set(serving)):
            file = str(self.folder / f"{stem}.yaml")
            if stem in failed:
                health[stem] = AgentHealth(stem, failed[stem].path, "error", str(failed[stem]),
                                           serving=stem in serving)
            elif stem in serving or stem == BASE:
                health[stem] = AgentHealth(stem, serving[stem].spec.file if stem in serving else file, "loaded",
                                           serving=stem != BASE)
        for stem, problem in failed.items():
            previous = self._health.get(stem)
            if previous is None or previous.error != str(problem):
                logger.warning("agent %s rejected%s: %s", stem,
                               " (the previous version keeps serving)" if stem in serving else "", problem)
        if {k: v.spec for k, v in serving.items()} != {k: v.spec for k, v in self._agents.items()}:
            self.version += 1
        self._agents, self._health, self._stamp = serving, health, stamp
        return [str(problem) for problem in failed.values()]

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload off the loop if the folder changed (checked at most every ``poll_s``);
        True if it was reloaded. Concurrent callers share one check."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.poll_s and self._stamp is not None:
            return False
        if self._refreshing is None or self._refreshing.done():
            self._checked_at = now
            self._refreshing = asyncio.ensure_future(asyncio.to_thread(self._refresh_blocking, force))
        return await asyncio.shield(self._refreshing)

    def _refresh_blocking(self, force: bool) -> bool:
        if not force and self._stamp is not None and self.stamp() == self._stamp:
            return False
        self.load()
        return True

    def _build(self, stem: str, file: str, data: Any, lines: dict[str, int],
               raw: Mapping[str, tuple[str, Any, dict[str, int]]]) -> _Loaded:
        if not isinstance(data, Mapping):
            raise AgentFileError(file, 1, "an agent file is a mapping of fields (name, description, prompt, ...)")
        merged: dict[str, Any] = dict(data)
        chain = [stem]
        parent: str | None = data.get("extends") or BASE
        while parent is not None:
            if parent == BASE and BASE not in raw:
                break  # no defaults file: nothing to inherit
            if parent in chain:
                raise AgentFileError(file, lines.get("extends"), f"extends cycle: {' -> '.join([*chain, parent])}")
            if parent not in raw:
                raise AgentFileError(file, lines.get("extends"), f"extends {parent!r}: no {parent}.yaml in "
                                     f"{self.folder}")
            parent_file, parent_data, _ = raw[parent]
            if not isinstance(parent_data, Mapping):
                raise AgentFileError(parent_file, 1, "not a mapping of agent fields")
            chain.append(parent)
            merged = _merge({k: v for k, v in parent_data.items() if k not in ("name", "extends")}, merged)
            parent = None if parent == BASE else (parent_data.get("extends") or BASE)
        spec = parse_agent(merged, file, lines, stem=stem)
        try:
            template = _env.from_string(spec.prompt)
        except jinja2.TemplateSyntaxError as exc:
            start = lines.get("prompt:text")
            line = start + (exc.lineno or 1) - 1 if start is not None else None
            raise AgentFileError(file, line, f"prompt: Jinja2 syntax error: {exc.message}") from None
        return _Loaded(spec, template)

    def _cross_check(self, spec: AgentSpec, agents: Mapping[str, _Loaded]) -> None:
        for i, name in enumerate(spec.tools):
            if name not in self.tools:
                raise AgentFileError(spec.file, spec.line(f"tools.{i}") or spec.line("tools"),
                                     f"unknown tool {name!r} (tools: {', '.join(self.tools.names()) or 'none'})")
        for target in spec.handoffs:
            line = spec.line(f"handoffs.{target}")
            if target == spec.name:
                raise AgentFileError(spec.file, line, f"handoff to itself ({target!r})")
            if target not in agents:
                raise AgentFileError(spec.file, line, f"handoff to unknown agent {target!r} "
                                     f"(agents: {', '.join(sorted(agents))})")
        if spec.flow and self.validate_flow is not None:
            problems = self.validate_flow(spec.flow, spec.file)
            if problems:
                raise AgentFileError(spec.file, spec.line("flow"), "flow: " + "; ".join(problems))


_registries: dict[str, AgentRegistry] = {}


async def shared_registry(folder: str | Path, *, poll_s: float = 0.5) -> AgentRegistry:
    """The worker's registry of ``folder`` (loaded off the loop on first use, then refreshed)."""
    key = str(folder)  # the caller resolves it (off the loop)
    registry = _registries.get(key)
    if registry is None:
        registry = _registries[key] = AgentRegistry(folder, poll_s=poll_s)
    await registry.refresh()
    return registry
