"""A call that moves between workers: two real ``voicegraph serve`` processes on one real
Redis, and the local ACS (its REST endpoint, Event Grid, signed callbacks and JWTs).

The phone rings on worker A, which answers it through the Call Automation SDK; ACS (the
local peer) connects the call's media WebSocket to A. The caller keys in an account
number: the desk agent fills the ``account`` slot and hands the call to the vault agent.
The socket then drops (close 1001) and ACS reconnects to the same URL, which a load
balancer sends to worker B: B finds the token's call in Redis, adopts it and runs it on,
with the vault agent, the slot and the flow position A left (without them, B's desk agent
would take the PIN for an account number). A's half ends when its reconnect window
closes without marking the call ended; the caller hangs up on B and the call ends.

A second test runs two apps in this process on the same Redis to check the bookkeeping of
a take-over: one connection on B, no refusal; a token no worker knows is still a 403.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from redis.asyncio import Redis

from processors.sidecars.live import live_state_from_env
from processors.sidecars.services import DataTier
from tests.sidecars.redis_server import RedisServer, free_port
from transports.acs.auth import NoAuth
from transports.acs.events import EVENTS_PATH
from transports.acs.peer.app import create_peer
from transports.acs.peer.connect import MediaConnect
from transports.acs.peer.eventgrid import EventGridSender
from transports.acs.peer.signer import OPENID_PATH
from voicegraph.acs_testbed import serving
from voicegraph.app import create_app

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60.0  # bound on every wait (never reached when it works)

PIPELINE = """\
name: acs
nodes:
  caller: {use: acs_media, sample_rate: 16000, reconnect_window_s: 3}
  brain: {use: orchestrator, scenario: "{scenario}", agents: "{agents}"}
edges:
  - caller -> brain
"""
DESK = """\
name: desk
description: Takes the caller's account number, then hands the call to the vault.
capabilities: [desk]
greeting: "Welcome to the bank."
handoffs: {vault: "once the account number is known"}
prompt: "You take the account number."
flow:
  start: ask_account
  steps:
    ask_account: {ask: "Key in your account number.", slot: account, type: digits, next: to_vault}
    to_vault: {handoff: vault, announce: true}
"""
VAULT = """\
name: vault
description: Takes the caller's PIN.
capabilities: [vault]
greeting: "This is the vault."
handoffs: {}
prompt: "You take the PIN."
flow:
  start: ask_pin
  steps:
    ask_pin: {ask: "Key in your PIN.", slot: pin, type: digits, next: thanks}
    thanks: {ask: "Thank you. Anything else?", slot: extra, type: digits, always: true, next: thanks}
"""
SCENARIO = """\
name: bank
description: "A desk that takes the account number and a vault that takes the PIN."
entry: desk
agents: [desk, vault]
"""


def bank_config(folder: Path) -> Path:
    """A working folder whose ``config/`` serves the bank scenario on ``/acs/media``."""
    config = folder / "config"
    for sub in ("pipelines", "agents", "scenarios"):
        (config / sub).mkdir(parents=True)
    (config / "pipelines" / "acs.yaml").write_text(
        PIPELINE.replace("{scenario}", str(config / "scenarios" / "bank.yaml")).replace("{agents}",
                                                                                      str(config / "agents")))
    shutil.copy(REPO / "config" / "agents" / "base.yaml", config / "agents" / "base.yaml")
    (config / "agents" / "desk.yaml").write_text(DESK)
    (config / "agents" / "vault.yaml").write_text(VAULT)
    (config / "scenarios" / "bank.yaml").write_text(SCENARIO)
    return folder


class Worker:
    """One ``voicegraph serve`` process; its log lines are kept and can be waited for."""

    def __init__(self, name: str, cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**env, "VOICEGRAPH_WORKER": name, "VOICEGRAPH_PUBLIC_URL": self.url}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voicegraph.cli", "--log-level", "INFO", "serve", "--port", str(self.port)],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._pump, name=f"{name}-log", daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip())
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<exited>")
            self._changed.notify_all()

    def _wait(self, text: str, timeout_s: float) -> str:
        with self._changed:
            found = self._changed.wait_for(lambda: any(text in line or line == "<exited>" for line in self.lines),
                                           timeout_s)
            match = next((line for line in self.lines if text in line), None)
        if not found or match is None:
            raise AssertionError(f"{self.name} never logged {text!r}:\n" + "\n".join(self.lines[-30:]))
        return match

    async def wait_line(self, text: str) -> str:
        """The first log line containing ``text`` (waits for it, off the loop)."""
        return await asyncio.to_thread(self._wait, text, WAIT_S)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def wait_hash(redis: Redis, key: str, check: Callable[[dict[str, str]], bool]) -> dict[str, str]:
    """The hash at ``key`` once ``check`` holds, woken by Redis's keyspace notifications."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"__keyspace@0__:{key}")
    try:
        async with asyncio.timeout(WAIT_S):
            # Subscribed for sure before the first read: a write after the read is then always heard.
            while (await pubsub.get_message(timeout=None) or {}).get("type") != "subscribe":
                pass
            while True:
                value: dict[str, str] = await redis.hgetall(key)
                if check(value):
                    return value
                await pubsub.get_message(timeout=None)
    finally:
        await pubsub.aclose()


def on_worker(url: str, worker: Worker) -> str:
    """The same media URL, as a load balancer would route it to ``worker``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{worker.port}"))


def metadata() -> str:
    return json.dumps({"kind": "AudioMetadata", "audioMetadata": {
        "subscriptionId": "sub-1", "encoding": "PCM", "sampleRate": 16000, "channels": 1, "length": 640}})


def dtmf(digit: str) -> str:
    return json.dumps({"kind": "DtmfData", "dtmfData": {"data": digit}})


@pytest.fixture
async def workers(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[dict[str, Any]]:
    cwd = bank_config(tmp_path)
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    sender = EventGridSender()
    script: dict[str, Any] = {}

    async def media(connect: MediaConnect) -> None:
        await script["run"](connect)

    peer = create_peer(key, media=media, sender=sender)
    async with serving(peer.app) as peer_url:
        env = {name: value for name, value in os.environ.items()
               if name not in ("OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "VOICEGRAPH_ACS_NO_AUTH")}
        env.update(PYTHONPATH=str(REPO), REDIS_URL=redis_server.url,
                   ACS_ENDPOINT=peer_url, ACS_KEY=key,
                   VOICEGRAPH_ACS_AUDIENCE=peer.resource_id, VOICEGRAPH_ACS_OPENID_URL=peer_url + OPENID_PATH)
        a, b = Worker("worker-a", cwd, env), Worker("worker-b", cwd, env)
        try:
            for worker in (a, b):
                await worker.wait_line("Uvicorn running on")  # bound and listening (after the lifespan)
            await sender.validate(a.url + EVENTS_PATH)
            yield {"a": a, "b": b, "peer": peer, "sender": sender, "script": script}
        finally:
            a.stop()
            b.stop()
            for worker in (a, b):  # shown when the test fails
                print(f"--- {worker.name}:\n" + "\n".join(worker.lines))


async def test_a_call_reconnecting_to_another_worker_goes_on_with_its_agent_slots_and_context(
        workers: dict[str, Any], redis_server: RedisServer) -> None:
    a: Worker = workers["a"]
    b: Worker = workers["b"]
    redis = Redis.from_url(redis_server.url, decode_responses=True)
    await redis.config_set("notify-keyspace-events", "Kh")  # keyspace events of hash writes
    done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def caller(connect: MediaConnect) -> None:
        seen: dict[str, Any] = {}
        call_id = connect.call_connection_id
        session_key, context_key = f"vg:call:{{{call_id}}}:session", f"vg:call:{{{call_id}}}:context"
        slots_key = f"vg:call:{{{call_id}}}:slots"
        try:
            async with aiohttp.ClientSession() as http:
                async with http.ws_connect(connect.transport_url, headers=connect.headers) as ws:
                    connect.connected()
                    await ws.send_str(metadata())
                    await ws.send_str(dtmf("7"))  # the account number, to the desk agent
                    seen["on_a"] = await wait_hash(redis, context_key, lambda h: h.get("agent") == "vault")
                    seen["slots_a"] = await redis.hgetall(slots_key)
                    seen["session_a"] = await redis.hgetall(session_key)
                    await ws.close(code=1001)  # the socket drops; ACS reconnects to the same URL
                async with http.ws_connect(on_worker(connect.transport_url, b), headers=connect.headers) as ws:
                    await ws.send_str(metadata())
                    await ws.send_str(dtmf("9"))  # the PIN, to the agent in charge
                    seen["slots_b"] = await wait_hash(redis, slots_key, lambda h: h != seen["slots_a"])
                    seen["session_b"] = await redis.hgetall(session_key)
                    seen["a_ended"] = await a.wait_line(f"call {call_id} ended")  # A's reconnect window closed
                    seen["session_after_a"] = await redis.hgetall(session_key)
                    await ws.close(code=1000)  # the caller hangs up
                seen["session_end"] = await wait_hash(redis, session_key, lambda h: h.get("state") == "ended")
            done.set_result(seen)
        except BaseException as exc:
            done.set_exception(exc)
            raise

    workers["script"]["run"] = caller
    ringing = workers["peer"].switchboard.ring(caller="+15550100", callee="+15550199")
    sent = await workers["sender"].incoming_call(a.url + EVENTS_PATH, ringing)
    assert sent.status == 200, sent.body
    seen = await asyncio.wait_for(done, WAIT_S * 3)
    await redis.aclose()

    assert seen["session_a"]["worker"] == "worker-a" and seen["session_a"]["state"] == "live"
    assert seen["slots_a"] == {"account": '"7"'}
    # On B: the vault agent took the PIN; the account number from A is still there.
    assert seen["slots_b"] == {"account": '"7"', "pin": '"9"'}
    assert seen["session_b"]["worker"] == "worker-b" and seen["session_b"]["state"] == "live"
    assert "resumed_at" in seen["session_b"]
    # A's half ended (no reconnection to A) without ending the call B runs.
    assert "did not reconnect" in seen["a_ended"] or "ended" in seen["a_ended"]
    assert seen["session_after_a"]["state"] == "live" and seen["session_after_a"]["worker"] == "worker-b"
    assert seen["session_end"]["worker"] == "worker-b"
    resumed = await b.wait_line("resumed with agent")
    assert "resumed with agent vault, 1 slots, 1 turns" in resumed
    assert any("taken over from another worker" in line for line in b.lines)


async def test_a_take_over_is_counted_as_a_connection_not_a_refusal(tmp_path: Path,
                                                                    redis_server: RedisServer) -> None:
    """Two apps in this process on one Redis: the reconnection B adopts is one connection and
    no refusal; a token no worker knows is refused (403) and counted once."""
    config = bank_config(tmp_path) / "config"
    live_a = live_state_from_env({"REDIS_URL": redis_server.url, "VOICEGRAPH_WORKER": "a"})
    live_b = live_state_from_env({"REDIS_URL": redis_server.url, "VOICEGRAPH_WORKER": "b"})
    app_a = create_app(config, poll_s=3600, verifier=NoAuth(), data_tier=DataTier(short_term=live_a, live=live_a))
    app_b = create_app(config, poll_s=3600, verifier=NoAuth(), data_tier=DataTier(short_term=live_b, live=live_b))
    await live_a.start()
    await live_b.start()
    try:
        async with serving(app_a) as url_a, serving(app_b) as url_b, aiohttp.ClientSession() as http:
            token = app_a.state.acs_sessions.expect("call-1")
            async with http.ws_connect(f"{url_a.replace('http', 'ws')}/acs/media?token={token}") as ws:
                await ws.send_str(metadata())
                assert live_a.writer is not None and await live_a.writer.flush(10)
                await ws.close(code=1001)
            async with http.ws_connect(f"{url_b.replace('http', 'ws')}/acs/media?token={token}") as ws:
                await ws.send_str(metadata())
                session = app_b.state.acs_sessions.live("call-1")
                assert session is not None and session.media_connected
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    async with http.ws_connect(f"{url_b.replace('http', 'ws')}/acs/media?token=nobodys"):
                        pass
                assert refused.value.status == 403
                counts = app_b.state.acs_sessions.counts()
                assert (counts.connected, counts.refused, counts.live) == (1, 1, 1)
                await ws.close(code=1000)
            assert app_a.state.acs_sessions.counts().refused == 0
    finally:
        await live_a.aclose()
        await live_b.aclose()
