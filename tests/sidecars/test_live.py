"""The in-process live state: keys, field updates, TTL semantics, short-term memory, views."""

from __future__ import annotations

import asyncio
import json

import pytest

from agents.engine import AgentState
from agents.memory import ShortTermMemory, StoreShortTerm
from pipeline.errors import ConfigError
from processors.sidecars.facts import (
    AgentChanged,
    AgentResponded,
    CallEnded,
    CallFacts,
    CallStarted,
    FactSink,
    StateChanged,
    TranscriptReceived,
)
from processors.sidecars.live import MAX_TEXT, LiveState, live_state_from_env
from processors.sidecars.live_kv import LiveKeys
from processors.sidecars.live_writes import CallTrack


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock) -> LiveState:
    return LiveState(worker="w1", clock=clock)


def turn(facts: CallFacts, n: int, caller: str, bot: str, agent: str = "triage") -> None:
    facts.emit(TranscriptReceived, turn=n, text=caller, agent=agent)
    facts.emit(AgentResponded, turn=n, text=bot, heard_text=bot, agent=agent)


async def test_a_call_writes_its_session_transcript_and_slots_as_field_updates() -> None:
    clock = FakeClock()
    live = make(clock)
    sink: FactSink = live.sink("c1")
    facts = CallFacts("c1", [sink], now_ms=lambda: 0.0)
    facts.emit(CallStarted, caller="+15550100", pipeline="insurance", transport="acs", worker="ignored")
    facts.emit(AgentChanged, turn=0, previous="", agent="triage")
    turn(facts, 1, "I need my policy", "Sure, your date of birth?")
    facts.emit(StateChanged, turn=1, agent="auth", slots={"intent": "policy"})
    facts.emit(StateChanged, turn=2, agent="auth", slots={"intent": "policy", "dob": "1990-01-02"})

    session = await live.session("c1")
    assert {k: session[k] for k in ("caller", "pipeline", "transport", "worker", "state", "agent", "turn")} == {
        "caller": "+15550100", "pipeline": "insurance", "transport": "acs", "worker": "w1", "state": "live",
        "agent": "auth", "turn": "1"}
    lines = await live.transcript("c1")
    assert [(x["role"], x["turn"], x["text"]) for x in lines] == [
        ("caller", "1", "I need my policy"), ("bot", "1", "Sure, your date of birth?")]
    assert live.copy.hgetall(live.keys.slots("c1")) == {"intent": '"policy"', "dob": '"1990-01-02"'}
    assert [s["call_id"] for s in await live.sessions()] == ["c1"]


async def test_state_changes_write_only_the_fields_that_changed() -> None:
    live = make(FakeClock())
    facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 0.0)
    facts.emit(StateChanged, turn=1, agent="auth", slots={"a": 1, "b": 2})
    cmds = live.writes.fact(StateChanged(call_id="c1", seq=9, at_ms=0, wall=1.0, turn=2, agent="auth",
                                         slots={"a": 1, "c": 3}), CallTrack())
    slot_cmds = [(c.op, c.args) for c in cmds if c.key == live.keys.slots("c1")]
    assert slot_cmds == [("HSET", {"c": "3"}), ("HDEL", ("b",)), ("EXPIRE", 25 * 3600)]


async def test_ttls_follow_the_retention_and_the_context_outlives_the_call_by_an_hour() -> None:
    clock = FakeClock()
    live = make(clock)
    keys = live.keys
    facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 0.0)
    facts.emit(CallStarted, caller="x")
    turn(facts, 1, "hello", "hi")
    await live.save_state("c1", AgentState(agent="triage", slots={"n": 1}),
                          {"turn": 1, "agent": "triage", "caller": "hello"})
    kv = live.copy
    assert kv.ttl(keys.session("c1")) == 24 * 3600
    assert kv.ttl(keys.transcript("c1")) == 3600
    for key in (keys.context("c1"), keys.slots("c1"), keys.turns("c1")):
        assert kv.ttl(key) == 25 * 3600
    assert kv.ttl(keys.index) == 24 * 3600

    clock.now += 1800  # a turn half an hour later renews the transcript's hour
    turn(facts, 2, "still there", "yes")
    assert kv.ttl(keys.transcript("c1")) == 3600
    clock.now += 3600
    assert kv.ttl(keys.transcript("c1")) == -2 and await live.transcript("c1") == []
    assert (await live.load_state("c1")) is not None  # the context lives on with the call

    facts.emit(CallEnded, reason="hangup", duration_ms=1.0, turns=2)
    await facts.aclose()
    assert (await live.session("c1"))["state"] == "ended"
    assert await live.sessions() == []
    assert kv.ttl(keys.context("c1")) == 3600
    clock.now += 3600
    assert await live.load_state("c1") is None
    assert (await live.session("c1"))["end_reason"] == "hangup"
    clock.now += 24 * 3600
    assert await live.session("c1") == {}
    assert kv.keys() == []


async def test_short_term_memory_round_trip_and_drop() -> None:
    live: ShortTermMemory = StoreShortTerm(make(FakeClock()))  # the orchestrator's view of the store
    state = AgentState(agent="auth", slots={"policy": "P-1"}, memory={"step": "dob"}, caller={"name": "Ann"},
                       failures={"auth": 1})
    await live.save("c1", AgentState(agent="triage"), {"turn": 1, "agent": "triage", "caller": "hi"})
    await live.save("c1", state, {"turn": 2, "agent": "auth", "caller": "my policy"})
    memory = await live.load("c1")
    assert memory is not None
    assert memory.state == {"agent": "auth", "slots": {"policy": "P-1"}, "memory": {"step": "dob"},
                            "caller": {"name": "Ann"}, "failures": {"auth": 1}}
    assert memory.agents == ["triage", "auth"]
    assert memory.turns == [{"turn": 1, "agent": "triage", "caller": "hi"},
                            {"turn": 2, "agent": "auth", "caller": "my policy"}]
    await live.drop("c1")
    assert await live.load("c1") is None


async def test_a_live_view_sees_each_fact_once_in_order() -> None:
    live = make(FakeClock())
    seen: list[dict[str, object]] = []

    async def view(entered: asyncio.Event) -> None:
        async with live.watch("c1") as facts_seen:
            entered.set()
            async for item in facts_seen:
                seen.append(item)
                if item["type"] == "CallEnded":
                    return

    entered = asyncio.Event()
    task = asyncio.create_task(view(entered))
    await asyncio.wait_for(entered.wait(), 5)
    facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 0.0)
    facts.emit(CallStarted, caller="x")
    turn(facts, 1, "hello", "hi")
    facts.emit(CallEnded, reason="eos", duration_ms=5.0, turns=1, report={"big": "x" * 1000})
    await asyncio.wait_for(task, 5)
    assert [(x["type"], x["seq"]) for x in seen] == [("CallStarted", 1), ("TranscriptReceived", 2),
                                                      ("AgentResponded", 3), ("CallEnded", 4)]
    assert "report" not in seen[-1]


async def test_odd_call_ids_and_huge_lines_are_kept_safely() -> None:
    live = make(FakeClock())
    odd = "a{b}c d\n\u00e9/" + "z" * 1000
    facts = CallFacts(odd, [live.sink(odd)], now_ms=lambda: 0.0)
    facts.emit(CallStarted, caller="x")
    facts.emit(TranscriptReceived, turn=1, text="word " * 5000)
    key = live.keys.session(odd)
    assert key.count("{") == 1 and key.count("}") == 1 and " " not in key and "\n" not in key
    assert len(key) < 700
    assert (await live.session(odd))["call_id"] == odd
    (line,) = await live.transcript(odd)
    assert len(line["text"]) == MAX_TEXT and live.truncated == 1
    assert LiveKeys.escape("plain-id_1.2:x") == "plain-id_1.2:x"


def test_bad_environment_values_are_named() -> None:
    with pytest.raises(ConfigError, match="REDIS_URL"):
        live_state_from_env({"REDIS_URL": "http://localhost:6379"})
    with pytest.raises(ConfigError, match="VOICEGRAPH_LIVE_BUFFER"):
        live_state_from_env({"VOICEGRAPH_LIVE_BUFFER": "lots"})
    with pytest.raises(ConfigError, match="VOICEGRAPH_REDIS_CLUSTER"):
        live_state_from_env({"REDIS_URL": "redis://127.0.0.1:1", "VOICEGRAPH_REDIS_CLUSTER": "maybe"})
    assert live_state_from_env({}).redis is None
    assert live_state_from_env({"VOICEGRAPH_WORKER": "w9"}).worker == "w9"


def test_facts_are_json_in_the_transcript() -> None:
    live = make(FakeClock())
    facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 12.5)
    facts.emit(AgentResponded, turn=3, text="long answer", heard_text="long", interrupted=True, agent="auth")
    ((_, fields),) = live.copy.xrange(live.keys.transcript("c1"))
    assert fields == {"role": "bot", "turn": "3", "text": "long", "agent": "auth", "at_ms": "12.5", "seq": "1",
                      "interrupted": "1"}
    assert json.loads(json.dumps(fields)) == fields


def test_a_fact_offered_twice_is_written_once() -> None:
    live = make(FakeClock())
    facts = CallFacts("c1", [live.sink("c1")], now_ms=lambda: 0.0)
    said = facts.emit(TranscriptReceived, turn=1, text="hello")
    live.offer(said)  # a replay of the same fact (same key)
    facts.emit(TranscriptReceived, turn=2, text="again")
    assert [fields["text"] for _, fields in live.copy.xrange(live.keys.transcript("c1"))] == ["hello", "again"]
    assert live.duplicates == 1


def test_the_sessions_index_forgets_calls_older_than_a_session_as_new_ones_start() -> None:
    live = make(FakeClock())
    for n, wall in enumerate((1000.0, 50_000.0, 1000.0 + 24 * 3600 + 1)):  # started 0 s, ~14 h, 24 h + 1 s
        live.offer(CallStarted(call_id=f"c{n}", seq=1, at_ms=0.0, wall=wall, caller="x"))
    assert [m for m, _ in live.copy.zrange(live.keys.index)] == ["c1", "c2"]
