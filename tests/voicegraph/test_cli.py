"""The voicegraph command: validate, graph, call (text), and the ASGI app."""

import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from voicegraph.app import create_app
from voicegraph.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_validate_ok_and_failure_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "config" / "pipelines")]) == 0
    assert "ok: " in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  caller: {use: text_caller}\n  brain: {use: rules_brain, fallback: 3}\nedges:\n"
                   "  - caller -> brain -> caller\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3: node 'brain': setting 'fallback': expected a string, got 3" in err


def test_graph_prints_mermaid_with_latency_budget(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "text"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowchart LR\n")
    assert "caller --> brain" in out and "brain -.-> log" in out
    assert "%% latency caller -> brain -> caller:" in out


def test_text_call_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["call", "--pipeline", "text", "--json", "--say", "I want to file a claim for my car accident",
               "--say", "goodbye"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ended"] == "eos" and report["errors"] == []
    turns = report["turns"]
    assert [t["turn"] for t in turns] == [1, 2]
    assert turns[0]["caller_text"] == turns[0]["heard_text"] == "I want to file a claim for my car accident"
    assert turns[0]["bot_text"].startswith("I am sorry to hear that. I can help you file a claim.")
    assert turns[1]["bot_text"] == "Thank you for calling. Goodbye!"
    assert turns[0]["interrupted"] is False
    assert set(turns[0]["latency_ms"]) == {"stt_final", "llm_first_token", "tts_first_audio", "first_audio_out"}
    assert turns[0]["latency_ms"]["llm_first_token"] >= 0


def test_text_call_human_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "--pipeline", "text", "--say", "what are your hours"]) == 0
    out = capsys.readouterr().out
    assert "heard       : what are your hours" in out
    assert "bot         : We are open from 8 am to 8 pm, Monday to Saturday." in out


def test_health_and_readiness(tmp_path: Path) -> None:
    client = TestClient(create_app())
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and "text" in ready.json()["pipelines"]
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "broken.yaml").write_text("nodes: {a: {use: nope}}\n")
    bad = TestClient(create_app(tmp_path)).get("/readyz")
    assert bad.status_code == 503 and "unknown node type 'nope'" in bad.json()["errors"][0]
