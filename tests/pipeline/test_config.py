"""YAML pipelines: typed settings, errors that name file/line/node, env overrides."""

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from pipeline import ConfigError, Processor, Registry, build_graph, load_pipeline
from pipeline.frames import FinalTranscript, LLMToken


@dataclass(frozen=True, kw_only=True)
class EchoSettings:
    prefix: str = ">"
    repeat: int = 1
    gain: float = 1.0
    mode: Literal["fast", "exact"] = "fast"
    words: tuple[str, ...] = ()
    loud: bool = False
    limit: int | None = None


class Echo(Processor):
    consumes = (FinalTranscript,)
    produces = (LLMToken,)
    Settings = EchoSettings


@dataclass(frozen=True, kw_only=True)
class NeedsSettings:
    endpoint: str
    retries: int = 2


class Needs(Processor):
    consumes = (LLMToken,)
    Settings = NeedsSettings


class Source(Processor):
    produces = (FinalTranscript,)

    async def run(self) -> None:
        pass


@pytest.fixture
def registry() -> Registry:
    reg = Registry(group="voicegraph.test-none")
    reg.register("source", Source)
    reg.register("echo", Echo)
    reg.register("needs", Needs)
    return reg


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


GOOD = """
    name: demo
    description: a test
    nodes:
      src: {use: source}
      echo:
        use: echo
        prefix: "# "
        repeat: 3
        gain: 2
        mode: exact
        words: [a, b]
        limit: 5
      out:
        use: needs
        endpoint: http://127.0.0.1:1
    edges:
      - src -> echo -> out
"""


def test_good_pipeline_gives_typed_frozen_settings(tmp_path: Path, registry: Registry) -> None:
    spec = load_pipeline(write(tmp_path, GOOD), registry=registry, env={})
    assert spec.name == "demo" and spec.description == "a test"
    echo = spec.nodes[1]
    assert echo.use == "echo" and echo.line == 5
    assert echo.settings == EchoSettings(prefix="# ", repeat=3, gain=2.0, mode="exact", words=("a", "b"), limit=5)
    assert isinstance(echo.settings.gain, float)
    assert [(e.src, e.dst, e.tap) for e in spec.edges] == [("src", "echo", False), ("echo", "out", False)]
    graph = build_graph(spec)
    assert list(graph.nodes) == ["src", "echo", "out"]
    assert graph.nodes["out"].settings.endpoint == "http://127.0.0.1:1"


def test_env_overrides_settings(tmp_path: Path, registry: Registry) -> None:
    env = {"VOICEGRAPH__ECHO__REPEAT": "7", "VOICEGRAPH__OUT__ENDPOINT": "https://example.invalid", "OTHER": "x"}
    spec = load_pipeline(write(tmp_path, GOOD), registry=registry, env=env)
    assert spec.nodes[1].settings.repeat == 7
    assert spec.nodes[2].settings.endpoint == "https://example.invalid"


def test_env_override_of_the_wrong_type_is_reported(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(ConfigError, match="node 'echo': setting 'repeat': expected an integer, got 'many'"):
        load_pipeline(write(tmp_path, GOOD), registry=registry, env={"VOICEGRAPH__ECHO__REPEAT": "many"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("nodes: [oops", r"p.yaml:1: invalid YAML"),
        ("nodes:\n  a: {use: nope}\nedges: []\n", r"p.yaml:2: node 'a': unknown node type 'nope' \(known types: echo, needs, source\)"),
        ("nodes:\n  a: {use: echo, repeat: two}\n", r"p.yaml:2: node 'a': setting 'repeat': expected an integer, got 'two'"),
        ("nodes:\n  a:\n    use: echo\n    mode: slow\n", r"p.yaml:4: node 'a': setting 'mode': expected one of 'fast' \| 'exact', got 'slow'"),
        ("nodes:\n  a:\n    use: echo\n    colour: red\n", r"p.yaml:4: node 'a': unknown setting 'colour'"),
        ("nodes:\n  a: {use: echo, loud: 1}\n", r"node 'a': setting 'loud': expected true or false"),
        ("nodes:\n  a: {use: needs}\n", r"p.yaml:2: node 'a': missing required setting 'endpoint'"),
        ("nodes:\n  a: {prefix: x}\n", r"p.yaml:2: node 'a': a node needs 'use: <type>'"),
        ("nodes:\n  a: {use: echo}\nedges:\n  - a => b\n", r"p.yaml:4: cannot parse edge 'a => b'"),
        ("nodes:\n  a: {use: echo}\nedges:\n  - a -> b\n", r"p.yaml:4: node 'b': edge 'a -> b' names unknown node 'b'"),
        ("nodes:\n  a: {use: echo}\nedgez: []\n", r"p.yaml:3: unknown top-level key 'edgez'"),
        ("nodes:\n  a: {use: echo}\n  a: {use: echo}\n", r"p.yaml:3: duplicate key 'a'"),
        ("- just a list\n", r"must be a mapping"),
        ("nodes:\n  a: {use: echo, tap: {size: 0}}\n", r"node 'a': tap size must be >= 1"),
    ],
)
def test_bad_config_errors_name_file_line_and_node(tmp_path: Path, registry: Registry, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_pipeline(write(tmp_path, body), registry=registry, env={})


def test_graph_errors_from_yaml_carry_file_and_line(tmp_path: Path, registry: Registry) -> None:
    body = "nodes:\n  src: {use: source}\n  sink: {use: needs, endpoint: x}\nedges:\n  - src -> sink\n"
    spec = load_pipeline(write(tmp_path, body), registry=registry, env={})
    with pytest.raises(ConfigError) as info:
        build_graph(spec)
    assert info.value.line == 5 and info.value.node == "sink"
    assert "'sink' consumes LLMToken but 'src' emits FinalTranscript" in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_pipeline(tmp_path / "nope.yaml", registry=registry)


def test_shipped_pipelines_validate() -> None:
    root = Path(__file__).resolve().parents[2] / "config" / "pipelines"
    files = sorted(root.glob("*.yaml"))
    assert files
    for path in files:
        graph = build_graph(load_pipeline(path, env={}))
        assert graph.sources and graph.sinks


@dataclass(frozen=True, kw_only=True)
class Nested:
    inner: EchoSettings = field(default_factory=EchoSettings)


def test_nested_settings_are_checked() -> None:
    from pipeline.config import coerce_settings

    value = coerce_settings(Nested, {"inner": {"repeat": 4}})
    assert value.inner.repeat == 4
    with pytest.raises(ConfigError, match="setting 'inner': setting 'repeat'"):
        coerce_settings(Nested, {"inner": {"repeat": "x"}})
