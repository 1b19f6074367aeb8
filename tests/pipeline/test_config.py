"""YAML pipelines: typed settings, errors that name file/line/node, env overrides."""

import logging
import re
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Union, get_args, get_origin

import pytest

from pipeline import ConfigError, Processor, Registry, build_graph, load_pipeline
from pipeline.config import coerce_settings
from pipeline.frames import FinalTranscript, LLMToken
from pipeline.settings import Doc, OneOf, Range


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
    with pytest.raises(ConfigError, match="node 'echo': environment variable VOICEGRAPH__ECHO__REPEAT: setting 'repeat': expected an integer, got 'many'"):
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
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file"):
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
    value = coerce_settings(Nested, {"inner": {"repeat": 4}})
    assert value.inner.repeat == 4
    with pytest.raises(ConfigError, match="setting 'inner': setting 'repeat'"):
        coerce_settings(Nested, {"inner": {"repeat": "x"}})


# --- ranges and finite numbers (issue 12, defect 1) --------------------------------------


@dataclass(frozen=True, kw_only=True)
class RangedSettings:
    rate: Annotated[int, Range(ge=1, le=192_000), Doc("target rate, Hz")] = 16000
    mode: Annotated[int, Range(ge=0, le=3)] = 2
    window_ms: Annotated[float, Range(gt=0)] = 20.0
    lead_ms: Annotated[float, Range(ge=0)] | None = None
    gains: tuple[float, ...] = ()
    scale: float = 1.0


class Ranged(Processor):
    consumes = (FinalTranscript,)
    produces = (LLMToken,)
    Settings = RangedSettings


@pytest.fixture
def ranged(registry: Registry) -> Registry:
    registry.register("ranged", Ranged)
    return registry


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("rate", "0", "setting 'rate': must be in 1..192000, got 0"),
        ("rate", "-5", "setting 'rate': must be in 1..192000, got -5"),
        ("rate", "192001", "setting 'rate': must be in 1..192000, got 192001"),
        ("mode", "9", "setting 'mode': must be in 0..3, got 9"),
        ("window_ms", "0", "setting 'window_ms': must be > 0, got 0"),
        ("window_ms", ".nan", "setting 'window_ms': expected a finite number, got nan"),
        ("window_ms", "-.inf", "setting 'window_ms': expected a finite number, got -inf"),
        ("lead_ms", "-1", "setting 'lead_ms': must be >= 0, got -1"),
        ("scale", ".inf", "setting 'scale': expected a finite number, got inf"),  # no Range: finite anyway
        ("gains", "[1.0, .nan]", "setting 'gains': expected a finite number, got nan"),  # inside a list
    ],
)
def test_out_of_range_and_non_finite_settings_name_file_line_and_node(
    tmp_path: Path, ranged: Registry, setting: str, value: str, message: str
) -> None:
    path = write(tmp_path, f"nodes:\n  src: {{use: source}}\n  r:\n    use: ranged\n    {setting}: {value}\n"
                           "edges:\n  - src -> r\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, registry=ranged, env={})
    assert str(info.value) == f"{path}:5: node 'r': {message}"
    assert (info.value.file, info.value.line, info.value.node) == (str(path), 5, "r")


def test_in_range_values_and_null_pass(tmp_path: Path, ranged: Registry) -> None:
    path = write(tmp_path, "nodes:\n  r: {use: ranged, rate: 192000, mode: 0, window_ms: 0.5, lead_ms: null, "
                           "gains: [1, 2.5]}\n")
    settings = load_pipeline(path, registry=ranged, env={}).nodes[0].settings
    assert settings == RangedSettings(rate=192000, mode=0, window_ms=0.5, lead_ms=None, gains=(1.0, 2.5))


def test_every_registered_setting_is_documented_and_every_number_bounded() -> None:
    """The settings reference is complete: each field of each shipped node type has a Doc,
    and each int/float field a Range or OneOf (NaN/inf are refused generically on top)."""
    from pipeline.registry import default_registry
    from pipeline.settings import _metadata, _schema

    for name in default_registry.names():
        cls = default_registry.get(name).Settings
        hints, fields = _schema(cls)
        for field_name in fields:
            tp = hints[field_name]
            meta = _metadata(tp)
            assert any(isinstance(m, Doc) for m in meta), f"{name}.{field_name} has no Doc"
            inner = {a for a in (get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,))}
            numeric = any(get_args(a)[0] in (int, float) if get_origin(a) is Annotated else a in (int, float)
                          for a in inner)
            if numeric:
                assert any(isinstance(m, (Range, OneOf)) for m in meta), f"{name}.{field_name}: a number, unbounded"
            # every default is itself valid
            coerce_settings(cls, {})


def test_shipped_node_ranges_reject_bad_values(tmp_path: Path) -> None:
    """The defect as reported: resample rate 0 / -5 and VAD aggressiveness 9 fail at load."""
    root = Path(__file__).resolve().parents[2] / "config" / "pipelines" / "local.yaml"
    text = root.read_text()
    for old, new, message in [
        ("rate: 16000, stream: in", "rate: 0, stream: in",
         "node 'resample_in': setting 'rate': must be one of 8000, 16000, 22050, 24000, 48000, got 0"),
        ("rate: 16000, stream: in", "rate: -5, stream: in", "node 'resample_in': setting 'rate': must be one of"),
        ("rate: 16000, stream: out", "rate: 44100, stream: out", "node 'resample_out': setting 'rate': must be one of"),
        ("aggressiveness: 2", "aggressiveness: 9", "node 'vad': setting 'aggressiveness': must be in 0..3, got 9"),
        ("silence_ms: 600", "silence_ms: .nan", "node 'vad': setting 'silence_ms': expected a finite number"),
        ("min_speech_ms: 200", "min_speech_ms: -1", "node 'barge_in': setting 'min_speech_ms': must be >= 0"),
    ]:
        path = tmp_path / "local.yaml"
        path.write_text(text.replace(old, new))
        with pytest.raises(ConfigError, match=re.escape(message)) as info:
            load_pipeline(path, env={})
        assert info.value.file == str(path) and info.value.line is not None


def test_constructor_errors_are_reported_with_file_line_and_node(tmp_path: Path, registry: Registry) -> None:
    class Picky(Processor):
        consumes = (FinalTranscript,)

        def __init__(self, settings: object = None, *, name: str | None = None) -> None:
            super().__init__(settings, name=name)
            if name == "bad_config":
                raise ConfigError("needs a licence key")
            if name == "bad_value":
                raise ValueError("window too short")
            if name == "bad_other":
                raise RuntimeError("no device")

    registry.register("picky", Picky)
    for node, message in [("bad_config", "needs a licence key"), ("bad_value", "invalid settings: window too short"),
                          ("bad_other", "cannot create Picky: RuntimeError: no device")]:
        path = write(tmp_path, f"nodes:\n  src: {{use: source}}\n  {node}: {{use: picky}}\nedges:\n  - src -> {node}\n")
        with pytest.raises(ConfigError) as info:
            build_graph(load_pipeline(path, registry=registry, env={}))
        assert str(info.value) == f"{path}:3: node '{node}': {message}"


# --- files that are not pipelines (defect 2) ---------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00n\x00a\x00", "UTF-16 text; save the file as UTF-8"),
        (b"name: caf\xe9\nnodes: {}\n", ":1: not UTF-8 text: byte 0xe9 cannot be decoded"),
        (b"name: x\n\nnodes:\n  a: {use: \x93echo\x94}\n", ":4: not UTF-8 text: byte 0x93"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary file (contains NUL bytes), not YAML text"),
        (b"", "empty file; a pipeline file is a mapping with 'nodes' and 'edges'"),
        (b"# only a comment\n", "empty file"),
        (b"- a\n- b\n", ":1: the top level is a list; a pipeline file must be a mapping"),
        (b"just words\n", "the top level is a string; a pipeline file must be a mapping"),
        (b"name: [x]\nnodes: {a: {use: echo}}\n", ":1: 'name' must be a string, got a list"),
        (b"a: " + b"[" * 300 + b"]" * 300 + b"\n", ":1: YAML nested more than 64 levels deep"),
        ("".join("  " * i + f"k{i}:\n" for i in range(400)).encode(), ":64: YAML nested more than 64 levels deep"),
    ],
)
def test_unreadable_files_are_config_errors_naming_them(tmp_path: Path, registry: Registry, content: bytes,
                                                        message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, registry=registry, env={})
    assert str(info.value).startswith(f"{path}")
    assert message in str(info.value)


def test_a_folder_or_a_missing_file_is_a_config_error(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(ConfigError, match=r"p.yaml: is a folder, not a YAML file"):
        (tmp_path / "p.yaml").mkdir()
        load_pipeline(tmp_path / "p.yaml", registry=registry, env={})
    with pytest.raises(ConfigError, match=r"gone.yaml: no such file"):
        load_pipeline(tmp_path / "gone.yaml", registry=registry, env={})


def test_utf8_with_bom_loads(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes("\ufeffname: café\nnodes: {a: {use: echo}}\n".encode())
    assert load_pipeline(path, registry=registry, env={}).name == "café"


# --- environment overrides (defect 8) ----------------------------------------------------


def test_env_override_out_of_range_names_the_variable_not_a_line(tmp_path: Path, ranged: Registry) -> None:
    path = write(tmp_path, "nodes:\n  src: {use: source}\n  r:\n    use: ranged\n    mode: 1\nedges:\n  - src -> r\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, registry=ranged, env={"VOICEGRAPH__R__MODE": "7"})
    assert str(info.value) == (f"{path}: node 'r': environment variable VOICEGRAPH__R__MODE: "
                               "setting 'mode': must be in 0..3, got 7")
    assert info.value.line is None


def test_env_variables_naming_no_node_or_setting_are_warned_about(
    tmp_path: Path, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"VOICEGRAPH__ECHOO__REPEAT": "2", "VOICEGRAPH__ECHO__REPAET": "2", "VOICEGRAPH__ECHO": "1",
           "VOICEGRAPH__ECHO__REPEAT": "4"}
    with caplog.at_level(logging.WARNING, logger="pipeline.config"):
        spec = load_pipeline(write(tmp_path, GOOD), registry=registry, env=env)
    assert spec.nodes[1].settings.repeat == 4  # the good one still applies
    path = str(tmp_path / "p.yaml")
    assert sorted(spec.warnings) == sorted([
        f"{path}: environment variable VOICEGRAPH__ECHOO__REPEAT ignored: this pipeline has no node 'echoo' "
        "(nodes: src, echo, out)",
        f"{path}: environment variable VOICEGRAPH__ECHO__REPAET ignored: node 'echo' (echo) has no setting "
        "'repaet' (settings: gain, limit, loud, mode, prefix, repeat, words)",
        "environment variable VOICEGRAPH__ECHO ignored: expected VOICEGRAPH__<NODE>__<SETTING>",
    ])
    assert sorted(r.getMessage() for r in caplog.records) == sorted(spec.warnings)


def test_env_override_reaches_nodes_with_dashes_and_dots(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, "nodes:\n  src: {use: source}\n  my-echo.v2: {use: echo}\nedges:\n  - src -> my-echo.v2\n")
    spec = load_pipeline(path, registry=registry, env={"VOICEGRAPH__MY_ECHO_V2__REPEAT": "3"})
    assert spec.nodes[1].settings.repeat == 3 and spec.warnings == ()


def test_a_plugin_with_unreadable_settings_is_a_config_error(tmp_path: Path, registry: Registry) -> None:
    @dataclass(frozen=True, kw_only=True)
    class BadHints:
        level: "NoSuchType" = None  # type: ignore[name-defined]  # noqa: F821

    class Odd(Processor):
        Settings = BadHints

    registry.register("odd", Odd)
    with pytest.raises(ConfigError, match=r"p.yaml:2: node 'a': settings class .*BadHints has annotations that cannot "
                                          r"be resolved: NameError"):
        load_pipeline(write(tmp_path, "nodes:\n  a: {use: odd}\n"), registry=registry, env={})


def test_a_plugin_declaring_nonsense_is_refused_when_registered(registry: Registry) -> None:
    class NotADataclass(Processor):
        Settings = dict

    class Strings(Processor):
        consumes = ("text",)  # type: ignore[assignment]

    with pytest.raises(ConfigError, match=r"node type 'a' \(.*NotADataclass\): Settings = <class 'dict'> is not a "
                                          "dataclass"):
        registry.register("a", NotADataclass)
    with pytest.raises(ConfigError, match=r"node type 'b' \(.*Strings\): consumes = \('text',\); expected a tuple "
                                          "of data frame classes"):
        registry.register("b", Strings)
