"""Templates of the IVR flows: text with ``{path|filter}`` fields, split once, filled per turn.

A field names a slot (``{name}``), a key inside one (``{auth.caller.first_name}``,
``{policy.vehicle}``) or the caller's profile (``{caller.first_name}``), optionally with a
filter: ``|date`` says an ISO date ("March 3, 1980"), ``|spell`` reads an identifier
character by character. A missing value says nothing; ``True``/``False`` say yes/no. A
caller's own words used inside a sentence lose the full stop they came with when the
template puts its own punctuation after them. A template that is exactly one field gives
the value itself where a value is wanted (a tool argument: ``true``, a number).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..engine import AgentState
from .slots import say_date, spell

__all__ = ["FILTERS", "Template", "lookup", "parse_template", "render", "value_of"]

FILTERS = ("date", "spell")
_FIELD = re.compile(r"\{([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*)(?:\|([a-z]+))?\}")
_PUNCTUATION = ".,;:!?"


@dataclass(frozen=True, slots=True)
class Template:
    """Text with ``{path|filter}`` fields, split once: literal and field parts alternate."""

    source: str
    parts: tuple[str | tuple[tuple[str, ...], str], ...]  # literal text, or (path, filter)

    @property
    def whole_field(self) -> tuple[tuple[str, ...], str] | None:
        """The field if the template is exactly one ``{...}`` (its value passes as is)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], tuple):
            return self.parts[0]
        return None


def parse_template(source: str) -> Template:
    """``source`` split into literal text and ``{path|filter}`` fields (unchecked)."""
    parts: list[str | tuple[tuple[str, ...], str]] = []
    at = 0
    for match in _FIELD.finditer(source):
        if match.start() > at:
            parts.append(source[at:match.start()])
        parts.append((tuple(match[1].split(".")), match[2] or ""))
        at = match.end()
    if at < len(source):
        parts.append(source[at:])
    return Template(source, tuple(parts))


def lookup(path: tuple[str, ...], state: AgentState, extra: Mapping[str, Any] | None = None) -> Any:
    """The value at ``path``: ``caller.*`` in the caller's profile, else in ``extra`` or the slots (None if absent)."""
    if path[0] == "caller":
        value: Any = state.caller
        path = path[1:]
    elif extra is not None and path[0] in extra:
        value, path = extra[path[0]], path[1:]
    else:
        value, path = state.slots.get(path[0]), path[1:]
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _say(value: Any, filter_name: str) -> str:
    if value is None:  # a slot not filled says nothing, whatever the filter
        return ""
    if filter_name == "date":
        return say_date(value)
    if filter_name == "spell":
        return spell(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def render(template: Template, state: AgentState, extra: Mapping[str, Any] | None = None) -> str:
    """``template`` as spoken text (``extra``: values not yet in the slots, like one being confirmed)."""
    out: list[str] = []
    parts = template.parts
    for i, part in enumerate(parts):
        if isinstance(part, str):
            out.append(part)
            continue
        text = _say(lookup(part[0], state, extra), part[1])
        after = parts[i + 1] if i + 1 < len(parts) else ""
        if isinstance(after, str) and after and after[0] in _PUNCTUATION:
            text = text.rstrip(_PUNCTUATION)  # "at {location}." with a location said as "Main Street."
        out.append(text)
    return "".join(out)


def value_of(template: Template, state: AgentState) -> Any:
    """A template as a tool argument or slot value: the value itself if it is one whole field."""
    whole = template.whole_field
    if whole is not None and not whole[1]:
        return lookup(whole[0], state)
    return render(template, state)
