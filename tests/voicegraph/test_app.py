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
