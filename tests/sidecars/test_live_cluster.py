"""The live state on a real Redis Cluster (three redis-server nodes, no replicas):
``VOICEGRAPH_REDIS_CLUSTER=1``. One call's keys share a slot (hash tags), so its writes,
its END script and its reads work across nodes; PUBLISH goes beside the pipeline, and a
live view on one worker hears the facts another worker publishes."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from agents.engine import AgentState
from processors.sidecars.facts import AgentResponded, CallEnded, CallFacts, CallStarted, TranscriptReceived
from processors.sidecars.live import live_state_from_env
from tests.sidecars.redis_server import RedisServer


async def test_calls_spread_over_the_nodes_and_move_between_workers(redis_cluster: list[RedisServer]) -> None:
    url = f"redis://127.0.0.1:{redis_cluster[0].port}"
    a = live_state_from_env({"REDIS_URL": url, "VOICEGRAPH_REDIS_CLUSTER": "1", "VOICEGRAPH_WORKER": "a"})
    b = live_state_from_env({"REDIS_URL": url, "VOICEGRAPH_REDIS_CLUSTER": "1", "VOICEGRAPH_WORKER": "b"})
    await a.start()
    await b.start()
    assert a.writer is not None and a.writer.cluster
    calls = [f"call-{i}" for i in range(8)]
    hubs = {call_id: CallFacts(call_id, [a.sink(call_id)], now_ms=lambda: 0.0) for call_id in calls}
    for call_id in calls:
        facts = hubs[call_id]
        facts.emit(CallStarted, caller="+15550100")
        facts.emit(TranscriptReceived, turn=1, text=f"hello from {call_id}")
        facts.emit(AgentResponded, turn=1, text="hi", heard_text="hi")
        await a.save_state(call_id, AgentState(agent="auth", slots={"n": call_id}), {"turn": 1})
    assert await a.writer.flush(30)  # the writer waits out the cluster settling ("cluster is down")

    counts = []
    for node in redis_cluster:
        client = Redis.from_url(node.url.removesuffix("/0"), decode_responses=True)
        counts.append(await client.dbsize())
        await client.aclose()
    assert sum(1 for count in counts if count) >= 2  # the calls' slots live on several nodes

    memory = await b.load_state("call-5")
    assert memory is not None and memory["state"]["slots"] == {"n": "call-5"} and memory["turns"] == [{"turn": 1}]
    assert [x["text"] for x in await b.transcript("call-3")] == ["hello from call-3", "hi"]
    assert sorted(s["call_id"] for s in await b.sessions()) == sorted(calls)

    seen: list[str] = []
    entered = asyncio.Event()

    async def view() -> None:  # B watches call-0, whose facts A publishes
        async with b.watch("call-0") as facts_seen:
            entered.set()
            async for item in facts_seen:
                seen.append(item["type"])
                if item["type"] == "CallEnded":
                    return

    watching = asyncio.create_task(view())
    await asyncio.wait_for(entered.wait(), 30)
    b.adopt("call-1")  # B takes call-1 over; A's end of it does not end it
    assert b.writer is not None and await b.writer.flush(30)
    for call_id in ("call-0", "call-1"):
        facts = hubs[call_id]
        facts.emit(CallEnded, reason="eos", duration_ms=1.0, turns=1)
        await facts.aclose()
    assert (await b.session("call-0"))["state"] == "ended"
    await asyncio.wait_for(watching, 30)
    assert seen == ["CallEnded"]
    session = await b.session("call-1")
    assert session["state"] == "live" and session["worker"] == "b"
    await asyncio.gather(a.aclose(), b.aclose())
