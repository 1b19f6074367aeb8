"""The one exception tree of voicegraph.

::

    VoicegraphError                      base of everything we raise
    ├── ConfigError(ValueError)          bad YAML, unknown node type, bad settings, bad graph
    ├── FrameError(ValueError)           bad input in a frame: wrong audio size, bad format
    ├── ProtocolError(ValueError)        malformed message from outside (codecs, transports)
    ├── StateError(RuntimeError)         an operation in the wrong lifecycle state
    ├── ServiceError(RuntimeError)       a service (STT, TTS, LLM, store) failed; the call goes on
    └── FatalError(RuntimeError)         the call cannot go on

Each error also inherits from the matching built-in, so generic handlers work (as in
python-websockets).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FatalError",
    "FrameError",
    "ProtocolError",
    "ServiceError",
    "StateError",
    "VoicegraphError",
]


class VoicegraphError(Exception):
    """Base class of every error voicegraph raises."""


class ConfigError(VoicegraphError, ValueError):
    """Configuration is invalid; the message names the file, line and node."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        node: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.node = node
        self.reason = message
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        who = f"node '{node}': " if node else ""
        super().__init__(f"{where}{who}{message}")


class FrameError(VoicegraphError, ValueError):
    """A frame's content is invalid (for example audio of the wrong size)."""


class ProtocolError(VoicegraphError, ValueError):
    """A message from outside does not follow its protocol."""


class StateError(VoicegraphError, RuntimeError):
    """An operation was attempted in the wrong lifecycle state."""


class ServiceError(VoicegraphError, RuntimeError):
    """An external or local service failed; callers degrade and the call goes on."""


class FatalError(VoicegraphError, RuntimeError):
    """The call cannot continue; raising it from a node ends the call."""
