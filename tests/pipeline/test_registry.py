"""Plugin discovery through the voicegraph.processors entry-point group."""

import sys
import textwrap
from pathlib import Path

import pytest

from pipeline import ConfigError, Processor, Registry, default_registry, register


def _install_fake_plugin(root: Path, group: str, body: str, entry: str) -> None:
    (root / "vg_fake_plugin.py").write_text(textwrap.dedent(body))
    dist = root / "vg_fake_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vg-fake-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")


def test_an_outside_package_adds_a_node_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    group = "voicegraph.processors.testgroup"
    _install_fake_plugin(
        tmp_path,
        group,
        """
        from pipeline.processor import Processor
        class Shout(Processor):
            pass
        class NotAProcessor:
            pass
        """,
        "shout = vg_fake_plugin:Shout\nbogus = vg_fake_plugin:NotAProcessor\nbroken = vg_fake_missing:Thing",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry(group=group)
    assert registry.names() == ["bogus", "broken", "shout"]
    cls = registry.get("shout")
    assert cls.__name__ == "Shout" and issubclass(cls, Processor)
    with pytest.raises(ConfigError, match=r"'bogus' .* is not a Processor subclass"):
        registry.get("bogus")
    with pytest.raises(ConfigError, match="'broken' from plugin 'vg_fake_missing:Thing' failed to import"):
        registry.get("broken")
    sys.modules.pop("vg_fake_plugin", None)


def test_builtin_types_come_from_our_own_entry_points() -> None:
    names = default_registry.names()
    for name in ("passthrough", "rules_brain", "text_caller"):
        assert name in names
    assert default_registry.get("passthrough").__name__ == "Passthrough"


def test_register_decorator_and_unknown_name() -> None:
    registry = Registry(group="voicegraph.none")

    class Mine(Processor):
        pass

    registry.register("mine", Mine)
    assert registry.get("mine") is Mine
    with pytest.raises(ConfigError, match=r"unknown node type 'theirs' \(known types: mine\)"):
        registry.get("theirs")
    with pytest.raises(ConfigError, match="not a Processor subclass"):
        registry.register("bad", int)  # type: ignore[arg-type]

    @register("vg_test_decorated")
    class Decorated(Processor):
        pass

    assert default_registry.get("vg_test_decorated") is Decorated
