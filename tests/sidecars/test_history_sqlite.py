"""The history on SQLite: a full call record round trip, batches, odd call ids, huge texts,
long-term memory, a full queue, and configuration from the environment."""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from processors.sidecars.facts import AgentResponded, CallFacts, CallStarted, TranscriptReceived
from processors.sidecars.history import History, history_from_env
from processors.sidecars.history_cosmos import CosmosHistory
from processors.sidecars.history_record import MAX_TEXT
from processors.sidecars.history_sqlite import SqliteHistory
from tests.sidecars.history_calls import LATENCY, TOOL, full_call, transcript_texts


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[History]:
    store = History(SqliteHistory(tmp_path / "history.db"), journal=tmp_path / "journal.jsonl", batch_ms=0)
    await store.start()
    yield store
    await store.aclose()


async def test_a_full_call_record_round_trips(history: History, tmp_path: Path) -> None:
    facts = full_call("call-1", [history.sink("call-1")])
    await facts.aclose()
    assert await history.flush()
    record = await history.call_record("call-1")
    assert record is not None
    assert {k: record[k] for k in ("call_id", "status", "caller", "callee", "pipeline", "scenario", "transport",
                                   "worker", "reason", "duration_ms", "turns", "outcome")} == {
        "call_id": "call-1", "status": "ended", "caller": "+14255550123", "callee": "+18005550100",
        "pipeline": "acs", "scenario": "insurance", "transport": "acs", "worker": "host:1", "reason": "hangup",
        "duration_ms": 9000.0, "turns": 2, "outcome": "hangup"}
    assert record["participants"] == [{"participant": "+14255550123", "role": "caller", "at_ms": 0.0},
                                      {"participant": "bot", "role": "bot", "at_ms": 0.0}]
    assert record["agents"] == ["auth", "fnol"]
    assert record["handoffs"] == [{"turn": 2, "from": "auth", "to": "fnol", "reason": "handoff from auth",
                                   "announced": True}]
    assert record["recordings"] == [{"recording_id": "rec-1", "location": "/tmp/rec-1.wav", "source": "local"}]
    assert record["errors"] == [{"source": "tts", "message": "voice fell back to espeak", "fatal": False,
                                 "at_ms": 6900.0}]
    assert record["state"] == {"turn": 2, "agent": "fnol", "slots": {"name": "Jane Doe"}}
    assert transcript_texts(record) == [("bot", "Thank you for calling."), ("caller", "Hello, this is Jane Doe."),
                                        ("bot", "Thank you Jane. I can help you file a claim.")]
    answer = record["transcript"][2]
    assert {k: answer[k] for k in ("seq", "turn", "agent", "heard_text", "interrupted", "route", "model",
                                   "deployment", "latency_ms", "tool_calls", "at_ms")} == {
        "seq": 9, "turn": 2, "agent": "fnol", "heard_text": "Thank you Jane.", "interrupted": True, "route": "fast",
        "model": "gpt-4o-mini", "deployment": "gpt4o-mini-eu", "latency_ms": LATENCY, "tool_calls": [TOOL],
        "at_ms": 6900.0}
    assert record["transcript"][1]["at_ms"] == 5100.0 and record["transcript"][1]["agent"] == "auth"
    # agent performance: one document per agent of the call
    fnol = await history.backend.partition("agent_performance", "fnol")
    assert [(d["call_id"], d["turns"], d["interrupted"], d["tool_calls"], d["handoffs_in"], d["first_audio_ms"])
            for d in fnol] == [("call-1", 1, 1, 1, 1, {"mean": 530.0, "max": 530.0, "n": 1})]
    auth = await history.backend.partition("agent_performance", "auth")
    assert [(d["turns"], d["handoffs_out"], d["first_audio_ms"]["n"]) for d in auth] == [(1, 1, 0)]
    # the caller's past calls
    past = await history.past_calls("+14255550123")
    assert [(c["call_id"], c["turns"], c["agents"], c["outcome"]) for c in past] == [
        ("call-1", 2, ["auth", "fnol"], "hangup")]
    assert history.counters.accepted == 12 and history.counters.dropped == 0 and history.counters.spooled == 0


async def test_the_file_is_in_wal_mode_with_one_row_per_document(history: History, tmp_path: Path) -> None:
    await full_call("call-1", [history.sink("call-1")]).aclose()
    await full_call("call-2", [history.sink("call-2")]).aclose()
    assert await history.flush()
    db = sqlite3.connect(tmp_path / "history.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("calls", "transcripts", "agent_performance", "profiles")}
        expires = db.execute("SELECT min(expires - updated), max(expires - updated) FROM transcripts").fetchone()
        profile_expiry = db.execute("SELECT expires FROM profiles").fetchone()[0]
    finally:
        db.close()
    # a call document updated at the end (not a second row); 3 transcript lines per call
    assert counts == {"calls": 2, "transcripts": 6, "agent_performance": 4, "profiles": 1}
    assert expires == (7 * 365 * 86400, 7 * 365 * 86400)
    assert profile_expiry is None


async def test_facts_offered_together_are_written_in_one_batch(tmp_path: Path) -> None:
    history = History(SqliteHistory(tmp_path / "h.db"), journal=tmp_path / "j.jsonl", batch_ms=0, batch_max=500)
    for n in range(3):  # offered before the writer runs: one batch
        full_call(f"call-{n}", [history.sink(f"call-{n}")])
    await history.start()
    try:
        assert await history.flush()
        assert history.counters.batches == 1
        assert history.counters.accepted == 36
        assert [len((await history.call_record(f"call-{n}") or {})["transcript"]) for n in range(3)] == [3, 3, 3]
    finally:
        await history.aclose()


@pytest.mark.parametrize("call_id", ["call/1?#x ü", "a" * 1000, "../../etc/passwd", "'; DROP TABLE calls; --"])
async def test_odd_call_ids_round_trip(history: History, call_id: str) -> None:
    await full_call(call_id, [history.sink(call_id)]).aclose()
    assert await history.flush()
    record = await history.call_record(call_id)
    assert record is not None and record["call_id"] == call_id and len(record["transcript"]) == 3
    assert len(record["id"]) <= 255 and not set(record["id"]) & set("/\\?#")


async def test_a_huge_transcript_is_cut_counted_and_logged(history: History, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "processors.sidecars.history")
    await full_call("big", [history.sink("big")], caller_text="word " * 200_000).aclose()
    assert await history.flush()
    record = await history.call_record("big")
    assert record is not None
    line = record["transcript"][1]
    assert len(line["text"]) == MAX_TEXT and line["truncated"] == 1_000_000
    assert history.counters.truncated == 1
    assert "call big: a text over the size limit was cut (TranscriptReceived)" in caplog.text


async def test_a_huge_tool_result_is_replaced_by_its_size(history: History) -> None:
    facts = CallFacts("tools", [history.sink("tools")], lambda: 0.0)
    facts.emit(AgentResponded, turn=1, text="Here it is.", heard_text="Here it is.", agent="support",
               tool_calls=[{"name": "fetch", "arguments": {"q": "all"}, "result": {"rows": ["x" * 50] * 1000}}])
    await facts.aclose()
    assert await history.flush()
    record = await history.call_record("tools")
    assert record is not None
    assert record["transcript"][0]["tool_calls"] == [{"name": "fetch", "arguments": {"q": "all"},
                                                      "result": {"truncated": 54010}}]
    assert history.counters.truncated == 1


async def test_long_term_memory_merges_profiles_and_keeps_one_summary_per_call(history: History) -> None:
    assert await history.profile("+1555") == {} and await history.past_calls("+1555") == []
    await history.remember("+1555", {"name": "Jane Doe", "first_name": "Jane"}, {"call_id": "c1", "turns": 3})
    await history.remember("+1555", {"policy_number": "POL-12345"}, {"call_id": "c1", "outcome": "hangup"})
    await history.remember("+1555", {}, {"call_id": "c2", "turns": 1})
    assert await history.flush()
    assert await history.profile("+1555") == {"name": "Jane Doe", "first_name": "Jane", "policy_number": "POL-12345"}
    assert await history.past_calls("+1555") == [{"call_id": "c1", "turns": 3, "outcome": "hangup"},
                                                  {"call_id": "c2", "turns": 1}]


async def test_a_full_queue_drops_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    history = History(SqliteHistory(tmp_path / "h.db"), journal=tmp_path / "j.jsonl", queue_max=5)
    full_call("c", [history.sink("c")])  # 12 facts into a queue of 5, before the writer starts
    assert history.counters.accepted == 5 and history.counters.dropped == 7
    assert "history: queue full (5); 1 items dropped so far" in caplog.text
    await history.start()
    await history.aclose()


async def test_an_unknown_call_has_no_record(history: History) -> None:
    assert await history.call_record("nobody") is None


def test_the_environment_chooses_the_store(tmp_path: Path) -> None:
    default = history_from_env({})
    assert isinstance(default.backend, SqliteHistory)
    assert default.backend.path == Path(".voicegraph/history.db")
    assert default.spool.path == Path(".voicegraph/history.db.journal")
    chosen = history_from_env({"VOICEGRAPH_HISTORY_PATH": str(tmp_path / "x.db"),
                               "VOICEGRAPH_HISTORY_JOURNAL": str(tmp_path / "j")})
    assert isinstance(chosen.backend, SqliteHistory) and chosen.backend.path == tmp_path / "x.db"
    assert chosen.spool.path == tmp_path / "j"
    cosmos = history_from_env({"COSMOS_ENDPOINT": "https://acct.documents.azure.com:443/", "COSMOS_KEY": "k"})
    assert isinstance(cosmos.backend, CosmosHistory) and cosmos.backend.database == "voicegraph"
    assert cosmos.spool.path == Path(".voicegraph/history-journal.jsonl")


@pytest.mark.parametrize(("env", "message"), [
    ({"COSMOS_ENDPOINT": "acct.documents.azure.com"}, "COSMOS_ENDPOINT must be an http(s) URL"),
    ({"COSMOS_ENDPOINT": "https://a/", "COSMOS_DATABASE": "a/b"}, "COSMOS_DATABASE must be a database name"),
    ({"VOICEGRAPH_HISTORY_PATH": "/tmp/"}, "VOICEGRAPH_HISTORY_PATH must name a file"),
])
def test_bad_environment_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        history_from_env(env)


async def test_a_folder_for_the_database_is_a_clear_error_at_start(tmp_path: Path) -> None:
    history = History(SqliteHistory(tmp_path), journal=tmp_path / "j.jsonl")
    with pytest.raises(ConfigError, match="VOICEGRAPH_HISTORY_PATH must name a file"):
        await history.start()
    await history.aclose()


async def test_a_call_closed_without_its_end_is_kept_as_incomplete(history: History,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    facts = CallFacts("cut", [history.sink("cut")], lambda: 0.0)
    facts.emit(CallStarted, caller="+1", pipeline="acs")
    facts.emit(TranscriptReceived, turn=1, text="Hello?")
    await facts.aclose()  # the worker lost the call: no CallEnded
    assert await history.flush()
    record = await history.call_record("cut")
    assert record is not None and record["status"] == "incomplete"
    assert [line["text"] for line in record["transcript"]] == ["Hello?"]
    assert "call cut closed without CallEnded; its record stays incomplete" in caplog.text
