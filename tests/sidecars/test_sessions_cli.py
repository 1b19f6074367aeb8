"""``voicegraph sessions``: the live calls in a real Redis, one call's transcript, a call
followed live (a real process on pub/sub), bad set-ups."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from processors.sidecars.facts import (
    AgentChanged,
    AgentResponded,
    CallEnded,
    CallFacts,
    CallStarted,
    StateChanged,
    TranscriptReceived,
)
from processors.sidecars.live import live_state_from_env
from tests.sidecars.redis_server import RedisServer
from voicegraph.cli import main

REPO = Path(__file__).resolve().parents[2]


async def two_calls(url: str) -> None:
    live = live_state_from_env({"REDIS_URL": url, "VOICEGRAPH_WORKER": "host-a:101"})
    await live.start()
    for call_id, caller in (("call-1", "+15550101"), ("call-2", "+15550102"), ("call-3", "+15550103")):
        facts = CallFacts(call_id, [live.sink(call_id)], now_ms=lambda: 0.0)
        facts.emit(CallStarted, caller=caller, pipeline="insurance")
        facts.emit(AgentChanged, turn=0, previous="", agent="triage")
        facts.emit(TranscriptReceived, turn=1, text="I lost my card", agent="triage")
        facts.emit(AgentResponded, turn=1, text="Let me help.", heard_text="Let me", interrupted=True,
                   agent="triage")
        if call_id == "call-3":
            facts.emit(CallEnded, reason="hangup", duration_ms=1.0, turns=1)
            await facts.aclose()
    assert live.writer is not None and await live.writer.flush(10)
    await live.aclose()


def test_lists_the_live_sessions_and_shows_one(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(two_calls(redis_server.url))
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert main(["sessions"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["CALL", "WORKER", "AGENT", "TURN", "CALLER", "PIPELINE", "AGE"]
    rows = [line.split() for line in out[1:]]
    assert [row[:6] for row in rows] == [["call-1", "host-a:101", "triage", "1", "+15550101", "insurance"],
                                         ["call-2", "host-a:101", "triage", "1", "+15550102", "insurance"]]
    assert all(row[6].endswith("s") for row in rows)  # "0m01s": started seconds ago

    assert main(["sessions", "call-1"]) == 0
    detail = capsys.readouterr().out
    assert "caller: +15550101" in detail and "worker: host-a:101" in detail
    assert detail.rstrip().endswith("transcript:\n  [1] caller: I lost my card\n  [1] triage: Let me [interrupted]")

    assert main(["sessions", "--json"]) == 0
    assert [s["call_id"] for s in json.loads(capsys.readouterr().out)] == ["call-1", "call-2"]
    assert main(["sessions", "nope"]) == 1
    assert "no session for call 'nope'" in capsys.readouterr().err


def test_without_redis_it_says_why(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["sessions"]) == 2
    assert "REDIS_URL is not set" in capsys.readouterr().err
    monkeypatch.setenv("REDIS_URL", "ftp://x")
    assert main(["sessions"]) == 2
    assert "REDIS_URL: the scheme must be" in capsys.readouterr().err


def test_an_unreachable_redis_is_one_clear_line(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from tests.sidecars.redis_server import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["sessions"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("voicegraph sessions: cannot reach Redis at REDIS_URL (ConnectionError") and "Traceback" not in err


async def test_follow_prints_the_call_so_far_then_its_facts_until_it_ends(redis_server: RedisServer) -> None:
    live = live_state_from_env({"REDIS_URL": redis_server.url, "VOICEGRAPH_WORKER": "host-a:101"})
    await live.start()
    assert live.writer is not None
    facts = CallFacts("call-9", [live.sink("call-9")], now_ms=lambda: 0.0)
    facts.emit(CallStarted, caller="+15550109", pipeline="insurance")
    facts.emit(TranscriptReceived, turn=1, text="I lost my card", agent="triage")
    assert await live.writer.flush(10)
    env = {**os.environ, "REDIS_URL": redis_server.url, "PYTHONPATH": str(REPO)}
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicegraph.cli", "sessions", "call-9", "--follow", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert follower.stdout is not None
        before: list[str] = []
        while not before or not before[-1].startswith("following call call-9"):
            line = await asyncio.wait_for(follower.stdout.readline(), 60)
            assert line, "the follower exited before following"
            before.append(line.decode().rstrip("\n"))
        facts.emit(AgentResponded, turn=1, text="Let me block it.", heard_text="Let me block it.", agent="triage")
        facts.emit(AgentChanged, turn=2, previous="triage", agent="cards", reason="handoff from triage")
        facts.emit(StateChanged, turn=2, agent="cards", slots={"card": "visa"})
        facts.emit(CallEnded, reason="hangup", duration_ms=42_000.0, turns=2)
        await facts.aclose()
        out, err = await asyncio.wait_for(follower.communicate(), 60)
    finally:
        if follower.returncode is None:
            follower.kill()
            await follower.wait()
    await live.aclose()
    assert follower.returncode == 0, err.decode()
    assert "  [1] caller: I lost my card" in before
    assert out.decode().splitlines() == ["  [1] triage: Let me block it.", "-- agent: triage -> cards (handoff from triage)",
                                "-- cards: card=visa", "-- call ended: hangup after 42.0 s"]


def test_serve_refuses_a_bad_redis_url_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REDIS_URL", "memcached://127.0.0.1:11211")
    assert main(["serve", "--port", "8999"]) == 2  # before binding anything
    err = capsys.readouterr().err
    assert err.startswith("voicegraph serve: REDIS_URL: the scheme must be redis://, rediss:// or unix://")
    assert "Traceback" not in err
