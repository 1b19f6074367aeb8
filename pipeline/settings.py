"""Node settings: the typed, frozen dataclasses nodes are configured with, and their checks.

A processor declares its settings as a frozen dataclass. Each field's type says what YAML
may give; ``Annotated`` metadata says what a type alone cannot, and documents the field::

    @dataclass(frozen=True, kw_only=True)
    class VADSettings:
        aggressiveness: Annotated[int, Range(ge=0, le=3), Doc("webrtcvad mode")] = 2

When a pipeline loads, ``coerce_settings`` builds the dataclass from raw YAML values:

* every value must have the field's type (``int`` refuses ``2.5`` and ``true``; ``float``
  takes integers), unknown keys and missing required fields are refused;
* every number must be finite: NaN and infinity are refused for every float, wherever
  it sits (alone, in a list, in a mapping), with no declaration needed;
* a ``Range`` bounds the value (``ge``, ``gt``, ``le``, ``lt``), a ``OneOf`` lists the
  only values that work;
* a ``Doc`` is the field's line in the settings reference (``voicegraph nodes``), which
  ``describe_settings`` builds.

Errors are ``ConfigError``s naming the file, line and node (or, for a value that came from
an environment variable, the variable).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from .errors import ConfigError

__all__ = ["Doc", "OneOf", "Range", "SettingInfo", "coerce_settings", "describe_settings", "type_name"]


@dataclass(frozen=True, slots=True)
class Range:
    """Bounds of a numeric setting: ``Annotated[int, Range(ge=0, le=3)]``.

    ``ge``/``le`` are inclusive, ``gt``/``lt`` exclusive; leave out what does not apply.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def contains(self, value: float) -> bool:
        """True when ``value`` is within every bound."""
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def __str__(self) -> str:
        if self.ge is not None and self.le is not None and self.gt is None and self.lt is None:
            return f"{_num(self.ge)}..{_num(self.le)}"
        parts = [f"{op} {_num(bound)}" for op, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le),
                                                          ("<", self.lt)) if bound is not None]
        return " and ".join(parts) or "any"


@dataclass(frozen=True, slots=True)
class OneOf:
    """The values a setting may take, when only a few work: ``Annotated[int, OneOf(10, 20, 30)]``.

    For a set defined elsewhere (the rates a resampler supports), ``OneOf(*RATES)`` keeps
    one source of truth; a ``Literal`` type would copy it.
    """

    values: tuple[Any, ...]

    def __init__(self, *values: Any) -> None:
        object.__setattr__(self, "values", tuple(sorted(values)))

    def __str__(self) -> str:
        return ", ".join(_num(v) if isinstance(v, (int, float)) else repr(v) for v in self.values)


@dataclass(frozen=True, slots=True)
class Doc:
    """One line describing a setting, for the settings reference: ``Annotated[str, Doc("...")]``."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingInfo:
    """One field of a settings dataclass, as the settings reference shows it."""

    name: str
    type: str
    default: str  # "" when required
    required: bool
    range: str  # "" when unbounded
    doc: str


def coerce_settings(
    cls: type[Any],
    raw: Mapping[str, Any],
    *,
    file: str | None = None,
    node: str | None = None,
    lines: Mapping[str, int] | None = None,
    default_line: int = 0,
    sources: Mapping[str, str] | None = None,
) -> Any:
    """Build the frozen settings dataclass ``cls`` from ``raw``, checking every value.

    ``lines`` maps a key to its YAML line; ``sources`` maps a key to the environment
    variable it came from, which an error about it then names instead of a line.
    """
    lines = lines or {}
    sources = sources or {}
    if not dataclasses.is_dataclass(cls):
        raise ConfigError(f"settings class {cls!r} is not a dataclass", file=file, node=node)
    try:
        hints, fields = _schema(cls)
    except ConfigError as exc:
        raise ConfigError(exc.reason, file=file, line=default_line or None, node=node) from exc
    values: dict[str, Any] = {}
    for key, value in raw.items():
        line = None if key in sources else (lines.get(key, default_line) or None)
        origin = f"environment variable {sources[key]}: " if key in sources else ""
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(f"{origin}unknown setting '{key}' (settings: {known})", file=file, line=line, node=node)
        try:
            values[key] = _coerce(value, hints[key])
        except _Mismatch as exc:
            raise ConfigError(f"{origin}setting '{key}': {exc}", file=file, line=line, node=node) from None
    for name, f in fields.items():
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required setting '{name}'", file=file, line=default_line or None, node=node)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a __post_init__ check of the dataclass itself
        raise ConfigError(f"invalid settings: {exc}", file=file, line=default_line or None, node=node) from exc


def describe_settings(cls: type[Any]) -> list[SettingInfo]:
    """Every init field of the settings dataclass ``cls``: type, default, range and doc."""
    hints, fields = _schema(cls)
    out = []
    for name, f in fields.items():
        tp = hints[name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required:
            default = ""
        elif f.default_factory is not dataclasses.MISSING:
            default = _yaml(f.default_factory())
        else:
            default = _yaml(f.default)
        ranges = [str(m) if isinstance(m, Range) else f"one of {m}" for m in _metadata(tp)
                  if isinstance(m, (Range, OneOf))]
        docs = [m.text for m in _metadata(tp) if isinstance(m, Doc)]
        out.append(SettingInfo(name=name, type=type_name(tp), default=default, required=required,
                               range=", ".join(ranges), doc=" ".join(docs)))
    return out


def type_name(tp: Any) -> str:
    """A setting's type in YAML words: ``integer``, ``list of string``, ``'in' | 'out'``."""
    origin = get_origin(tp)
    if origin is Annotated:
        return type_name(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        args = get_args(tp)
        return f"list of {type_name(args[0])}" if args else "list"
    if origin in (dict, Mapping) or tp is dict:
        args = get_args(tp)
        return f"mapping {type_name(args[0])} -> {type_name(args[1])}" if args else "mapping"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(repr(m.value) for m in tp)
    names = {bool: "true/false", int: "integer", float: "number", str: "string"}
    if tp in names:
        return names[tp]
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# --- internals -------------------------------------------------------------------------


_Schema = tuple[dict[str, Any], dict[str, "dataclasses.Field[Any]"]]
_schemas: dict[type[Any], _Schema] = {}


def _schema(cls: type[Any]) -> _Schema:
    """(type hints with their Annotated metadata, init fields) of a settings class, once."""
    schema = _schemas.get(cls)
    if schema is None:
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception as exc:  # a plugin's annotation naming something its module lacks
            raise ConfigError(f"settings class {cls.__qualname__} has annotations that cannot be resolved: "
                              f"{type(exc).__name__}: {exc}") from exc
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        schema = _schemas[cls] = (hints, fields)
    return schema


def _metadata(tp: Any) -> tuple[Any, ...]:
    """Annotated metadata of ``tp``, also under ``X | None``."""
    if get_origin(tp) is Annotated:
        return tuple(tp.__metadata__)
    if get_origin(tp) in (Union, types.UnionType):
        return tuple(m for arg in get_args(tp) for m in _metadata(arg))
    return ()


class _Mismatch(Exception):
    pass


def _describe(tp: Any) -> str:
    if get_origin(tp) is Annotated:
        return _describe(get_args(tp)[0])
    if get_origin(tp) in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _describe(a) for a in get_args(tp))
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        inner, *meta = get_args(tp)
        out = _coerce(value, inner)
        for m in meta:
            if isinstance(m, Range) and not m.contains(out):
                raise _Mismatch(f"must be {'in ' if '..' in str(m) else ''}{m}, got {_num(out)}")
            if isinstance(m, OneOf) and out not in m.values:
                raise _Mismatch(f"must be one of {m}, got {_num(out) if isinstance(out, (int, float)) else repr(out)}")
        return out
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            if arg is type(None) and value is None:
                return None
        failures = []
        for arg in get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except _Mismatch as exc:
                failures.append(str(exc))
        ranged = [f for f in failures if f.startswith("must be")]
        raise _Mismatch(ranged[0] if ranged else f"expected {_describe(tp)}, got {value!r}")
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
            if not math.isfinite(value):
                raise _Mismatch(f"expected a finite number, got {value!r}")
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


def _num(value: float) -> str:
    """A bound or value as written in YAML: 3, 0.5, 192000 (no trailing .0)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _yaml(value: Any) -> str:
    """A default value as it would be written in YAML (for the settings reference)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return _yaml(value.value)
    if isinstance(value, (int, float)):
        return _num(value)
    if isinstance(value, str):
        return '""' if not value else repr(value) if any(c in value for c in ":#{}[],'\"") else value
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_yaml(k)}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if dataclasses.is_dataclass(value):
        return "{...}"
    return repr(value)
