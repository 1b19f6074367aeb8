"""The history journal: a store that is down (a SQLite file locked by another process)
loses nothing and duplicates nothing; the journal replays in order, idempotently, and
skips corrupt lines with a count and a log line."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from pathlib import Path

import pytest

from processors.sidecars.history import History
from processors.sidecars.history_spool import Spool
from processors.sidecars.history_sqlite import SqliteHistory
from tests.sidecars.history_calls import full_call


def _history(tmp_path: Path) -> History:
    return History(SqliteHistory(tmp_path / "h.db", busy_timeout_ms=20), journal=tmp_path / "j.jsonl", batch_ms=0,
                   retry_s=0.01, retry_max_s=0.05)


def _counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("calls", "transcripts", "agent_performance", "profiles")}
    finally:
        db.close()


async def test_a_locked_store_journals_then_replays_everything_once(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "processors.sidecars.history")
    history = _history(tmp_path)
    await history.start()
    await full_call("before", [history.sink("before")]).aclose()
    assert await history.flush()
    lock = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:
        for name in ("during-1", "during-2"):
            await full_call(name, [history.sink(name)]).aclose()
        assert await history.until(lambda h: h.counters.spooled == 16 and h.counters.failures >= 3)
        assert (tmp_path / "j.jsonl").exists()
        assert not await history.flush(0.05)  # accepted but not yet in the store
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert await history.flush()
    assert history.counters.replayed == history.counters.spooled
    assert not (tmp_path / "j.jsonl").exists()
    await history.aclose()
    assert _counts(tmp_path / "h.db") == {"calls": 3, "transcripts": 9, "agent_performance": 6, "profiles": 1}
    history = _history(tmp_path)
    await history.start()
    try:
        records = [await history.call_record(n) for n in ("before", "during-1", "during-2")]
        assert [(r or {}).get("status") for r in records] == ["ended", "ended", "ended"]
        assert [len((r or {})["transcript"]) for r in records] == [3, 3, 3]
        assert [c["call_id"] for c in await history.past_calls("+14255550123")] == ["before", "during-1", "during-2"]
    finally:
        await history.aclose()
    assert "journalling to" in caplog.text and "the SQLite store answers again" in caplog.text


async def test_a_journal_replayed_twice_duplicates_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "j.jsonl")
    history = _history(tmp_path)
    for name in ("a", "b"):
        full_call(name, [history.sink(name)])
    ops = history._fold([item for _, item in history._queue])  # what the writer would journal
    history._queue.clear()
    spool.append(ops)
    shutil.copy(tmp_path / "j.jsonl", tmp_path / "copy.jsonl")
    for _ in range(2):  # the second time: a crash before the offset moved
        history = _history(tmp_path)
        await history.start()
        assert await history.flush()
        assert history.counters.replayed == len(ops)
        await history.aclose()
        shutil.copy(tmp_path / "copy.jsonl", tmp_path / "j.jsonl")
    assert _counts(tmp_path / "h.db") == {"calls": 2, "transcripts": 6, "agent_performance": 4, "profiles": 1}
    history = _history(tmp_path)
    await history.start()
    assert [c["call_id"] for c in await history.past_calls("+14255550123")] == ["a", "b"]
    await history.aclose()


async def test_the_journal_keeps_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "j.jsonl")
    spool.append([{"op": "remember", "caller_id": "x", "profile": {"name": f"Name {n}"}, "call": {}, "wall": n}
                  for n in range(500)])  # more than one replay chunk
    history = _history(tmp_path)
    await history.start()
    try:
        assert await history.flush()
        assert await history.profile("x") == {"name": "Name 499"}
        assert history.counters.replayed == 500
    finally:
        await history.aclose()


async def test_corrupt_journal_lines_are_skipped_counted_and_logged(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "j.jsonl"
    spool = Spool(path)

    def remember(n: int) -> dict[str, object]:
        return {"op": "remember", "caller_id": "x", "profile": {}, "call": {"call_id": f"c{n}"}, "wall": n}

    spool.append([remember(1)])
    good = json.loads(path.read_bytes().splitlines()[0])
    tampered = dict(good, op=remember(99))  # the checksum of another operation
    with path.open("ab") as file:
        file.write(b"not json at all\n")
        file.write(json.dumps(tampered).encode() + b"\n")
        file.write(b'{"n": 4, "crc": 1, "op": {"op": "rem')  # an append cut short by a crash
    spool.append([remember(2)])  # starts on a line of its own
    history = _history(tmp_path)
    await history.start()
    try:
        assert await history.flush()
        assert history.counters.corrupt == 3 and history.counters.replayed == 2
        assert [c["call_id"] for c in await history.past_calls("x")] == ["c1", "c2"]
    finally:
        await history.aclose()
    assert caplog.text.count("corrupt line ending at byte") == 3
    assert not path.exists()


async def test_what_is_queued_at_shutdown_goes_to_the_journal(tmp_path: Path) -> None:
    # the store waits 500 ms on its lock: the batch is still on its way when aclose gives up
    history = History(SqliteHistory(tmp_path / "h.db", busy_timeout_ms=500), journal=tmp_path / "j.jsonl",
                      batch_ms=0)
    await history.start()
    lock = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        full_call("late", [history.sink("late")])
        await history.aclose(timeout_s=0.05)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert (history.counters.spooled, history.counters.lost) == (8, 0)
    history = _history(tmp_path)
    await history.start()
    try:
        assert await history.flush()
        record = await history.call_record("late")
        assert record is not None and record["status"] == "ended" and len(record["transcript"]) == 3
    finally:
        await history.aclose()


async def test_a_journal_that_cannot_be_written_counts_the_loss_and_the_writer_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "not-a-folder").write_text("")
    history = History(SqliteHistory(tmp_path / "h.db", busy_timeout_ms=20),
                      journal=tmp_path / "not-a-folder" / "j.jsonl", batch_ms=0, retry_s=0.01, retry_max_s=0.05)
    await history.start()
    lock = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        await full_call("lost", [history.sink("lost")]).aclose()
        assert await history.until(lambda h: h.counters.lost == 8)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert "could not journal 8 operations" in caplog.text and "they are lost (8 so far)" in caplog.text
    await full_call("after", [history.sink("after")]).aclose()
    try:
        assert await history.flush()
        assert await history.call_record("lost") is None
        record = await history.call_record("after")
        assert record is not None and record["status"] == "ended"
    finally:
        await history.aclose()


async def test_two_workers_merging_one_profile_lose_no_call(tmp_path: Path) -> None:
    workers = [History(SqliteHistory(tmp_path / "h.db"), journal=tmp_path / f"j{n}.jsonl", batch_ms=0, batch_max=1)
               for n in range(2)]
    for worker in workers:
        await worker.start()
    try:
        for n in range(40):
            for w, worker in enumerate(workers):
                await worker.remember("+1555", {f"seen_by_{w}": True}, {"call_id": f"w{w}-{n:02d}"})
        for worker in workers:
            assert await worker.flush()
        calls = await workers[0].past_calls("+1555")
        assert sorted(c["call_id"] for c in calls) == sorted(f"w{w}-{n:02d}" for w in range(2) for n in range(40))
        assert await workers[1].profile("+1555") == {"seen_by_0": True, "seen_by_1": True}
    finally:
        for worker in workers:
            await worker.aclose()
