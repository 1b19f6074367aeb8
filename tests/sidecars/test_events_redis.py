"""Events on Redis Streams against a real redis-server: capped stream, no copies on a retried
batch, a consumer group that gets its events after a consumer restart.

Each test runs its own ``redis-server`` (tests/sidecars/redis_server.py): free loopback
port, persistence off, killed after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cloudevents.core.v1.event import CloudEvent
from redis.asyncio import Redis

from processors.sidecars.events import EventBus, to_cloudevent
from processors.sidecars.events_redis import RedisStreamsTransport, StreamConsumer
from processors.sidecars.facts import TranscriptReceived
from tests.sidecars.redis_server import RedisServer


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushall()
    yield client
    await client.aclose()


def events(call: str, n: int, first: int = 1) -> list[CloudEvent]:
    out = []
    for i in range(first, first + n):
        event = to_cloudevent(TranscriptReceived(call_id=call, seq=i, at_ms=0, wall=0, turn=i, text=f"line {i}"))
        assert event is not None
        out.append(event)
    return out


async def test_a_batch_sent_twice_is_added_once_and_the_stream_is_capped(redis: Redis) -> None:
    transport = RedisStreamsTransport(redis, maxlen=1000)
    await transport.send(events("c1", 5))
    await transport.send(events("c1", 5))  # the bus retried after a timeout: copies are not added
    assert (transport.added, transport.copies) == (5, 5)
    entries = await redis.xrange(transport.stream)
    assert [fields[b"id"] for _, fields in entries] == [f"c1:{i}".encode() for i in range(1, 6)]
    assert await redis.ttl(f"{transport.stream}:seen:c1:3") > 86_000
    capped = RedisStreamsTransport(redis, stream="small:{ev}", maxlen=10)
    for start in range(1, 2001, 100):
        await capped.send(events("c2", 100, start))
    assert 10 <= await redis.xlen("small:{ev}") < 2000  # MAXLEN ~ trims whole nodes: about the cap


async def test_a_consumer_group_gets_its_events_after_a_consumer_restart(redis: Redis) -> None:
    transport = RedisStreamsTransport(redis, groups=["billing"])
    bus = EventBus(transport)
    await bus.start()
    await transport.send(events("c3", 3))  # the group exists first: it sees these too
    first = StreamConsumer(redis, "billing", "worker-1")
    await first.start()
    seen: list[str] = []

    async def crash_on_second(event: CloudEvent) -> None:
        if event.get_id() == "c3:2":
            raise RuntimeError("consumer died")
        seen.append(event.get_id())

    assert await first.poll(crash_on_second) == 2  # c3:1 handled, c3:2 left pending, c3:3 handled
    sink = bus.sink()
    for fact in [TranscriptReceived(call_id="c3", seq=i, at_ms=0, wall=0, turn=i, text="x") for i in (4, 5)]:
        sink.offer(fact)  # published while no consumer runs
    await sink.aclose()
    restarted = StreamConsumer(redis, "billing", "worker-1")  # same name: its pending entries come back
    await restarted.start()
    again: list[str] = []

    async def keep(event: CloudEvent) -> None:
        again.append(event.get_id())

    while await restarted.poll(keep, block_ms=100):
        pass
    assert seen == ["c3:1", "c3:3"]
    assert again == ["c3:2", "c3:4", "c3:5"]
    pending = await redis.xpending(transport.stream, "billing")
    assert pending["pending"] == 0
    await bus.aclose()


async def test_a_malformed_entry_is_skipped_counted_and_acknowledged(redis: Redis) -> None:
    consumer = StreamConsumer(redis, "audit", "a1", stream="bad:{ev}")
    await consumer.start()
    await redis.xadd("bad:{ev}", {"id": "x", "event": "{not json"})
    await redis.xadd("bad:{ev}", {"id": "y"})
    got: list[CloudEvent] = []

    async def keep(event: CloudEvent) -> None:
        got.append(event)

    assert await consumer.poll(keep) == 0
    assert await consumer.poll(keep) == 0
    assert (consumer.malformed, got) == (2, [])
    assert (await redis.xpending("bad:{ev}", "audit"))["pending"] == 0


async def test_a_batch_is_one_round_trip_and_a_flushed_script_is_loaded_again(redis: Redis) -> None:
    transport = RedisStreamsTransport(redis, groups=["audit"])
    await transport.send(events("c4", 10))
    assert transport.round_trips == 3  # the group, the script, the batch
    await transport.send(events("c4", 10, 11))
    assert transport.round_trips == 4  # then one per batch, whatever its size
    await redis.script_flush()  # what a Redis restarted empty looks like to the script
    bus = EventBus(transport, max_backoff_s=0.05)
    await bus.start()
    sink = bus.sink()
    for fact in [TranscriptReceived(call_id="c4", seq=i, at_ms=0, wall=0, turn=i, text="x") for i in (21, 22)]:
        sink.offer(fact)
    await sink.aclose()
    assert bus.send_failures == 1 and bus.sent == 2  # NOSCRIPT, then loaded again and sent
    assert await redis.xlen(transport.stream) == 22
    await bus.aclose()


async def test_redis_killed_mid_call_the_events_wait_and_go_in_order_after_the_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    client = Redis.from_url(server.url, socket_timeout=2)
    transport = RedisStreamsTransport(client, groups=["billing"])
    bus = EventBus(transport, max_backoff_s=0.05, close_timeout_s=30)
    await bus.start()
    sink = bus.sink()
    facts = [TranscriptReceived(call_id="c5", seq=i, at_ms=0, wall=0, turn=i, text=f"line {i}") for i in range(1, 7)]
    try:
        sink.offer(facts[0])
        assert await bus.wait_sent(1, timeout=10)
        server.stop()
        for fact in facts[1:]:  # the call goes on: offer never waits, never raises
            sink.offer(fact)
        assert bus.queued == 6 and bus.dropped == 0
        server.start()  # back on its port, empty (no persistence)
        await sink.aclose()  # everything accepted is sent once Redis is back
        assert bus.send_failures >= 1 and bus.sent == 6
        entries = await client.xrange(transport.stream)
        assert [fields[b"id"] for _, fields in entries] == [f"c5:{i}".encode() for i in range(2, 7)]  # in order
        consumer = StreamConsumer(client, "billing", "b1")  # the group was made again with the stream
        got: list[str] = []

        async def keep(event: CloudEvent) -> None:
            got.append(event.get_id())

        await consumer.poll(keep)
        assert got == [f"c5:{i}" for i in range(2, 7)]
    finally:
        await bus.aclose()
        server.stop()


async def test_a_refused_password_is_logged_counted_and_the_events_kept(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(tmp_path, extra=("--requirepass", "right"))
    server.start()
    transport = RedisStreamsTransport(Redis.from_url(f"redis://:wrong@127.0.0.1:{server.port}/0"))
    bus = EventBus(transport, max_backoff_s=0.05, close_timeout_s=0.1)
    await bus.start()
    try:
        sink = bus.sink()
        for fact in [TranscriptReceived(call_id="c6", seq=i, at_ms=0, wall=0, turn=i, text="x") for i in (1, 2)]:
            sink.offer(fact)
        assert not await bus.wait_sent(2, timeout=0.5)
        assert bus.send_failures >= 1 and bus.sent == 0 and bus.queued == 2  # kept for when the password is fixed
        assert any("RedisStreamsTransport failed to send 2 events (AuthenticationError" in r.getMessage()
                   for r in caplog.records)
    finally:
        await bus.aclose()
        server.stop()


async def test_events_on_a_redis_cluster_through_the_environment(tmp_path: Path,
                                                                  redis_cluster: list[RedisServer]) -> None:
    from pipeline.errors import ConfigError
    from processors.sidecars.services import data_tier_from_env

    config = tmp_path / "sidecars.yaml"
    env = {"VOICEGRAPH_SIDECARS": str(config), "VOICEGRAPH_REDIS_CLUSTER": "1",
           "REDIS_URL": redis_cluster[0].url}
    config.write_text("events: {publisher: redis, stream: plain-events}\n")
    with pytest.raises(ConfigError, match="on Redis Cluster the stream name needs a hash tag"):
        data_tier_from_env(env)
    config.write_text("events: {publisher: redis, subscribers: [{name: billing}]}\n")
    tier = data_tier_from_env(env)
    assert tier.events is not None
    transport = tier.events.transport
    assert isinstance(transport, RedisStreamsTransport) and type(transport.redis).__name__ == "RedisCluster"
    tier.events.max_backoff_s = 0.2  # the cluster may say "cluster is down" while it settles
    tier.events.close_timeout_s = 30
    await tier.start()
    try:
        sink = tier.events.sink()
        for i in range(1, 6):
            sink.offer(TranscriptReceived(call_id="c7", seq=i, at_ms=0, wall=0, turn=i, text=f"line {i}"))
        await sink.aclose()
        assert tier.events.sent == 5 and transport.added == 5
        consumer = StreamConsumer(transport.redis, "billing", "b1")
        got: list[str] = []

        async def keep(event: CloudEvent) -> None:
            got.append(event.get_id())

        await consumer.poll(keep)
        assert got == [f"c7:{i}" for i in range(1, 6)]
    finally:
        await tier.aclose()


async def test_call_ids_with_odd_characters_and_a_huge_transcript_go_through(redis: Redis) -> None:
    transport = RedisStreamsTransport(redis)
    odd = ["a{b}c", "call/ü 1", "line\nbreak", "'; DROP"]
    batch = [e for call in odd for e in events(call, 1)]
    huge = to_cloudevent(TranscriptReceived(call_id="big", seq=1, at_ms=0, wall=0, turn=1, text="x" * 5_000_000))
    assert huge is not None
    await transport.send([*batch, huge])
    await transport.send(batch)  # copies of odd ids are recognised too
    assert (transport.added, transport.copies) == (5, 4)
    entries = await redis.xrange(transport.stream)
    assert [fields[b"id"].decode() for _, fields in entries] == [f"{c}:1" for c in odd] + ["big:1"]
    assert len(entries[-1][1][b"event"]) > 5_000_000
