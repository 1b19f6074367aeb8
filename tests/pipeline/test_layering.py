"""pipeline/ is the bottom layer: it imports nothing above it; frames.py only stdlib/numpy."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ABOVE = {"processors", "agents", "transports", "voicegraph"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_pipeline_imports_nothing_above_it() -> None:
    files = sorted((ROOT / "pipeline").glob("*.py"))
    assert len(files) >= 10
    offenders = {f.name: _imports(f) & ABOVE for f in files if _imports(f) & ABOVE}
    assert offenders == {}


def test_frames_imports_only_stdlib_and_numpy() -> None:
    imported = _imports(ROOT / "pipeline" / "frames.py")
    allowed = set(sys.stdlib_module_names) | {"numpy"}
    assert imported - allowed == set()


def test_layers_import_downward_only() -> None:
    order = ["pipeline", "processors", "agents", "transports", "voicegraph"]
    for i, layer in enumerate(order):
        above = set(order[i + 1:])
        for f in (ROOT / layer).rglob("*.py"):
            bad = _imports(f) & above
            assert not bad, f"{f.relative_to(ROOT)} imports {bad}"
