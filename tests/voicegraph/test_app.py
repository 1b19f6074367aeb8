"""The ASGI app: /healthz, and /readyz answered from a check made off the event loop (issue 12, defect 12)."""

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import voicegraph.app as app_module
from voicegraph.app import PipelineCheck, check_pipelines, create_app

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "config" / "pipelines" / "text.yaml").read_text()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "text.yaml").write_text(TEXT)
    return tmp_path


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every pipeline file the app parses."""
    seen: list[Path] = []
    real = app_module.load_pipeline

    def counting(path: Path, **kwargs: Any) -> Any:
        seen.append(path)
        return real(path, **kwargs)

    monkeypatch.setattr(app_module, "load_pipeline", counting)
    return seen


def test_healthz() -> None:
    body = TestClient(create_app()).get("/healthz").json()
    assert body["status"] == "ok" and body["version"]


def test_readiness_is_starting_until_checked_then_cached_until_a_file_changes(
    config: Path, loads: list[Path]
) -> None:
    app = create_app(config, poll_s=3600)
    readiness = app.state.readiness
    client = TestClient(app)  # no lifespan: no check has run
    starting = client.get("/readyz")
    assert starting.status_code == 503 and starting.json()["status"] == "starting"

    assert readiness.check() is True
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["pipelines"] == ["text"] and ready.json()["errors"] == []

    broken = config / "pipelines" / "text.yaml"
    broken.write_bytes(b"name: caf\xe9\n" + TEXT.encode())
    assert client.get("/readyz").status_code == 200  # the request parses nothing: still the last result
    assert len(loads) == 1
    assert readiness.check() is True  # the file changed: checked again
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["errors"] == [f"{broken}:1: not UTF-8 text: byte 0xe9 cannot be decoded; save the "
                                          "file as UTF-8"]
    assert readiness.check() is False and len(loads) == 2  # unchanged: not parsed again

    broken.write_text(TEXT + "\n# fixed\n")
    assert readiness.check() is True
    assert client.get("/readyz").status_code == 200
    for _ in range(5):
        client.get("/readyz")
    assert len(loads) == 3  # three checks, no parsing by any of the nine requests


def test_one_bad_file_does_not_hide_the_others(config: Path) -> None:
    (config / "pipelines" / "binary.yaml").write_bytes(b"\x00\x01\x02")
    (config / "pipelines" / "lonely.yaml").write_text("nodes:\n  caller: {use: text_caller}\n")
    result = check_pipelines(config / "pipelines")
    assert result.ok == ("text",) and not result.ready
    assert result.errors == (
        f"{config / 'pipelines' / 'binary.yaml'}: binary file (contains NUL bytes), not YAML text",
        f"{config / 'pipelines' / 'lonely.yaml'}:2: node 'caller': dangling node: no edge reaches it or leaves it, "
        "so a call through it could never end",
    )


def test_the_first_check_runs_in_a_thread_while_the_app_serves(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, checking = threading.Event(), threading.Event()
    on_loop: list[bool] = []
    real = app_module.check_pipelines

    def slow_check(folder: Path) -> PipelineCheck:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # no loop in this thread: a worker thread
            on_loop.append(False)
        checking.set()
        assert gate.wait(30)  # held until the test has seen the app answer meanwhile
        return real(folder)

    monkeypatch.setattr(app_module, "check_pipelines", slow_check)
    app = create_app(config, poll_s=3600)
    with TestClient(app) as client:  # runs the lifespan: the watcher starts the first check
        assert checking.wait(30)
        during = client.get("/readyz")  # answered while the check is still running
        assert during.status_code == 503 and during.json()["status"] == "starting"
        assert client.get("/healthz").status_code == 200
        gate.set()
        app.state.readiness.check(force=True)  # waits for the watcher's check (one lock), then checks again
        assert client.get("/readyz").json()["pipelines"] == ["text"]
    assert on_loop == [False, False] and app.state.readiness.checks == 2


def test_a_missing_pipelines_folder_is_not_ready(tmp_path: Path) -> None:
    result = check_pipelines(tmp_path / "pipelines")
    assert not result.ready and result.errors == (f"{tmp_path / 'pipelines'}: no such folder",)


TINY_ACS = """\
name: acs
nodes:
  caller: {use: acs_media, sample_rate: 16000}
  middle: {use: passthrough}
edges:
  - caller -> middle -> caller
"""


def test_the_app_mounts_the_acs_routes_on_one_registry(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.routing import Route, WebSocketRoute

    monkeypatch.delenv("VOICEGRAPH_ACS_NO_AUTH", raising=False)
    monkeypatch.delenv("VOICEGRAPH_API_KEY", raising=False)
    monkeypatch.delenv("VOICEGRAPH_ACS_AUDIENCE", raising=False)
    app = create_app(config)
    paths = {(r.path, type(r).__name__) for r in app.routes if isinstance(r, Route | WebSocketRoute)}
    assert {("/acs/events", "Route"), ("/acs/callbacks", "Route"), ("/acs/media", "WebSocketRoute"),
            ("/acs/calls", "Route"), ("/acs/calls/{call_action}", "Route")} <= paths
    assert app.state.acs_control.sessions is app.state.acs_sessions
    client = TestClient(app)
    # no audience configured: ACS's requests cannot be checked, so they fail closed (503: the
    # fault is ours); no API key configured: actions are off
    assert client.post("/acs/callbacks?token=x", content=b"[]").status_code == 503
    assert client.post("/acs/callbacks?token=x", content=b"[]", headers={"Authorization": "Bearer x.y.z"}
                       ).status_code == 503
    assert client.post("/acs/calls", json={"target": "+15550100"}).status_code == 503


def test_a_disconnect_callback_ends_the_live_media_call(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry, the callbacks and the real media route together: CallDisconnected ends
    the call's graph, the route closes the socket, nothing of the call is left."""
    import json

    from starlette.websockets import WebSocketDisconnect

    (config / "pipelines" / "acs.yaml").write_text(TINY_ACS)
    monkeypatch.setenv("VOICEGRAPH_ACS_NO_AUTH", "1")
    app = create_app(config, poll_s=3600)
    sessions = app.state.acs_sessions
    running = threading.Event()
    sessions.watch(lambda started: running.set())
    token = sessions.expect("call-1")
    session = sessions.live("call-1")
    with TestClient(app) as client, client.websocket_connect(f"/acs/media?token={token}") as ws:
        ws.send_text(json.dumps({"kind": "AudioMetadata", "audioMetadata": {
            "subscriptionId": "s", "encoding": "PCM", "sampleRate": 16000, "channels": 1, "length": 640}}))
        connected = {"id": "e1", "source": "calling/callConnections/call-1", "specversion": "1.0",
                     "type": "Microsoft.Communication.CallConnected", "data": {"callConnectionId": "call-1"}}
        gone = dict(connected, id="e2", type="Microsoft.Communication.CallDisconnected")
        assert running.wait(30)  # the graph is built in a thread: end the call once it runs
        assert client.post("/acs/callbacks", json=[connected]).json()["applied"] == 1
        assert session.state == "connected" and session.media_connected
        assert client.post("/acs/callbacks", json=[gone]).json()["applied"] == 1
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()  # the route closes the socket once the graph has ended
    assert closed.value.code == 1000  # ACS ended the call: a normal close
    assert session.result is not None and session.result.reason == "cancelled"
    assert session.task is not None and session.task.done()
    assert sessions.live("call-1") is None and sessions.counts().live == 0


def test_a_call_disconnected_while_its_graph_is_built_never_runs(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CallDisconnected lands while the route builds the graph in a thread (no runner to
    cancel yet): the route sees the call has ended and closes the socket without running it."""
    from starlette.websockets import WebSocketDisconnect

    import transports.acs.route as route

    (config / "pipelines" / "acs.yaml").write_text(TINY_ACS)
    monkeypatch.setenv("VOICEGRAPH_ACS_NO_AUTH", "1")
    building, release = threading.Event(), threading.Event()
    load = route._load_graph

    def slow_load(pipeline: Path) -> Any:
        building.set()
        assert release.wait(30)
        return load(pipeline)

    monkeypatch.setattr(route, "_load_graph", slow_load)
    app = create_app(config, poll_s=3600)
    sessions = app.state.acs_sessions
    token = sessions.expect("call-2")
    session = sessions.live("call-2")
    gone = {"id": "e1", "source": "calling/callConnections/call-2", "specversion": "1.0",
            "type": "Microsoft.Communication.CallDisconnected", "data": {"callConnectionId": "call-2"}}
    with TestClient(app) as client, client.websocket_connect(f"/acs/media?token={token}") as ws:
        assert building.wait(30)
        assert client.post("/acs/callbacks", json=[gone]).json()["applied"] == 1
        release.set()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1000
    assert session is not None and session.runner is None and session.result is None  # it never ran
    assert sessions.counts().live == 0
