"""Processor types by name: the plugin registry.

Types come from two places: ``register()`` calls (tests, embedding applications) and the
``voicegraph.processors`` entry-point group, read lazily the first time a name is looked
up. voicegraph's own processors are declared there too, in its pyproject, so an outside
package plugs in exactly the same way::

    [project.entry-points."voicegraph.processors"]
    my_filter = "my_package.filters:MyFilter"

``pipeline/`` never imports the packages above it; it only learns their names here.

A type is checked when it is registered or first loaded: a ``Processor`` subclass whose
``consumes``/``produces`` are tuples of data frame types and whose ``Settings`` is a
dataclass. A plugin that gets this wrong is a ``ConfigError`` naming it, not a traceback
from deep inside graph validation.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

from .errors import ConfigError
from .frames import DataFrame
from .processor import Processor

__all__ = ["ENTRY_POINT_GROUP", "Registry", "default_registry", "register"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "voicegraph.processors"
P = TypeVar("P", bound=type[Processor])


class Registry:
    """A name -> processor class table, backed by entry points."""

    def __init__(self, group: str = ENTRY_POINT_GROUP) -> None:
        self.group = group
        self._types: dict[str, type[Processor]] = {}
        self._entry_points: dict[str, EntryPoint] | None = None

    def register(self, name: str, cls: type[Processor]) -> None:
        """Make ``cls`` available as ``use: name``."""
        if not (isinstance(cls, type) and issubclass(cls, Processor)):
            raise ConfigError(f"cannot register '{name}': {cls!r} is not a Processor subclass")
        _check_declarations(name, cls)
        self._types[name] = cls

    def refresh(self) -> None:
        """Forget the entry points read so far (after installing a plugin at run time)."""
        self._entry_points = None

    def names(self) -> list[str]:
        """Every known type name."""
        return sorted(set(self._types) | set(self._discover()))

    def get(self, name: str) -> type[Processor]:
        """The class registered as ``name``; ``ConfigError`` listing known names otherwise."""
        cls = self._types.get(name)
        if cls is not None:
            return cls
        ep = self._discover().get(name)
        if ep is None:
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"unknown node type '{name}' (known types: {known})")
        try:
            loaded = ep.load()
        except Exception as exc:
            raise ConfigError(f"node type '{name}' from plugin '{ep.value}' failed to import: {exc}") from exc
        if not (isinstance(loaded, type) and issubclass(loaded, Processor)):
            raise ConfigError(f"node type '{name}' ({ep.value}) is not a Processor subclass")
        _check_declarations(name, loaded)
        self._types[name] = loaded
        return loaded

    def _discover(self) -> dict[str, EntryPoint]:
        if self._entry_points is None:
            found: dict[str, EntryPoint] = {}
            for ep in entry_points(group=self.group):
                if ep.name in found and found[ep.name].value != ep.value:
                    logger.warning(
                        "processor type '%s' declared twice: %s and %s", ep.name, found[ep.name].value, ep.value
                    )
                found.setdefault(ep.name, ep)
            self._entry_points = found
        return self._entry_points


def _check_declarations(name: str, cls: type[Processor]) -> None:
    """What graph validation and the settings loader rely on, checked once per type."""
    where = f"node type '{name}' ({cls.__module__}.{cls.__qualname__})"
    for attr in ("consumes", "produces"):
        value = getattr(cls, attr)
        if not isinstance(value, tuple) or not all(isinstance(t, type) and issubclass(t, DataFrame) for t in value):
            raise ConfigError(f"{where}: {attr} = {value!r}; expected a tuple of data frame classes")
    if not (isinstance(cls.Settings, type) and dataclasses.is_dataclass(cls.Settings)):
        raise ConfigError(f"{where}: Settings = {cls.Settings!r} is not a dataclass")


default_registry = Registry()


def register(name: str) -> Callable[[P], P]:
    """Class decorator: ``@register("my_node")`` adds the class to the default registry."""

    def deco(cls: P) -> P:
        default_registry.register(name, cls)
        return cls

    return deco
