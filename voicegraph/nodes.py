"""The settings reference: every registered node type and its settings (``voicegraph nodes``).

Generated from the registry (built-in types and plugins alike, through the
``voicegraph.processors`` entry points) and from each type's ``Settings`` dataclass: the
field types, defaults, ``Range``/``OneOf`` bounds and ``Doc`` lines declared there
(``pipeline/settings.py``), so it cannot drift from what the loader accepts::

    vad (processors.audio.vad_node.VADProcessor)
      Speech detection and turn endpointing (see module docstring).
      consumes InputAudio; produces InputAudio
      setting         type     default  allowed  description
      aggressiveness  integer  2        0..3     webrtcvad mode; higher rejects more non-speech
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.errors import ConfigError
from pipeline.processor import Processor
from pipeline.registry import Registry
from pipeline.settings import describe_settings

__all__ = ["describe_node", "node_reference"]

_HEADER = ("setting", "type", "default", "allowed", "description")


def describe_node(name: str, cls: type[Processor]) -> str:
    """One node type: where it lives, what it does, what it moves, and its settings table."""
    doc = (cls.__doc__ or "").strip().splitlines()
    lines = [f"{name} ({cls.__module__}.{cls.__qualname__})"]
    if doc:
        lines.append(f"  {doc[0]}")
    moves = []
    if cls.duplex:
        moves.append("duplex transport (source and sink)")
    elif cls.is_source():
        moves.append("source")
    if cls.consumes:
        moves.append("consumes " + ", ".join(t.__name__ for t in cls.consumes))
    if cls.produces:
        moves.append("produces " + ", ".join(t.__name__ for t in cls.produces))
    if moves:
        lines.append("  " + "; ".join(moves))
    infos = describe_settings(cls.Settings)
    if not infos:
        lines.append("  no settings")
        return "\n".join(lines) + "\n"
    rows = [_HEADER] + [
        (i.name, i.type, "(required)" if i.required else i.default, i.range or "-", i.doc) for i in infos
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(len(_HEADER) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  " + "  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def node_reference(registry: Registry, names: Sequence[str] | None = None) -> tuple[str, list[str]]:
    """(the reference for ``names``, default every registered type; errors of types that fail to load).

    An unknown name raises ``ConfigError`` listing the known ones.
    """
    known = registry.names()
    for name in names or ():
        if name not in known:
            raise ConfigError(f"unknown node type '{name}' (known types: {', '.join(known) or 'none'})")
    parts: list[str] = []
    errors: list[str] = []
    for name in names or known:
        try:
            parts.append(describe_node(name, registry.get(name)))
        except Exception as exc:  # a broken plugin (import error, odd Settings) must not hide the others
            errors.append(f"node type '{name}': {exc}")
    return "\n".join(parts), errors
