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
the file is loaded (types, finite numbers, declared ranges: see ``settings.py``):
unknown keys, wrong types, out-of-range and missing values are ``ConfigError``s naming
the file, line and node. Components never see raw dicts. Whatever is wrong with the file
itself (missing, a folder, binary, not UTF-8, empty, not a mapping, nested absurdly deep)
is a ``ConfigError`` naming it too, never a traceback.

Environment overrides: ``VOICEGRAPH__<NODE>__<SETTING>=value`` (value parsed as YAML;
``-`` and ``.`` in node names read as ``_``), so endpoints and secrets never have to live
in files. A bad value is blamed on the variable. A variable naming no node of the
pipeline, or no setting of that node, is ignored with a warning (the same environment
serves every pipeline, and not every pipeline has every node).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .framequeue import Overflow
from .graph import Graph
from .registry import Registry, default_registry
from .settings import coerce_settings

__all__ = [
    "ENV_PREFIX",
    "MAX_DEPTH",
    "NodeSpec",
    "PipelineSpec",
    "TapSpec",
    "build_graph",
    "coerce_settings",
    "load_pipeline",
    "load_yaml",
]

logger = logging.getLogger(__name__)

ENV_PREFIX = "VOICEGRAPH__"
#: Deepest YAML nesting accepted. A pipeline needs under ten levels; the bound keeps a
#: hostile or broken file from exhausting the parser's recursion.
MAX_DEPTH = 64
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
    """SafeLoader with line numbers and a nesting bound (see ``MAX_DEPTH``)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ConfigError(f"YAML nested more than {MAX_DEPTH} levels deep", line=mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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
    """Parse a YAML file; every problem becomes a ``ConfigError`` naming the file (and line)."""
    file = str(path)
    text = _read_text(Path(path), file)
    return _parse(text, file)


def _read_text(path: Path, file: str) -> str:
    if path.is_dir():
        raise ConfigError("is a folder, not a YAML file", file=file)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("no such file", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=file) from exc
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError("UTF-16 text; save the file as UTF-8", file=file)
    if b"\x00" in data:
        raise ConfigError("binary file (contains NUL bytes), not YAML text", file=file)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded; save the file as UTF-8",
                          file=file, line=line) from None


def _parse(text: str, file: str | None) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader: no arbitrary objects
    except ConfigError as exc:
        raise ConfigError(exc.reason, file=file, line=exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {problem}", file=file, line=mark.line + 1 if mark else None) from None


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
    """A whole pipeline file, parsed and checked; ``warnings`` were also logged."""

    name: str
    file: str
    description: str = ""
    nodes: tuple[NodeSpec, ...] = ()
    edges: tuple[EdgeSpec, ...] = ()
    types: Mapping[str, type] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def load_pipeline(
    path: str | Path,
    *,
    registry: Registry | None = None,
    env: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> PipelineSpec:
    """Load and check a pipeline file (settings typed, env overrides applied).

    Warnings (environment variables that name no node or setting of this pipeline) go
    to ``warn``, by default ``logging.warning``; they are kept in ``spec.warnings`` too.
    """
    registry = registry or default_registry
    env = os.environ if env is None else env
    file = str(path)
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        (warn or logger.warning)(message)

    doc = load_yaml(path)
    if doc is None:
        raise ConfigError("empty file; a pipeline file is a mapping with 'nodes' and 'edges'", file=file)
    if not isinstance(doc, LineMap):
        raise ConfigError(f"the top level is {_kind(doc)}; a pipeline file must be a mapping with 'nodes' and "
                          "'edges'", file=file, line=getattr(doc, "line", None))
    unknown = set(doc) - {"name", "description", "nodes", "edges"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"unknown top-level key '{key}' (expected name, description, nodes, edges)",
                          file=file, line=doc.line_of(key))
    for key in ("name", "description"):
        if key in doc and not isinstance(doc[key], str):
            raise ConfigError(f"'{key}' must be a string, got {_kind(doc[key])}", file=file, line=doc.line_of(key))
    nodes_doc = doc.get("nodes")
    if not isinstance(nodes_doc, LineMap) or not nodes_doc:
        raise ConfigError("'nodes' must be a non-empty mapping of name -> {use: type, ...}",
                          file=file, line=doc.line_of("nodes"))
    overrides = _env_overrides(env, note)
    claimed: set[str] = set()
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
        lines = {k: body.line_of(k) for k in raw}
        sources: dict[str, str] = {}
        settable = _settable(cls.Settings)
        for ov in overrides.get(_env_key(name), ()):
            claimed.add(ov.var)
            if ov.setting not in settable:
                known = ", ".join(sorted(settable)) or "none"
                note(f"{file}: environment variable {ov.var} ignored: node '{name}' ({use}) has no setting "
                     f"'{ov.setting}' (settings: {known})")
                continue
            raw[ov.setting] = ov.value
            sources[ov.setting] = ov.var
        settings = coerce_settings(cls.Settings, raw, file=file, node=name, lines=lines, default_line=line,
                                   sources=sources)
        tap = None
        if "tap" in body:
            tap = _tap_spec(body["tap"], file=file, node=name, line=body.line_of("tap"))
        nodes.append(NodeSpec(name=name, use=use, settings=settings, line=line, tap=tap))
    for node_key, ovs in overrides.items():
        for ov in ovs:
            if ov.var not in claimed:
                note(f"{file}: environment variable {ov.var} ignored: this pipeline has no node '{node_key}' "
                     f"(nodes: {', '.join(nodes_doc)})")
    edges = _parse_edges(doc.get("edges"), file=file, line=doc.line_of("edges"), names=set(nodes_doc))
    return PipelineSpec(
        name=doc.get("name", Path(file).stem),
        file=file,
        description=doc.get("description", ""),
        nodes=tuple(nodes),
        edges=tuple(edges),
        types=types_used,
        warnings=tuple(warnings),
    )


def build_graph(spec: PipelineSpec) -> Graph:
    """Instantiate a fresh graph (one per call) from a checked spec, and validate it.

    A node whose constructor refuses its settings (``ConfigError``, ``ValueError``, or any
    other exception) is reported with the file, line and node like every config error.
    """
    graph = Graph(spec.name, file=spec.file)
    taps = {n.name: n.tap for n in spec.nodes}
    for node in spec.nodes:
        cls = spec.types[node.name]
        try:
            instance = cls(node.settings, name=node.name)
        except ConfigError as exc:
            raise ConfigError(exc.reason, file=spec.file, line=node.line, node=node.name) from exc
        except ValueError as exc:
            raise ConfigError(f"invalid settings: {exc}", file=spec.file, line=node.line, node=node.name) from exc
        except Exception as exc:
            raise ConfigError(f"cannot create {cls.__name__}: {type(exc).__name__}: {exc}", file=spec.file,
                              line=node.line, node=node.name) from exc
        graph.add(instance, line=node.line)
    for edge in spec.edges:
        if edge.tap:
            tap = taps.get(edge.dst) or TapSpec()
            graph.tap(edge.src, edge.dst, maxsize=tap.size, overflow=tap.overflow, line=edge.line)
        else:
            graph.link(edge.src, edge.dst, line=edge.line)
    graph.validate()
    return graph


# --- helpers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Override:
    var: str
    setting: str
    value: Any


def _env_key(node: str) -> str:
    """How a node name reads in a variable name: ``resample-in`` -> ``resample_in``."""
    return node.lower().replace("-", "_").replace(".", "_")


def _env_overrides(env: Mapping[str, str], note: Callable[[str], None]) -> dict[str, list[_Override]]:
    """``VOICEGRAPH__<NODE>__<SETTING>`` variables by node key (lower case)."""
    out: dict[str, list[_Override]] = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = key[len(ENV_PREFIX):].split("__")
        if len(parts) != 2 or not all(parts):
            note(f"environment variable {key} ignored: expected {ENV_PREFIX}<NODE>__<SETTING>")
            continue
        try:
            parsed = _parse(value, None) if value else value
        except ConfigError:
            parsed = value  # not YAML: the plain string (the setting's type decides if it fits)
        out.setdefault(parts[0].lower(), []).append(_Override(key, parts[1].lower(), parsed))
    return out


def _settable(settings_cls: type[Any]) -> set[str]:
    """Setting names of a settings dataclass (the registry checked that it is one)."""
    return {f.name for f in dataclasses.fields(settings_cls) if f.init}


def _kind(value: Any) -> str:
    """'a list', 'a string', ... for messages about YAML values."""
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number"}
    return next((k for t, k in kinds.items() if isinstance(value, t)), type(value).__name__)


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
