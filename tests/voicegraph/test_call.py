"""voicegraph call: exit codes and reported errors (issue 12, defects 6 and 7)."""

import asyncio
import json
from pathlib import Path

import pytest

from pipeline.frames import FinalTranscript, LLMToken, ResponseEnd
from pipeline.processor import Processor
from pipeline.registry import default_registry
from transports.local.text import TextCaller
from voicegraph.cli import main

ROOT = Path(__file__).resolve().parents[2]


class FaultyBrain(Processor):
    """Answers, then fails on every turn: a node error that does not end the call."""

    consumes = (FinalTranscript,)
    produces = (LLMToken,)

    async def process(self, frame: FinalTranscript) -> None:
        await self.push(LLMToken("ok", turn=frame.turn))
        await self.push(ResponseEnd(turn=frame.turn))
        raise ValueError(f"boom on turn {frame.turn}")


class MuteCaller(TextCaller):
    """Never says anything and never hangs up: only the timeout ends its call."""

    async def run(self) -> None:
        await asyncio.Event().wait()


class TalkingCaller(TextCaller):
    """A text caller that accepts the speech options (as a speech caller would), to test their checks."""

    def configure_call(self, *, wav: Path | None = None, interrupt_after_ms: float | None = None) -> None:
        self.interrupt_after_ms = interrupt_after_ms


@pytest.fixture(autouse=True)
def test_types(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, cls in [("t_faulty", FaultyBrain), ("t_mute", MuteCaller), ("t_talking", TalkingCaller)]:
        monkeypatch.setitem(default_registry._types, name, cls)


def pipeline(tmp_path: Path, caller: str, brain: str, extra: str = "") -> str:
    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\nnodes:\n  caller: {{use: {caller}}}\n  brain: {{use: {brain}{extra}}}\n"
                    "edges:\n  - caller -> brain -> caller\n")
    return str(path)


def test_node_errors_make_the_call_fail_and_are_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = pipeline(tmp_path, "text_caller", "t_faulty")
    assert main(["call", "--pipeline", path, "--say", "hello", "--say", "bye"]) == 1  # it exited 0
    out, err = capsys.readouterr()
    assert "errors (the call ended: eos)\n  brain: ValueError: boom on turn 1\n  brain: ValueError: boom on turn 2\n" in out
    assert "error: brain: ValueError: boom on turn 1\nerror: brain: ValueError: boom on turn 2\n" in err


def test_node_errors_in_the_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = pipeline(tmp_path, "text_caller", "t_faulty")
    assert main(["call", "--pipeline", path, "--say", "hello", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ended"] == "eos" and report["errors"] == ["brain: ValueError: boom on turn 1"]
    assert report["turns"][0]["bot_text"] == "ok"


def test_a_call_that_times_out_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = pipeline(tmp_path, "t_mute", "rules_brain")
    assert main(["call", "--pipeline", path, "--timeout", "0.05", "--json"]) == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["ended"] == "timeout"
    assert report["errors"] == ["call: it did not end within the --timeout of 0.05 s"]
    assert "error: call: it did not end within the --timeout of 0.05 s" in err


def test_interrupt_after_needs_a_speech_caller(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "--pipeline", "text", "--say", "a", "--say", "b", "--interrupt-after", "600"]) == 2
    assert capsys.readouterr().err == ("error: --interrupt-after needs a speech pipeline: the caller of 'text' "
                                       "(TextCaller) cannot play audio or talk over the bot\n")


def test_interrupt_after_with_one_line_and_no_greeting_is_refused_before_the_call(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICEGRAPH__BRAIN__GREETING", "")  # the spoken pipeline without its greeting
    assert main(["call", "--say", "one line", "--interrupt-after", "600"]) == 2  # nothing runs
    assert capsys.readouterr().err == (
        "error: --interrupt-after 600: the caller interrupts the bot's answer to one line with its next line, but it "
        "has only one line to say; give two or more --say lines (or use a pipeline whose brain speaks a greeting "
        "first)\n")


def test_interrupt_after_with_a_wav_and_no_greeting_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transports.local.wav import write_wav

    monkeypatch.setenv("VOICEGRAPH__BRAIN__GREETING", "")
    write_wav(tmp_path / "x.wav", bytes(3200), 16000)
    assert main(["call", "--wav", str(tmp_path / "x.wav"), "--interrupt-after", "100"]) == 2
    assert "but a --wav file is a single line" in capsys.readouterr().err


def test_one_line_is_enough_when_the_brain_greets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = pipeline(tmp_path, "t_talking", "rules_brain", ", greeting: Hello")
    # Past the check (a greeting to interrupt); this text call never talks over anything, so it fails after.
    assert main(["call", "--pipeline", path, "--say", "hi", "--interrupt-after", "600"]) == 1
    assert "error: --interrupt-after 600: the caller never talked over the bot" in capsys.readouterr().err


def test_interrupt_after_that_interrupts_nothing_fails_after_the_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = pipeline(tmp_path, "t_talking", "rules_brain")
    assert main(["call", "--pipeline", path, "--say", "hi", "--say", "bye", "--interrupt-after", "600", "--json"]) == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["ended"] == "eos" and not any(t["interrupted"] for t in report["turns"])
    assert report["errors"] == ["--interrupt-after 600: the caller never talked over the bot (no answer lasted that "
                                "long while the caller had a line left to say)"]
    assert "error: --interrupt-after 600: the caller never talked over the bot" in err


def test_an_unknown_pipeline_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "--pipeline", "nope"]) == 2
    assert "error: no pipeline named 'nope' in " in capsys.readouterr().err
