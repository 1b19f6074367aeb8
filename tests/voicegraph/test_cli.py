"""The voicegraph command: validate, graph, call (text)."""

import json
from pathlib import Path

import pytest

from voicegraph.cli import build_parser, main

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


# --- flags are checked when parsed (issue 12, defect 5) ----------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["call", "--timeout", "nan"], "argument --timeout: must be a number of seconds > 0 and <= 86400, got 'nan'"),
        (["call", "--timeout", "inf"], "argument --timeout: must be a number of seconds > 0 and <= 86400, got 'inf'"),
        (["call", "--timeout", "-1"], "argument --timeout: must be a number of seconds > 0"),
        (["call", "--timeout", "0"], "argument --timeout: must be a number of seconds > 0"),
        (["call", "--timeout", "soon"], "argument --timeout: expected a number of seconds, got 'soon'"),
        (["call", "--interrupt-after", "-5"], "argument --interrupt-after: must be a number of milliseconds >= 0"),
        (["call", "--interrupt-after", "nan"], "argument --interrupt-after: must be a number of milliseconds >= 0"),
        (["call", "--say", "  "], "argument --say: a line to say cannot be blank"),
        (["call", "--wav", "/nonexistent/x.wav"], "argument --wav: /nonexistent/x.wav: no such file"),
        (["--log-level", "loud", "validate"], "argument --log-level: invalid choice: 'LOUD'"),
        (["serve", "--port", "70000"], "argument --port: must be a TCP port 1..65535, got 70000"),
        (["serve", "--port", "0"], "argument --port: must be a TCP port 1..65535, got 0"),
        (["serve", "--port", "http"], "argument --port: expected a TCP port number, got 'http'"),
    ],
)
def test_bad_flags_exit_2_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_good_flags_parse() -> None:
    args = build_parser().parse_args(["--log-level", "debug", "call", "--timeout", "2.5", "--interrupt-after", "0"])
    assert (args.log_level, args.timeout, args.interrupt_after) == ("DEBUG", 2.5, 0.0)
    assert build_parser().parse_args(["serve", "--port", "65535"]).port == 65535


# --- validate: every file checked, warnings shown (defects 2 and 8) ---------------------------

TEXT = (ROOT / "config" / "pipelines" / "text.yaml").read_text()


def test_validate_reports_a_non_utf8_file_and_still_checks_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a_latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (tmp_path / "b_deep.yaml").write_text("a: " + "[" * 500 + "]" * 500 + "\n")
    (tmp_path / "c_text.yaml").write_text(TEXT)
    assert main(["validate", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert f"error: {tmp_path / 'a_latin1.yaml'}:1: not UTF-8 text: byte 0xe9 cannot be decoded" in err
    assert f"error: {tmp_path / 'b_deep.yaml'}:1: YAML nested more than 64 levels deep" in err
    assert f"ok: {tmp_path / 'c_text.yaml'} (3 nodes, 3 edges)" in out
    assert "Traceback" not in err


def test_validate_names_missing_paths_and_empty_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml"), str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path}: no .yaml or .yml files in this folder" in err
    assert f"error: {tmp_path / 'nope.yaml'}: no such file" in err


def test_validate_prints_env_override_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "text.yaml").write_text(TEXT)
    monkeypatch.setenv("VOICEGRAPH__BRAINN__FALLBACK", "hi")
    monkeypatch.setenv("VOICEGRAPH__BRAIN__FALLBAK", "hi")
    assert main(["validate", str(tmp_path / "text.yaml")]) == 0
    err = capsys.readouterr().err
    assert ("warning: " + str(tmp_path / "text.yaml") + ": environment variable VOICEGRAPH__BRAINN__FALLBACK ignored: "
            "this pipeline has no node 'brainn' (nodes: caller, brain, log)") in err
    assert "environment variable VOICEGRAPH__BRAIN__FALLBAK ignored: node 'brain' (rules_brain) has no setting " \
           "'fallbak'" in err


def test_validate_names_the_variable_of_a_bad_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "text.yaml").write_text(TEXT)
    monkeypatch.setenv("VOICEGRAPH__CALLER__REPLY_TIMEOUT_S", "-1")
    assert main(["validate", str(tmp_path / "text.yaml")]) == 1
    assert (f"error: {tmp_path / 'text.yaml'}: node 'caller': environment variable VOICEGRAPH__CALLER__REPLY_TIMEOUT_S: "
            "setting 'reply_timeout_s': must be > 0, got -1") in capsys.readouterr().err


# --- the settings reference (defect 11) ----------------------------------------------------


def test_nodes_lists_every_type_with_its_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.registry import default_registry

    assert main(["nodes"]) == 0
    out = capsys.readouterr().out
    for name in default_registry.names():
        assert f"\n{name} (" in "\n" + out
    lines = out.splitlines()
    row = next(line for line in lines if line.strip().startswith("aggressiveness"))
    assert row.split()[:4] == ["aggressiveness", "integer", "2", "0..3"]
    assert row.endswith("webrtcvad mode; higher rejects more non-speech")
    rate = next(line for line in lines if line.strip().startswith("rate "))
    assert "one of 8000, 16000, 22050, 24000, 48000" in rate


def test_nodes_for_one_type_and_an_unknown_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nodes", "text_caller"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "text_caller (transports.local.text.TextCaller)"
    assert "vad (" not in out
    assert "  reply_timeout_s  number          10       > 0      how long to wait for each reply" in out
    assert main(["nodes", "vadd"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown node type 'vadd' (known types: ")
    known = err.split("(known types: ", 1)[1].rstrip(")\n").split(", ")
    assert {"barge_in", "passthrough", "vad", "stt", "tts"} <= set(known) and known == sorted(known)


def test_validate_survives_a_bug_in_one_file_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import voicegraph.cli as cli

    (tmp_path / "a.yaml").write_text(TEXT)
    (tmp_path / "b.yaml").write_text(TEXT)
    real = cli.build_graph

    def flaky(spec):  # type: ignore[no-untyped-def]
        if spec.file.endswith("a.yaml"):
            raise RuntimeError("a node type with a bug")
        return real(spec)

    monkeypatch.setattr(cli, "build_graph", flaky)
    assert main(["validate", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert f"error: {tmp_path / 'a.yaml'}: unexpected RuntimeError while checking it: a node type with a bug" in err
    assert f"ok: {tmp_path / 'b.yaml'}" in out
