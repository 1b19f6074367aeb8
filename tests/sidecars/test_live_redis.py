"""The live state on a real redis-server: TTLs, commands per turn, slow Redis, Redis killed
mid-call, the loss bound, and a call taken over by another worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from agents.engine import AgentState
from processors.sidecars.facts import (
    AgentResponded,
    CallEnded,
    CallFacts,
    CallStarted,
    StateChanged,
    TranscriptReceived,
)
from processors.sidecars.live import LiveState, live_state_from_env
from tests.sidecars.redis_server import RedisServer


def store(server: RedisServer, worker: str = "w1", **kwargs: Any) -> LiveState:
    return live_state_from_env({"REDIS_URL": server.url, "VOICEGRAPH_WORKER": worker, **kwargs})


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


def one_turn(facts: CallFacts, n: int, agent: str = "auth") -> None:
    facts.emit(TranscriptReceived, turn=n, text=f"caller {n}", agent=agent)
    facts.emit(AgentResponded, turn=n, text=f"bot {n}", heard_text=f"bot {n}", agent=agent)


async def command_counts(admin: Redis) -> dict[str, int]:
    stats = await admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()
            if name.removeprefix("cmdstat_") not in ("info", "config|resetstat", "config")}


async def test_every_key_gets_its_ttl_and_the_end_shortens_the_context(redis_server: RedisServer,
                                                                       admin: Redis) -> None:
    live = store(redis_server)
    await live.start()
    facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 0.0)
    facts.emit(CallStarted, caller="+15550100", pipeline="insurance")
    one_turn(facts, 1)
    await live.save_state("c1", AgentState(agent="auth", slots={"dob": "1990"}), {"turn": 1, "agent": "auth"})
    assert await live.writer.flush(10) if live.writer else False
    keys = live.keys
    expected = {keys.session("c1"): 86400, keys.transcript("c1"): 3600, keys.context("c1"): 90000,
                keys.slots("c1"): 90000, keys.turns("c1"): 90000, keys.index: 86400}
    assert sorted(await admin.keys("vg:*")) == sorted(expected)
    for key, ttl in expected.items():
        assert ttl - 5 <= await admin.ttl(key) <= ttl, key
    facts.emit(CallEnded, reason="hangup", duration_ms=10.0, turns=1)
    await facts.aclose()
    assert (await admin.hgetall(keys.session("c1")))["state"] == "ended"
    for key in (keys.context("c1"), keys.slots("c1"), keys.turns("c1")):
        assert 3595 <= await admin.ttl(key) <= 3600, key
    assert await live.sessions() == []
    await live.aclose()


async def test_a_turn_costs_one_round_trip_and_a_known_set_of_commands(redis_server: RedisServer,
                                                                       admin: Redis) -> None:
    live = store(redis_server)
    await live.start()
    assert live.writer is not None
    facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 0.0)
    facts.emit(CallStarted, caller="x")
    one_turn(facts, 1)
    await live.save_state("c1", AgentState(agent="auth", slots={"a": 1}), {"turn": 1})
    assert await live.writer.flush(10)
    await admin.config_resetstat()
    before = live.writer.stats()

    # One turn: what the caller said, the answer, the new state (one slot more), the saved turn.
    one_turn(facts, 2)
    facts.emit(StateChanged, turn=2, agent="auth", slots={"a": 1, "b": 2})
    await live.save_state("c1", AgentState(agent="auth", slots={"a": 1, "b": 2}, memory={"step": 2}), {"turn": 2})
    assert await live.writer.flush(10)
    after = live.writer.stats()
    assert after.round_trips - before.round_trips == 1
    # The session's and the transcript's TTLs are renewed once per round trip, not per write.
    assert after.commands - before.commands == 16
    assert await command_counts(admin) == {"xadd": 3, "hset": 5, "expire": 5, "publish": 3}
    assert after.duplicates == after.rejected == after.lost == 0
    await live.aclose()


class SlowProxy:
    """A TCP proxy to Redis that holds every request for ``delay_s`` (injected latency)."""

    def __init__(self, port: int, delay_s: float) -> None:
        self.port = port
        self.delay_s = delay_s
        self.delayed = 0
        self.server: asyncio.Server | None = None
        self.tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        assert current is not None
        self.tasks.append(current)
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, slow: bool) -> None:
            while data := await src.read(65536):
                if slow:
                    self.delayed += 1
                    await asyncio.sleep(self.delay_s)  # the latency under test, not a synchronisation
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pump(client_r, server_w, True), pump(server_r, client_w, False),
                             return_exceptions=True)

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_a_redis_answering_in_500_ms_never_delays_the_call(redis_server: RedisServer) -> None:
    """Every offer() and save() of 20 turns completes without suspending once: the call never
    waits for Redis; the writer sends all of it in one round trip, which takes the 500 ms."""
    proxy = SlowProxy(redis_server.port, 0.5)
    live = live_state_from_env({"REDIS_URL": await proxy.start(), "VOICEGRAPH_WORKER": "w1"})
    await live.start()
    assert live.writer is not None
    facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 0.0)
    facts.emit(CallStarted, caller="x")
    for n in range(1, 21):
        one_turn(facts, n)
        save = live.save_state("c1", AgentState(agent="auth", slots={"n": n}), {"turn": n})
        with pytest.raises(StopIteration):  # the coroutine completed in one step: it never awaited Redis
            save.send(None)
    assert live.writer.stats().pending == 61
    assert await live.writer.flush(20)
    stats = live.writer.stats()
    assert stats.round_trips == 1 and stats.written == 61 and proxy.delayed >= 1
    lines = await live.transcript("c1")
    assert len(lines) == 40 and [x["text"] for x in lines[:3]] == ["caller 1", "bot 1", "caller 2"]
    await live.aclose()
    await proxy.aclose()


async def test_redis_killed_mid_call_the_call_goes_on_and_the_writes_land_in_order(
        redis_server: RedisServer) -> None:
    live = store(redis_server)
    await live.start()
    assert live.writer is not None
    facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 0.0)
    facts.emit(CallStarted, caller="+15550100")
    one_turn(facts, 1)
    assert await live.writer.flush(10)

    redis_server.stop()
    for n in range(2, 6):
        one_turn(facts, n)
        await live.save_state("c1", AgentState(agent="auth", slots={"n": n}), {"turn": n})
    assert not await live.writer.flush(0.5)
    stats = live.writer.stats()
    assert stats.down and stats.errors >= 1 and stats.pending == 12
    memory = await live.load_state("c1")  # the call goes on from the worker's copy
    assert memory is not None and memory["state"]["slots"] == {"n": 5} and len(memory["turns"]) == 4

    redis_server.start()  # back, empty (no persistence): what waited is written, in order
    assert await live.writer.flush(20)
    assert not live.writer.down and live.writer.stats().lost == 0
    client = Redis.from_url(redis_server.url, decode_responses=True)
    entries = await client.xrange(live.keys.transcript("c1"))
    assert [f["text"] for _, f in entries] == [f"{who} {n}" for n in range(2, 6) for who in ("caller", "bot")]
    assert [int(f["seq"]) for _, f in entries] == list(range(4, 12))
    assert await client.hget(live.keys.slots("c1"), "n") == "5"
    await client.aclose()
    await live.aclose()


async def test_past_the_bound_the_oldest_writes_are_lost_counted_and_the_state_resent(
        redis_server: RedisServer) -> None:
    live = store(redis_server, VOICEGRAPH_LIVE_BUFFER="4")
    await live.start()
    assert live.writer is not None
    redis_server.stop()
    facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 0.0)
    facts.emit(CallStarted, caller="+15550100", pipeline="insurance")
    for n in range(1, 4):
        one_turn(facts, n)
    assert live.writer.stats().lost == 3  # 7 entries, 4 kept
    assert not await live.writer.flush(0.3)
    assert live.writer.down
    redis_server.start()
    assert await live.writer.flush(20)
    assert await live.writer.flush(20)  # the state re-sent once Redis was back
    client = Redis.from_url(redis_server.url, decode_responses=True)
    entries = await client.xrange(live.keys.transcript("c1"))
    assert [f["text"] for _, f in entries] == ["caller 2", "bot 2", "caller 3", "bot 3"]
    session = await client.hgetall(live.keys.session("c1"))
    assert session["caller"] == "+15550100" and session["pipeline"] == "insurance"  # re-sent whole
    assert 86395 <= await client.ttl(live.keys.session("c1")) <= 86400
    await client.aclose()
    await live.aclose()


async def test_a_call_taken_over_by_another_worker_keeps_its_state_and_affinity_moves(
        redis_server: RedisServer, admin: Redis) -> None:
    a, b = store(redis_server, "worker-a"), store(redis_server, "worker-b")
    await a.start()
    await b.start()
    facts_a = CallFacts("c1", [a.sink("c1")], now_ms=lambda: 0.0)
    facts_a.emit(CallStarted, caller="+15550100")
    one_turn(facts_a, 1)
    await a.save_state("c1", AgentState(agent="auth", slots={"policy": "P-1"}, memory={"step": "dob"}),
                 {"turn": 1, "agent": "auth", "caller": "caller 1"})
    assert a.writer is not None and await a.writer.flush(10)
    started = (await admin.hgetall(a.keys.session("c1")))["started_at"]

    memory = await b.load_state("c1")
    assert memory is not None
    assert memory["state"]["agent"] == "auth" and memory["state"]["slots"] == {"policy": "P-1"}
    assert memory["state"]["memory"] == {"step": "dob"} and memory["turns"] == [
        {"turn": 1, "agent": "auth", "caller": "caller 1"}]
    b.adopt("c1")
    facts_b = CallFacts("c1", [b.sink("c1")], now_ms=lambda: 0.0)
    facts_b.emit(CallStarted, caller="+15550100")
    one_turn(facts_b, 2)
    await b.save_state("c1", AgentState(agent="auth", slots={"policy": "P-1", "dob": "1990"}), {"turn": 2})
    assert b.writer is not None and await b.writer.flush(10)
    assert await a.worker_of("c1") == "worker-b"

    facts_a.emit(CallEnded, reason="media socket gone", duration_ms=1.0, turns=1)  # A gives up its half
    await facts_a.aclose()
    session = await admin.hgetall(a.keys.session("c1"))
    assert session["state"] == "live" and session["worker"] == "worker-b" and session["started_at"] == started
    assert [x["text"] for x in await a.transcript("c1")] == ["caller 1", "bot 1", "caller 2", "bot 2"]
    assert (await b.load_state("c1")) is not None
    final = await a.load_state("c1")
    assert final is not None and final["state"]["slots"] == {"policy": "P-1", "dob": "1990"} and len(final["turns"]) == 2
    assert [s["call_id"] for s in await a.sessions()] == ["c1"]
    for store_ in (a, b):
        await store_.aclose()


async def test_a_live_view_through_redis_pubsub(redis_server: RedisServer) -> None:
    writer, reader = store(redis_server, "w1"), store(redis_server, "w2")
    await writer.start()
    seen: list[str] = []
    entered = asyncio.Event()

    async def view() -> None:
        async with reader.watch("c1") as facts_seen:
            entered.set()
            async for item in facts_seen:
                seen.append(item["type"])
                if item["type"] == "CallEnded":
                    return

    task = asyncio.create_task(view())
    await asyncio.wait_for(entered.wait(), 5)
    facts = CallFacts("c1", [writer.sink("c1")], now_ms=lambda: 0.0)
    facts.emit(CallStarted, caller="x")
    one_turn(facts, 1)
    facts.emit(CallEnded, reason="eos", duration_ms=1.0, turns=1)
    await asyncio.wait_for(task, 10)
    assert seen == ["CallStarted", "TranscriptReceived", "AgentResponded", "CallEnded"]
    await writer.aclose()
    await reader.aclose()


async def test_redis_full_keeps_the_writes_waiting_then_writes_them(redis_server: RedisServer, admin: Redis,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    live = store(redis_server)
    await live.start()
    assert live.writer is not None
    await admin.config_set("maxmemory", "1")  # every write is refused: OOM
    facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 0.0)
    facts.emit(CallStarted, caller="+15550100")
    one_turn(facts, 1)
    assert not await live.writer.flush(0.5)
    stats = live.writer.stats()
    assert stats.down and stats.pending == 3 and stats.lost == 0 and stats.rejected == 0
    assert any("Redis unavailable (OutOfMemoryError: command not allowed" in r.getMessage() for r in caplog.records)
    await admin.config_set("maxmemory", "0")
    assert await live.writer.flush(20)
    assert [x["text"] for x in await live.transcript("c1")] == ["caller 1", "bot 1"]
    await live.aclose()


async def test_redis_refusing_our_password_is_an_outage_not_a_crash(tmp_path: Any,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(tmp_path, extra=("--requirepass", "right"))
    server.start()
    try:
        url = server.url.replace("redis://", "redis://:wrong@")
        live = live_state_from_env({"REDIS_URL": url, "VOICEGRAPH_WORKER": "w1"})
        await live.start()
        assert live.writer is not None
        facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 0.0)
        facts.emit(CallStarted, caller="+15550100")
        assert not await live.writer.flush(0.5)
        assert live.writer.down and live.writer.stats().pending == 1 and live.writer.stats().errors >= 1
        assert (await live.load_state("c1")) is None  # a read does not wait on a Redis we know is away
        assert (await live.session("c1"))["caller"] == "+15550100"  # the worker's copy answers
        messages = [r.getMessage() for r in caplog.records]
        assert any("Redis unavailable (AuthenticationError" in m for m in messages), messages
        await live.aclose()
    finally:
        server.stop()


async def test_a_media_token_leads_any_worker_to_its_live_call_and_dies_with_it(redis_server: RedisServer,
                                                                                admin: Redis) -> None:
    a, b = store(redis_server, "worker-a"), store(redis_server, "worker-b")
    await a.start()
    token = "tok-" + "x" * 40
    a.share_media(token, "c1")
    assert a.writer is not None and await a.writer.flush(10)
    assert await b.media_call(token) == "c1"
    assert await b.media_call("another-token") is None
    dump = [(key, await admin.hgetall(key)) for key in await admin.keys("*") if await admin.type(key) == "hash"]
    assert dump and not any(token in key or token in str(value) for key, value in dump)  # only its hash is kept
    assert a.copy.keys() == [a.keys.session("c1")]  # the worker's copy does not keep it
    a.end_call("c1", "hangup")
    assert await a.writer.flush(10)
    assert await b.media_call(token) is None  # the call ended: its token leads nowhere
    await a.aclose()
    await b.aclose()


async def test_redis_timing_out_is_waited_out_and_the_writes_land_in_order(redis_server: RedisServer,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    proxy = SlowProxy(redis_server.port, 5.0)  # far past the writer's 0.2 s timeout
    url = await proxy.start()
    live = LiveState(redis=Redis.from_url(url, decode_responses=True), worker="w1", op_timeout_s=0.2)
    await live.start()
    assert live.writer is not None
    facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 0.0)
    for n in (1, 2):
        one_turn(facts, n)
    assert not await live.writer.flush(1.0)
    assert live.writer.down and live.writer.stats().errors >= 1 and live.writer.stats().pending == 4
    assert any("Redis unavailable (TimeoutError" in r.getMessage() for r in caplog.records)
    proxy.delay_s = 0.0  # Redis answers again
    assert await live.writer.flush(30)
    assert [x["text"] for x in await live.transcript("c1")] == ["caller 1", "bot 1", "caller 2", "bot 2"]
    await live.aclose()
    await proxy.aclose()


async def test_a_command_redis_refuses_is_counted_and_the_rest_is_written(redis_server: RedisServer, admin: Redis,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    live = store(redis_server)
    await live.start()
    assert live.writer is not None
    await admin.set(live.keys.slots("c1"), "not a hash")  # someone else's key in the way: WRONGTYPE
    facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 0.0)
    one_turn(facts, 1)
    facts.emit(StateChanged, turn=1, agent="auth", slots={"a": 1})
    assert await live.writer.flush(10)
    stats = live.writer.stats()
    assert stats.rejected == 1 and stats.written == 3 and not stats.down
    assert [x["text"] for x in await live.transcript("c1")] == ["caller 1", "bot 1"]
    assert (await admin.hgetall(live.keys.session("c1")))["agent"] == "auth"
    assert any("Redis refused a write: WRONGTYPE Operation against a key holding the wrong kind of value"
               in r.getMessage() for r in caplog.records)
    await live.aclose()
