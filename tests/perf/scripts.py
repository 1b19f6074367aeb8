"""Load a benchmark script of perf/ as a module, for its smoke test."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PERF = Path(__file__).resolve().parents[2] / "perf"


def load_script(name: str) -> ModuleType:
    """``perf/<name>.py`` imported as ``perf_<name>`` (registered in ``sys.modules``,
    where dataclasses look their module up by name)."""
    spec = importlib.util.spec_from_file_location(f"perf_{name}", PERF / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
