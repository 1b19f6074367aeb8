"""Event-loop setup: uvloop where available (a faster loop for many calls per process)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")
logger = logging.getLogger(__name__)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop if it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        logger.debug("uvloop not available; using the default asyncio loop")
        return asyncio.run(main)
    return uvloop.run(main)
