"""The worker's data tier: configuration (file and environment, clear errors), and a
`voicegraph call` whose events reach a subscriber declared in config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.v1.event import CloudEvent

from pipeline.config import build_graph, load_pipeline
from pipeline.context import CallContext
from pipeline.errors import ConfigError
from pipeline.frames import FinalTranscript
from pipeline.graph import Graph
from pipeline.processor import Processor
from processors.sidecars import services
from processors.sidecars.events import CALL_ENDED, CALL_STARTED, TRANSCRIPTION_RECEIVED, InProcessTransport
from processors.sidecars.events_redis import RedisStreamsTransport
from processors.sidecars.services import DataTier, data_tier_from_env, load_sidecars
from processors.sidecars.tap import CallMeta
from transports.local.text import TextCaller
from voicegraph.call import CallOptions, run_call_report, with_data_tier

ROOT = Path(__file__).resolve().parents[2]
RECEIVED: list[CloudEvent] = []


def keep(event: CloudEvent) -> None:
    """A subscriber named in the test's config."""
    RECEIVED.append(event)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecars.yaml"
    path.write_text(text)
    return path


def test_the_shipped_config_is_the_embedded_default() -> None:
    config = load_sidecars(ROOT / "config" / "sidecars.yaml")
    assert (config.events.publisher, config.events.subscribers, config.recordings) == ("inprocess", (), None)
    tier = data_tier_from_env({"VOICEGRAPH_SIDECARS": str(ROOT / "config" / "sidecars.yaml")})
    assert tier.events is None and tier.recordings is None  # nobody listens: no events are made


@pytest.mark.parametrize(("text", "message"), [
    ("events: {publisher: kafka}", "events.publisher: 'kafka' is not one of inprocess, redis, eventgrid"),
    ("events: {queue: lots}", "events: invalid literal for int()"),
    ("events: {subscribers: [{use: 'a:b'}]}", "events.subscribers[0]: needs a name"),
    ("events: {subscribers: [{name: x, types: [call.started]}]}", "unknown event types ['call.started']"),
    ("event: {}", "unknown keys ['event'] (known: events, recordings)"),
    ("events: {subscribers: [{name: x, use: nowhere.at.all:fn}]}", "events subscriber x: cannot import"),
])
def test_a_bad_config_names_the_file_and_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        data_tier_from_env({"VOICEGRAPH_SIDECARS": str(path)})
    assert message in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(("env", "message"), [
    ({"VOICEGRAPH_EVENTS": "smoke"}, "environment variable VOICEGRAPH_EVENTS: 'smoke' is not one of"),
    ({"VOICEGRAPH_EVENTS": "redis"}, "the redis event publisher needs REDIS_URL"),
    ({"VOICEGRAPH_EVENTS": "redis", "REDIS_URL": "http://nope"}, "environment variable REDIS_URL:"),
    ({"VOICEGRAPH_EVENTS": "eventgrid"}, "needs EVENTGRID_ENDPOINT"),
    ({"VOICEGRAPH_EVENTS": "eventgrid", "EVENTGRID_ENDPOINT": "topic.example"}, "EVENTGRID_ENDPOINT: event grid"),
])
def test_bad_environment_values_are_refused_at_start(tmp_path: Path, env: dict[str, str], message: str) -> None:
    env = {"VOICEGRAPH_SIDECARS": str(write(tmp_path, "{}")), **env}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        data_tier_from_env(env)


def test_the_environment_picks_the_publisher_and_the_recordings(tmp_path: Path) -> None:
    path = write(tmp_path, "events: {subscribers: [{name: billing}]}\nrecordings: here\n")
    tier = data_tier_from_env({"VOICEGRAPH_SIDECARS": str(path), "VOICEGRAPH_EVENTS": "redis",
                               "REDIS_URL": "redis://127.0.0.1:1/0", "VOICEGRAPH_RECORDINGS": str(tmp_path / "r")})
    assert tier.events is not None and isinstance(tier.events.transport, RedisStreamsTransport)
    assert tier.events.transport.groups == ("billing",) and tier.recordings == tmp_path / "r"
    with pytest.raises(ConfigError, match="events subscriber billing: use must be 'module:function'"):
        data_tier_from_env({"VOICEGRAPH_SIDECARS": str(path)})  # in-process, a group name is not enough
    path.write_text("recordings: here\n")
    off = data_tier_from_env({"VOICEGRAPH_SIDECARS": str(path), "VOICEGRAPH_RECORDINGS": "0"})
    assert off.recordings is None


async def test_a_call_publishes_to_the_subscribers_declared_in_config(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
events:
  subscribers:
    - {{name: mine, use: "{__name__}:keep", types: [{TRANSCRIPTION_RECEIVED}, {CALL_ENDED}]}}
""")
    RECEIVED.clear()
    tier = data_tier_from_env({"VOICEGRAPH_SIDECARS": str(path)})
    assert tier.events is not None and isinstance(tier.events.transport, InProcessTransport)
    graph = build_graph(load_pipeline(ROOT / "config" / "pipelines" / "text.yaml"))
    options = CallOptions(pipeline=ROOT / "config" / "pipelines" / "text.yaml", say=("hello", "goodbye"))
    report: dict[str, Any] = await with_data_tier(tier, run_call_report(graph, options))
    assert services.current() is not tier  # put back after the call
    assert [e.get_type() for e in RECEIVED] == [TRANSCRIPTION_RECEIVED, TRANSCRIPTION_RECEIVED, CALL_ENDED]
    assert [e.get_data()["text"] for e in RECEIVED[:2]] == ["hello", "goodbye"]  # type: ignore[index]
    ended = RECEIVED[2].get_data()
    assert isinstance(ended, dict) and ended["report"] == report and ended["turns"] == 2
    assert RECEIVED[2].get_subject() == report["call_id"]


async def test_without_a_tier_installed_a_call_costs_no_events() -> None:
    previous = services.install(None)
    try:
        tier = services.current()
        assert isinstance(tier, DataTier) and tier.events is None and tier.sinks == []
    finally:
        services.install(previous)


def test_voicegraph_call_caller_is_the_callers_id_in_the_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from voicegraph.cli import main

    path = write(tmp_path, f'events:\n  subscribers:\n    - {{name: mine, use: "{__name__}:keep", '
                           f'types: [{CALL_STARTED}]}}\n')
    monkeypatch.setenv("VOICEGRAPH_SIDECARS", str(path))
    RECEIVED.clear()
    assert main(["call", "--pipeline", "text", "--text", "hello", "--caller", "+1 555 0100", "--json"]) == 0
    [started] = RECEIVED
    data = started.get_data()
    assert isinstance(data, dict) and (data["caller"], data["pipeline"], data["transport"]) == (
        "+1 555 0100", "text", "local")
    with pytest.raises(SystemExit) as exit_:
        main(["call", "--pipeline", "text", "--caller", " "])
    assert exit_.value.code == 2
    assert "a caller id is 1-256 printable characters" in capsys.readouterr().err


class Remembering(Processor):
    """A node with memories, as the orchestrator has."""

    consumes = (FinalTranscript,)

    def __init__(self, *, name: str) -> None:
        super().__init__(name=name)
        self.given: dict[str, Any] = {}

    def use_memory(self, *, short_term: Any = None, long_term: Any = None, caller_id: str = "") -> None:
        self.given = {"short_term": short_term, "long_term": long_term, "caller_id": caller_id}


def test_attach_call_gives_the_brain_the_tiers_memories_and_the_callers_id() -> None:
    short, long = object(), object()
    tier = DataTier(short_term=short, long_term=long)
    graph = Graph("g")
    brain = Remembering(name="brain")
    graph.chain(TextCaller(name="caller"), brain)
    tier.attach_call(graph, CallContext("c"), CallMeta(caller="alice"))
    assert brain.given == {"short_term": short, "long_term": long, "caller_id": "alice"}
