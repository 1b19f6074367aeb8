"""What the benchmark scripts share: run a ``main(args)`` on the call loop, print the
figures as a two-column table, and write them as JSON (``--json PATH``)."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

__all__ = ["run_and_print"]

Main = Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]


def run_and_print(main: Main, args: argparse.Namespace, *, width: int = 24, digits: int = 10) -> dict[str, Any]:
    """Run ``main(args)`` on uvloop (asyncio's loop without it), print each figure, and
    write them all to ``args.json`` when it is set; returns them."""
    try:
        import uvloop

        result = uvloop.run(main(args))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        result = asyncio.run(main(args))
    for key, value in result.items():
        print(f"{key:{width}} {value:{digits}.1f}" if isinstance(value, float) else f"{key:{width}} {value:>{digits}}")
    path: Path | None = getattr(args, "json", None)
    if path:
        path.write_text(json.dumps(result, indent=2))
    return result
