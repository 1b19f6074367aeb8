"""The agents' tools: the store (schemas from typed signatures, checked arguments, data and
HTTP helpers) and the shipped domain tools (``agents.tools.domain``)."""

from .store import (
    CALL_ACTIONS,
    HttpAction,
    StoreTool,
    ToolStore,
    ToolValidationError,
    call_action,
    default_store,
    fetch_json,
    schema_for,
    tool,
)

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
