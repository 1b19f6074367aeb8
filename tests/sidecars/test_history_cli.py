"""``voicegraph history CALL_ID``: a stored call as text and as JSON, an unknown call, a bad environment."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from processors.sidecars.history import History
from processors.sidecars.history_sqlite import SqliteHistory
from tests.sidecars.history_calls import full_call
from voicegraph.cli import main


def _store(path: Path, call_id: str) -> None:
    async def write() -> None:
        history = History(SqliteHistory(path), journal=path.with_name("j.jsonl"), batch_ms=0)
        await history.start()
        await full_call(call_id, [history.sink(call_id)]).aclose()
        assert await history.flush()
        await history.aclose()

    asyncio.run(write())


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "history.db"
    monkeypatch.delenv("COSMOS_ENDPOINT", raising=False)
    monkeypatch.setenv("VOICEGRAPH_HISTORY_PATH", str(path))
    _store(path, "call-1")
    return path


def test_history_prints_the_call_and_its_transcript(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "call-1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "call call-1  ended (hangup)  9.0 s, 2 turns"
    assert out[1] == ("  caller +14255550123  callee +18005550100  pipeline acs  scenario insurance  transport acs  "
                      "worker host:1")
    assert out[3] == "  agents auth -> fnol"
    assert out[4:] == [
        "  [    2.4 s] bot (auth): Thank you for calling.",
        "  [    5.1 s] caller: Hello, this is Jane Doe.",
        "  [    6.9 s] bot (fnol, gpt-4o-mini, 530 ms): Thank you Jane. I can help you file a claim.  "
        "[interrupted; heard: 'Thank you Jane.']",
        '             tool verify_caller({"name": "Jane Doe"}) -> {"verified": true}',
        "  error tts: voice fell back to espeak"]


def test_history_json_is_the_stored_record(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--json", "call-1"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["call_id"] == "call-1" and record["outcome"] == "hangup"
    assert [line["seq"] for line in record["transcript"]] == [6, 7, 9]


def test_an_unknown_call_is_exit_1_with_the_store_named(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "nope"]) == 1
    assert capsys.readouterr().err.strip() == f"error: no call 'nope' in the history (SQLite {db})"


def test_a_bad_environment_is_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COSMOS_ENDPOINT", "not a url")
    assert main(["history", "x"]) == 2
    assert "COSMOS_ENDPOINT must be an http(s) URL of a Cosmos DB account, got 'not a url'" in capsys.readouterr().err


def test_no_history_file_is_exit_1_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("COSMOS_ENDPOINT", raising=False)
    monkeypatch.setenv("VOICEGRAPH_HISTORY_PATH", str(tmp_path / "none" / "h.db"))
    assert main(["history", "x"]) == 1
    assert "no history at" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
