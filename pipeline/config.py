"""Pipeline YAML -> typed, frozen config -> a Graph.

A pipeline file::

    name: text-call                      # optional; defaults to the file name
    description: typed text in, agent text out
    nodes:
      caller: {use: text_caller}
      brain:  {use: rules_brain, greeting: "Hello!"}
      log:    {use: transcript_log, tap: {size: 64, overflow: drop_oldest}}
    edges:
      - caller -> brain -> caller        # links: the main path
      - brain ~> log                     # a tap: a side-car copy, never blocking

Every node's settings are checked against its processor's ``Settings`` dataclass when
the file is loaded: unknown keys, wrong types and missing values are ``ConfigError``s
naming the file, line and node. Components never see raw dicts.

Environment overrides: ``VOICEGRAPH__<NODE>__<SETTING>=value`` (value parsed as YAML),
so endpoints and secrets never have to live in files.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from .errors import ConfigError
from .framequeue import Overflow
from .graph import Graph
from .registry import Registry, default_registry

__all__ = [
    "ENV_PREFIX",
    "NodeSpec",
    "PipelineSpec",
    "TapSpec",
    "build_graph",
    "coerce_settings",
    "load_pipeline",
    "load_yaml",
]

ENV_PREFIX = "VOICEGRAPH__"
_EDGE_SPLIT = re.compile(r"\s*(->|~>)\s*")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_OVERFLOWS = ("drop_oldest", "drop_newest")


# --- YAML with line numbers ------------------------------------------------------------


class LineMap(dict[str, Any]):
    """A YAML mapping that remembers the line of itself and of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list[Any]):
    """A YAML sequence that remembers the line of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    out = LineMap()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            key = str(key)
        if key in out:
            raise ConfigError(f"duplicate key '{key}'", line=key_node.start_mark.line + 1)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; syntax errors become ``ConfigError`` with file and line."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=file) from exc
    try:
        return yaml.load(text, Loader=_Loader)
    except ConfigError as exc:
        raise ConfigError(exc.reason, file=file, line=exc.line) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {problem}", file=file, line=mark.line + 1 if mark else None) from exc


# --- typed specs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TapSpec:
    """Queue of a tap target."""

    size: int = 256
    overflow: Overflow = "drop_oldest"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    """One node: its name, registered type, checked settings, and where it was declared."""

    name: str
    use: str
    settings: Any
    line: int = 0
    tap: TapSpec | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeSpec:
    """One edge from the ``edges:`` list."""

    src: str
    dst: str
    tap: bool
    line: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineSpec:
    """A whole pipeline file, parsed and checked."""

    name: str
    file: str
    description: str = ""
    nodes: tuple[NodeSpec, ...] = ()
    edges: tuple[EdgeSpec, ...] = ()
    types: Mapping[str, type] = field(default_factory=dict)


def load_pipeline(
    path: str | Path,
    *,
    registry: Registry | None = None,
    env: Mapping[str, str] | None = None,
) -> PipelineSpec:
    """Load and check a pipeline file (settings typed, env overrides applied)."""
    registry = registry or default_registry
    env = os.environ if env is None else env
    file = str(path)
    doc = load_yaml(path)
    if not isinstance(doc, LineMap):
        raise ConfigError("a pipeline file must be a mapping with 'nodes' and 'edges'", file=file)
    unknown = set(doc) - {"name", "description", "nodes", "edges"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"unknown top-level key '{key}' (expected name, description, nodes, edges)",
                          file=file, line=doc.line_of(key))
    nodes_doc = doc.get("nodes")
    if not isinstance(nodes_doc, LineMap) or not nodes_doc:
        raise ConfigError("'nodes' must be a non-empty mapping of name -> {use: type, ...}",
                          file=file, line=doc.line_of("nodes"))
    overrides = _env_overrides(env)
    nodes: list[NodeSpec] = []
    types_used: dict[str, type] = {}
    for name, body in nodes_doc.items():
        line = nodes_doc.line_of(name)
        if not _NAME.match(name):
            raise ConfigError(f"invalid node name '{name}'", file=file, line=line, node=name)
        if not isinstance(body, LineMap) or "use" not in body:
            raise ConfigError("a node needs 'use: <type>'", file=file, line=line, node=name)
        use = body["use"]
        if not isinstance(use, str):
            raise ConfigError("'use' must be a type name", file=file, line=body.line_of("use"), node=name)
        try:
            cls = registry.get(use)
        except ConfigError as exc:
            raise ConfigError(exc.reason, file=file, line=body.line_of("use"), node=name) from exc
        types_used[name] = cls
        raw = {k: v for k, v in body.items() if k not in ("use", "tap")}
        raw.update(overrides.get(name.lower().replace("-", "_"), {}))
        lines = {k: body.line_of(k) for k in raw}
        settings = coerce_settings(cls.Settings, raw, file=file, node=name, lines=lines, default_line=line)
        tap = None
        if "tap" in body:
            tap = _tap_spec(body["tap"], file=file, node=name, line=body.line_of("tap"))
        nodes.append(NodeSpec(name=name, use=use, settings=settings, line=line, tap=tap))
    edges = _parse_edges(doc.get("edges"), file=file, line=doc.line_of("edges"), names=set(nodes_doc))
    name = doc.get("name", Path(file).stem)
    return PipelineSpec(
        name=str(name),
        file=file,
        description=str(doc.get("description", "")),
        nodes=tuple(nodes),
        edges=tuple(edges),
        types=types_used,
    )


def build_graph(spec: PipelineSpec) -> Graph:
    """Instantiate a fresh graph (one per call) from a checked spec, and validate it."""
    graph = Graph(spec.name, file=spec.file)
    taps = {n.name: n.tap for n in spec.nodes}
    for node in spec.nodes:
        cls = spec.types[node.name]
        try:
            graph.add(cls(node.settings, name=node.name), line=node.line)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"cannot create {cls.__name__}: {exc}", file=spec.file, line=node.line,
                              node=node.name) from exc
    for edge in spec.edges:
        if edge.tap:
            tap = taps.get(edge.dst) or TapSpec()
            graph.tap(edge.src, edge.dst, maxsize=tap.size, overflow=tap.overflow, line=edge.line)
        else:
            graph.link(edge.src, edge.dst, line=edge.line)
    graph.validate()
    return graph


# --- helpers ---------------------------------------------------------------------------


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = key[len(ENV_PREFIX):].split("__")
        if len(parts) != 2 or not all(parts):
            continue
        node, setting = parts[0].lower(), parts[1].lower()
        try:
            parsed = yaml.safe_load(value) if value else value
        except yaml.YAMLError:
            parsed = value
        out.setdefault(node, {})[setting] = parsed
    return out


def _tap_spec(raw: Any, *, file: str, node: str, line: int) -> TapSpec:
    if not isinstance(raw, Mapping):
        raise ConfigError("'tap' must be a mapping {size: N, overflow: drop_oldest|drop_newest}",
                          file=file, line=line, node=node)
    spec = coerce_settings(TapSpec, dict(raw), file=file, node=node, lines={}, default_line=line)
    if spec.overflow not in _OVERFLOWS:
        raise ConfigError(f"tap overflow must be one of {', '.join(_OVERFLOWS)}", file=file, line=line, node=node)
    if spec.size < 1:
        raise ConfigError("tap size must be >= 1", file=file, line=line, node=node)
    return typing.cast(TapSpec, spec)


def _parse_edges(raw: Any, *, file: str, line: int, names: set[str]) -> list[EdgeSpec]:
    if raw is None:
        return []
    if not isinstance(raw, LineList):
        raise ConfigError("'edges' must be a list of chains like 'a -> b -> c' or taps 'a ~> b'",
                          file=file, line=line)
    edges: list[EdgeSpec] = []
    for item, item_line in zip(raw, raw.item_lines, strict=True):
        if not isinstance(item, str):
            raise ConfigError(f"edge must be a string like 'a -> b', got {item!r}", file=file, line=item_line)
        parts = _EDGE_SPLIT.split(item.strip())
        if len(parts) < 3 or len(parts) % 2 == 0:
            raise ConfigError(f"cannot parse edge '{item}' (expected 'a -> b' or 'a ~> b')", file=file, line=item_line)
        for i in range(0, len(parts) - 2, 2):
            src, arrow, dst = parts[i], parts[i + 1], parts[i + 2]
            for end in (src, dst):
                if end not in names:
                    raise ConfigError(f"edge '{item}' names unknown node '{end}'", file=file, line=item_line, node=end)
            edges.append(EdgeSpec(src=src, dst=dst, tap=arrow == "~>", line=item_line))
    return edges


def coerce_settings(
    cls: type[Any],
    raw: Mapping[str, Any],
    *,
    file: str | None = None,
    node: str | None = None,
    lines: Mapping[str, int] | None = None,
    default_line: int = 0,
) -> Any:
    """Build the frozen settings dataclass ``cls`` from ``raw``, checking every value."""
    lines = lines or {}
    if not dataclasses.is_dataclass(cls):
        raise ConfigError(f"settings class {cls!r} is not a dataclass", file=file, node=node)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        line = lines.get(key, default_line) or None
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(f"unknown setting '{key}' (settings: {known})", file=file, line=line, node=node)
        try:
            values[key] = _coerce(value, hints[key])
        except _Mismatch as exc:
            raise ConfigError(f"setting '{key}': {exc}", file=file, line=line, node=node) from None
    for name, f in fields.items():
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required setting '{name}'", file=file, line=default_line or None, node=node)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid settings: {exc}", file=file, line=default_line or None, node=node) from exc


class _Mismatch(Exception):
    pass


def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch(f"expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise _Mismatch(f"expected one of {_describe(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch(f"expected a string, got {value!r}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise _Mismatch(f"expected one of {[m.value for m in tp]}, got {value!r}") from None
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(f"expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp) for v in value]
        return tuple(items) if origin is not list else items
    if origin in (dict, Mapping) or tp in (dict,):
        args = get_args(tp) or (Any, Any)
        if not isinstance(value, Mapping):
            raise _Mismatch(f"expected a mapping, got {value!r}")
        return types.MappingProxyType({_coerce(k, args[0]): _coerce(v, args[1]) for k, v in value.items()})
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise _Mismatch(f"expected a mapping for {tp.__name__}, got {value!r}")
        try:
            return coerce_settings(tp, value)
        except ConfigError as exc:
            raise _Mismatch(exc.reason) from None
    raise _Mismatch(f"unsupported setting type {_describe(tp)}")
