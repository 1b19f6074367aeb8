"""The history on Cosmos DB through the real azure-cosmos SDK (async to write, sync to check)
against a local Cosmos DB server: containers with their partition keys and TTLs, a full
call record round trip, an outage journalled and replayed, throttling with the server's
retry-after, auth refused, an odd call id."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import CosmosClient

from processors.sidecars.history import History
from processors.sidecars.history_cosmos import CosmosHistory
from tests.sidecars.cosmos_server import EMULATOR_KEY, CosmosProxy, cosmos_url  # noqa: F401 (a fixture)
from tests.sidecars.history_calls import LATENCY, TOOL, full_call, transcript_texts

YEAR_S = 365 * 86400


@pytest.fixture
async def proxy(cosmos_url: str) -> AsyncIterator[CosmosProxy]:  # noqa: F811 (the fixture imported above)
    proxy = CosmosProxy(cosmos_url)
    await proxy.start()
    yield proxy
    await proxy.close()


def _history(url: str, tmp_path: Path, database: str, **options: Any) -> History:
    options = {"timeout_s": 5, **options}
    backend = CosmosHistory(url, key=EMULATOR_KEY, database=database, enable_endpoint_discovery=False,
                            retry_connect=0, retry_read=0, **options)
    return History(backend, journal=tmp_path / "journal.jsonl", batch_ms=0, retry_s=0.02, retry_max_s=0.1)


def _items(url: str, database: str, container: str) -> list[dict[str, Any]]:
    """The container's documents, read back with the synchronous SDK."""
    with CosmosClient(url, credential=EMULATOR_KEY, enable_endpoint_discovery=False) as client:
        proxy = client.get_database_client(database).get_container_client(container)
        return list(proxy.read_all_items())


async def test_containers_have_their_partition_keys_and_retention(proxy: CosmosProxy, tmp_path: Path) -> None:
    database = f"db{uuid.uuid4().hex[:8]}"
    history = _history(proxy.url, tmp_path, database)
    await history.start()
    await history.aclose()
    with CosmosClient(proxy.upstream, credential=EMULATOR_KEY, enable_endpoint_discovery=False) as client:
        db = client.get_database_client(database)
        found = {c["id"]: (c["partitionKey"]["paths"], c.get("defaultTtl")) for c in db.list_containers()}
    assert found == {"calls": (["/call_id"], 7 * YEAR_S), "transcripts": (["/call_id"], 7 * YEAR_S),
                     "agent_performance": (["/agent"], 2 * YEAR_S), "profiles": (["/caller_id"], None)}


async def test_a_full_call_record_round_trips_through_the_sdk(proxy: CosmosProxy, tmp_path: Path) -> None:
    database = f"db{uuid.uuid4().hex[:8]}"
    history = _history(proxy.url, tmp_path, database)
    await history.start()
    try:
        await full_call("call-1", [history.sink("call-1")]).aclose()
        assert await history.flush()
        record = await history.call_record("call-1")
        assert record is not None
        assert (record["status"], record["caller"], record["outcome"], record["agents"]) == (
            "ended", "+14255550123", "hangup", ["auth", "fnol"])
        assert transcript_texts(record) == [("bot", "Thank you for calling."),
                                            ("caller", "Hello, this is Jane Doe."),
                                            ("bot", "Thank you Jane. I can help you file a claim.")]
        answer = record["transcript"][2]
        assert (answer["model"], answer["latency_ms"], answer["tool_calls"]) == ("gpt-4o-mini", LATENCY, [TOOL])
        assert not any(k.startswith("_") for k in record)  # Cosmos's system fields are not part of the record
        assert await history.profile("+14255550123") == {}
        assert [c["call_id"] for c in await history.past_calls("+14255550123")] == ["call-1"]
        assert await history.call_record("nobody") is None
        assert proxy.consistency == {"Session"}  # every request asks for session consistency
    finally:
        await history.aclose()
    calls = _items(proxy.upstream, database, "calls")
    assert [(d["id"], d["call_id"], d["status"]) for d in calls] == [("call-1", "call-1", "ended")]
    assert sorted(d["seq"] for d in _items(proxy.upstream, database, "transcripts")) == [6, 7, 9]
    assert sorted((d["agent"], d["turns"]) for d in _items(proxy.upstream, database, "agent_performance")) == [
        ("auth", 1), ("fnol", 1)]


async def test_an_outage_is_journalled_and_replayed_once(proxy: CosmosProxy, tmp_path: Path) -> None:
    database = f"db{uuid.uuid4().hex[:8]}"
    history = _history(proxy.url, tmp_path, database)
    await history.start()
    try:
        await full_call("before", [history.sink("before")]).aclose()
        assert await history.flush()
        proxy.down = True
        for name in ("during-1", "during-2"):
            await full_call(name, [history.sink(name)]).aclose()
        assert await history.until(lambda h: h.counters.spooled == 16 and h.counters.failures >= 2)
        proxy.down = False
        assert await history.flush()
        assert history.counters.replayed == 16
    finally:
        await history.aclose()
    assert sorted(d["call_id"] for d in _items(proxy.upstream, database, "calls")) == ["before", "during-1",
                                                                                         "during-2"]
    assert len(_items(proxy.upstream, database, "transcripts")) == 9
    (profile,) = _items(proxy.upstream, database, "profiles")
    assert [c["call_id"] for c in profile["calls"]] == ["before", "during-1", "during-2"]


async def test_throttling_waits_the_servers_retry_after(proxy: CosmosProxy, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "processors.sidecars.history")
    database = f"db{uuid.uuid4().hex[:8]}"
    history = _history(proxy.url, tmp_path, database, throttle_retries=1)
    await history.start()
    try:
        proxy.throttle = 1  # the SDK waits the retry-after once itself: no journal
        await history.remember("+1", {"name": "Jane Doe"}, {"call_id": "c1"})
        assert await history.flush()
        assert (history.counters.failures, history.counters.spooled, proxy.writes) == (0, 0, 2)
        proxy.throttle = 2  # past the SDK's retries: the writer waits the server's retry-after, then replays
        proxy.retry_after_ms = 40
        await history.remember("+1", {"first_name": "Jane"}, {"call_id": "c2"})
        assert await history.flush()
        assert (history.counters.failures, history.counters.spooled, history.counters.replayed) == (1, 1, 1)
    finally:
        await history.aclose()
    assert "throttled (request rate too large)" in caplog.text and "retry in 0.04 s" in caplog.text
    (profile,) = _items(proxy.upstream, database, "profiles")
    assert profile["profile"] == {"name": "Jane Doe", "first_name": "Jane"}


async def test_refused_auth_is_logged_and_nothing_is_lost(proxy: CosmosProxy, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    database = f"db{uuid.uuid4().hex[:8]}"
    history = _history(proxy.url, tmp_path, database)
    proxy.status = 401
    await history.start()  # the store cannot be opened: the worker starts anyway
    try:
        await full_call("c", [history.sink("c")]).aclose()
        assert await history.until(lambda h: h.counters.spooled == 8)
        assert "creating the database: the key was refused" in caplog.text
        assert await history.profile("+14255550123") == {} and history.counters.read_errors == 1
        proxy.status = None
        assert await history.flush()
    finally:
        await history.aclose()
    assert [d["status"] for d in _items(proxy.upstream, database, "calls")] == ["ended"]


@pytest.mark.parametrize(("status", "logged"), [(503, "HTTP 503"), (403, "access refused (key or identity)"),
                                               (None, "no answer within 0.3 s")])
async def test_errors_and_timeouts_are_journalled_and_replayed(proxy: CosmosProxy, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture,
                                                               status: int | None, logged: str) -> None:
    database = f"db{uuid.uuid4().hex[:8]}"
    history = _history(proxy.url, tmp_path, database, timeout_s=0.3)
    await history.start()
    try:
        if status is None:
            proxy.delay_s = 1.0  # longer than the client's timeout
        proxy.status = status
        await full_call("c", [history.sink("c")]).aclose()
        assert await history.until(lambda h: h.counters.spooled == 8)
        proxy.status, proxy.delay_s = None, 0.0
        assert await history.flush()
        assert history.counters.replayed == 8
    finally:
        await history.aclose()
    assert logged in caplog.text
    assert [d["status"] for d in _items(proxy.upstream, database, "calls")] == ["ended"]


async def test_two_workers_merging_one_profile_lose_no_call(proxy: CosmosProxy, tmp_path: Path) -> None:
    database = f"db{uuid.uuid4().hex[:8]}"
    workers = [_history(proxy.url, tmp_path / str(n), database) for n in range(2)]
    for worker in workers:
        worker.batch_max = 1
        await worker.start()
    try:
        for n in range(20):
            for w, worker in enumerate(workers):
                await worker.remember("+1555", {f"seen_by_{w}": True}, {"call_id": f"w{w}-{n:02d}"})
        for worker in workers:
            assert await worker.flush()
    finally:
        for worker in workers:
            await worker.aclose()
    (profile,) = _items(proxy.upstream, database, "profiles")
    assert sorted(c["call_id"] for c in profile["calls"]) == sorted(f"w{w}-{n:02d}" for w in range(2)
                                                                    for n in range(20))
    assert profile["profile"] == {"seen_by_0": True, "seen_by_1": True}


async def test_an_odd_call_id_round_trips(proxy: CosmosProxy, tmp_path: Path) -> None:
    database = f"db{uuid.uuid4().hex[:8]}"
    history = _history(proxy.url, tmp_path, database)
    await history.start()
    call_id = "call/1?#x ü\\" + "z" * 400
    try:
        await full_call(call_id, [history.sink(call_id)]).aclose()
        assert await history.flush()
        assert history.counters.rejected == 0
        record = await history.call_record(call_id)
        assert record is not None and record["call_id"] == call_id and len(record["transcript"]) == 3
    finally:
        await history.aclose()
