"""The /acs/media route on a real server (uvicorn, port 0) with real clients (aiohttp,
websockets): the HTTP status a client sees for each refusal (401 JWT, 403 token, 409 a
second socket, 503 keys unknown or worker full), one warning line each; a call over the
socket; a dropped socket reconnected to the same call, or the call ended when none comes;
a socket that never sends AudioMetadata; the development switch; the route in the app."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient, WebSocketDenialResponse

from pipeline.frames import DTMF, OutputAudio, ResponseEnd, ResponseStart
from pipeline.processor import Processor
from pipeline.registry import default_registry
from transports.acs.auth import AcsJwtVerifier, NoAuth, RequestVerifier
from transports.acs.peer.signer import OPENID_PATH, TokenSigner
from transports.acs.route import MEDIA_PATH, MediaLimits, media_route
from transports.acs.sessions import CallSessions
from transports.local.script import render_script
from voicegraph.app import create_app
from voicegraph.paths import pipelines_dir

AUDIENCE = "resource-7f3e"
FRAME = 640  # 20 ms of PCM16 mono at 16 kHz
WAIT_S = 30.0  # bound on waiting for the server (never reached when it works)


class Echo(Processor):
    """The bot of these tests: answers each DTMF digit d with 60 ms of samples of value 1000 * d."""

    consumes = (DTMF,)
    produces = (OutputAudio,)

    async def process(self, frame: DTMF) -> None:
        turn = self.ctx.next_turn()
        value = 1000 * int(frame.digits)
        await self.push(ResponseStart(turn=turn))
        await self.push(OutputAudio(value.to_bytes(2, "little", signed=True) * (FRAME * 3 // 2), turn=turn))
        await self.push(ResponseEnd(turn=turn))


default_registry.register("test_dtmf_echo", Echo)


def pipeline(tmp_path: Path, **line: Any) -> Path:
    settings = ", ".join(f"{k}: {v}" for k, v in {"sample_rate": 16000, "lead_ms": 0, **line}.items())
    path = tmp_path / "echo_acs.yaml"
    path.write_text(f"name: echo_acs\nnodes:\n  caller: {{use: acs_media, {settings}}}\n"
                    f"  bot: {{use: test_dtmf_echo}}\nedges:\n  - caller -> bot -> caller\n")
    return path


class Served:
    """The app, counting WebSocket connections whose handling has returned."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.finished = 0
        self._changed = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "websocket":
                self.finished += 1
                self._changed.set()

    async def wait_finished(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while self.finished < count:
                self._changed.clear()
                await self._changed.wait()


@dataclass
class Server:
    base: str
    signer: TokenSigner
    sessions: CallSessions
    served: Served
    http: aiohttp.ClientSession

    def url(self, token: str | None) -> str:
        return self.base.replace("http", "ws") + MEDIA_PATH + (f"?token={token}" if token is not None else "")

    def headers(self, call: str = "call-1", **mint: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.signer.mint(AUDIENCE, **mint)}",
                "x-ms-call-connection-id": call, "x-ms-call-correlation-id": f"corr-{call}"}

    async def status(self, token: str | None, headers: dict[str, str] | None = None) -> int:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            async with self.http.ws_connect(self.url(token), headers=headers or {}):
                pass
        return info.value.status

    def connect(self, token: str | None, headers: dict[str, str]) -> Any:
        return self.http.ws_connect(self.url(token), headers=headers)


@asynccontextmanager
async def running(path: Path, *, verifier: RequestVerifier | None = None, limits: MediaLimits | None = None,
                  extra: list[Route] | None = None) -> AsyncIterator[Server]:
    signer = TokenSigner()
    sessions = CallSessions()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in the backlog until the server runs: no readiness signal needed
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    check = verifier if verifier is not None else AcsJwtVerifier(AUDIENCE, openid_url=base + OPENID_PATH)
    routes = [media_route(sessions, path, verifier=check, limits=limits), *signer.routes(), *(extra or [])]
    served = Served(Starlette(routes=routes))
    server = uvicorn.Server(uvicorn.Config(served, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with aiohttp.ClientSession() as http:
            yield Server(base, signer, sessions, served, http)
    finally:
        server.should_exit = True
        await task
        sock.close()
        if isinstance(check, AcsJwtVerifier):
            await check.aclose()


def metadata(rate: int = 16000) -> str:
    return json.dumps({"kind": "AudioMetadata", "audioMetadata": {
        "subscriptionId": "sub-1", "encoding": "PCM", "sampleRate": rate, "channels": 1, "length": rate // 25}})


def audio_data(pcm: bytes) -> str:
    return json.dumps({"kind": "AudioData", "audioData": {
        "timestamp": "2024-11-15T19:16:12.925Z", "participantRawID": "8:acs:caller",
        "data": base64.b64encode(pcm).decode("ascii"), "silent": not any(pcm)}})


def dtmf(digit: str) -> str:
    return json.dumps({"kind": "DtmfData", "dtmfData": {"data": digit}})


def frames(pcm: bytes) -> Iterator[bytes]:
    pcm += b"\0" * (-len(pcm) % FRAME)
    for i in range(0, len(pcm), FRAME):
        yield pcm[i:i + FRAME]


async def bot_frames(ws: Any, count: int) -> list[bytes]:
    """The next ``count`` AudioData frames the bot sends."""
    got: list[bytes] = []
    async with asyncio.timeout(WAIT_S):
        while len(got) < count:
            message = json.loads(await ws.receive_str())
            if message["Kind"] == "AudioData":
                got.append(base64.b64decode(message["AudioData"]["Data"]))
    return got


def sample(frame: bytes) -> int:
    return int.from_bytes(frame[:2], "little", signed=True)


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "transports.acs.route" and r.levelno == logging.WARNING]


async def test_each_refusal_gets_its_http_status_and_one_log_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="transports.acs.route")
    async with running(pipeline(tmp_path)) as server:
        token = server.sessions.expect("call-1")
        alg_none = ("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + base64.urlsafe_b64encode(json.dumps(
            {"iss": server.signer.issuer, "aud": AUDIENCE, "exp": int(time.time()) + 300}).encode()).decode().rstrip("=")
            + ".")
        replayed = server.headers()
        statuses = [
            await server.status(token),  # no JWT at all
            await server.status(token, {"Authorization": f"Bearer {alg_none}"}),
            await server.status(token, server.headers(now=time.time() - 3600)),  # expired
            await server.status(token, {**server.headers(), "Authorization": "Bearer " + TokenSigner().mint(AUDIENCE)}),
            await server.status(token, {**server.headers(), "Authorization": "Bearer " + server.signer.mint("other")}),
            await server.status(None, server.headers()),  # a valid JWT, no media token
            await server.status(token[:-1] + "x", server.headers()),  # a valid JWT, a wrong media token
        ]
        assert statuses == [401, 401, 401, 401, 401, 403, 403]
        assert server.sessions.counts().expected == 1  # nothing spent the real token
        async with server.connect(token, replayed) as ws:  # the real thing
            await ws.send_str(metadata())
            assert await server.status(token, replayed) == 401  # the same JWT again: a replay
            assert await server.status(token, server.headers()) == 409  # a second socket for a connected call
            assert server.sessions.live("call-1") is not None  # ... and the call is untouched
            await ws.close(code=1000)
        await server.served.wait_finished(10)
        assert await server.status(token, server.headers()) == 403  # the token of an ended call
        counts = server.sessions.counts()
        assert (counts.expected, counts.live, counts.connected, counts.ended) == (0, 0, 1, 1)
    why = [m.split(": ", 1)[1] for m in refusals(caplog)]
    assert why == [
        "no Authorization header (HTTP 401)",
        "token signed with alg 'none'; only RS256 is accepted (HTTP 401)",
        "token expired (HTTP 401)",
        why[3],  # another key: its kid is unknown here
        f"token for another audience (expected {AUDIENCE}) (HTTP 401)",
        "no media token (HTTP 403)",
        "an unknown, used or expired media token (HTTP 403)",
        why[7],
        "call call-1 already has its media socket (HTTP 409)",
        "an unknown, used or expired media token (HTTP 403)",
    ]
    assert why[3].startswith("unknown signing key id") and why[7].startswith("replayed token (jti:")
    assert all("(x-ms-call-connection-id call-1, x-ms-call-correlation-id corr-call-1)" in m
               for m in refusals(caplog)[3:])
    assert all(r.exc_info is None for r in caplog.records)
    assert all(token not in r.getMessage() for r in caplog.records)  # never logged
    assert any("call call-1: media socket from 127.0.0.1:" in r.getMessage() for r in caplog.records)


async def test_another_client_library_sees_the_same_statuses(tmp_path: Path) -> None:
    async with running(pipeline(tmp_path)) as server:
        token = server.sessions.expect("call-1")
        for headers, status in (({}, 401), (server.headers(), 403)):
            with pytest.raises(websockets.exceptions.InvalidStatus) as info:
                async with websockets.connect(server.url("wrong" if headers else token), additional_headers=headers):
                    pass
            assert info.value.response.status_code == status


async def test_keys_that_cannot_be_fetched_or_no_audience_are_503(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    for verifier in (AcsJwtVerifier(AUDIENCE, openid_url=f"http://127.0.0.1:{port}/x"), AcsJwtVerifier(None)):
        try:
            async with running(pipeline(tmp_path), verifier=verifier) as server:
                assert await server.status(server.sessions.expect("call-1"), server.headers()) == 503
                assert server.sessions.counts().expected == 1
        finally:
            await verifier.aclose()


async def test_a_flood_is_refused_quickly_and_running_calls_go_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="transports.acs.route")
    async with running(pipeline(tmp_path), limits=MediaLimits(max_pending=8, max_connections=2)) as server:
        tokens = [server.sessions.expect(f"call-{i}") for i in range(3)]
        async with server.connect(tokens[0], server.headers("call-0")) as first, \
                server.connect(tokens[1], server.headers("call-1")) as second:
            for ws in (first, second):
                await ws.send_str(metadata())
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                async with server.connect(tokens[2], server.headers("call-2")):
                    pass
            assert info.value.status == 503 and info.value.headers["Retry-After"] == "1"
            await first.send_str(dtmf("3"))  # the calls already running are untouched
            assert [sample(f) for f in await bot_frames(first, 3)] == [3000] * 3
            await second.send_str(dtmf("4"))
            assert [sample(f) for f in await bot_frames(second, 3)] == [4000] * 3
            await first.close(code=1000)
            await second.close(code=1000)
        await server.served.wait_finished(3)
        assert server.sessions.counts().expected == 1  # the refused call's token was not spent
    assert [m.split(": ", 1)[1] for m in refusals(caplog)] == [
        "worker full: 2 media connections already open (HTTP 503)"]


async def test_upgrades_stuck_in_authentication_are_capped(tmp_path: Path) -> None:
    hit = asyncio.Event()
    release = asyncio.Event()

    async def slow_openid(request: Request) -> JSONResponse:  # the key endpoint hangs
        hit.set()
        await release.wait()
        return JSONResponse({"jwks_uri": str(request.base_url).rstrip("/") + "/calling/keys"})

    verifier = AcsJwtVerifier(AUDIENCE, openid_url="set below", fetch_timeout_s=WAIT_S)
    try:
        async with running(pipeline(tmp_path), verifier=verifier, limits=MediaLimits(max_pending=1),
                           extra=[Route("/slow-openid", slow_openid)]) as server:
            verifier.openid_url = server.base + "/slow-openid"
            token = server.sessions.expect("call-1")
            stuck = asyncio.create_task(server.http.ws_connect(server.url(token), headers=server.headers()))
            await asyncio.wait_for(hit.wait(), WAIT_S)  # the first upgrade waits on the keys
            assert await server.status(token, server.headers()) == 503  # another one is turned away
            release.set()
            ws = await asyncio.wait_for(stuck, WAIT_S)  # the first goes through once the keys come
            await ws.close(code=1000)
            await server.served.wait_finished(2)
    finally:
        await verifier.aclose()


async def test_a_dropped_socket_reconnects_to_the_same_call(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="transports.acs")
    async with running(pipeline(tmp_path, reconnect_window_s=WAIT_S)) as server:
        token = server.sessions.expect("call-1")
        async with server.connect(token, server.headers()) as ws:
            await ws.send_str(metadata())
            await ws.send_str(dtmf("1"))
            assert [sample(f) for f in await bot_frames(ws, 3)] == [1000] * 3
            session = server.sessions.live("call-1")
            assert session is not None and session.graph is not None
            graph = session.graph
            await ws.close(code=1001)  # going away: not a hang-up
        await server.served.wait_finished(0)
        async with server.connect(token, server.headers()) as again:  # same URL, a new JWT
            await again.send_str(metadata())
            await again.send_str(dtmf("2"))
            assert [sample(f) for f in await bot_frames(again, 3)] == [2000] * 3  # the same bot, the next turn
            assert server.sessions.live("call-1") is session and session.graph is graph
            await again.close(code=1000)
        await server.served.wait_finished(2)
        assert session.result is not None and (session.result.reason, session.result.errors) == ("eos", ())
        assert await server.status(token, server.headers()) == 403  # the call has ended: its token with it
        counts = server.sessions.counts()
        assert (counts.connected, counts.live, counts.ended) == (1, 0, 1)
    messages = [r.getMessage() for r in caplog.records]
    assert any("media connected -> away: the media socket dropped (close 1001)" in m for m in messages)
    assert any("call call-1: media socket reconnected from 127.0.0.1:" in m for m in messages)


async def test_no_reconnection_within_the_window_ends_the_call(tmp_path: Path) -> None:
    async with running(pipeline(tmp_path, reconnect_window_s=0.2)) as server:
        token = server.sessions.expect("call-1")
        async with server.connect(token, server.headers()) as ws:
            await ws.send_str(metadata())
            session = server.sessions.live("call-1")
            await ws.close(code=1011)
        await server.served.wait_finished(1)  # the call's handler returns once the window has passed
        assert session is not None and session.result is not None and session.result.reason == "fatal"
        assert [e.message for e in session.result.errors] == [
            "the media socket dropped (close 1011) and ACS did not reconnect within 0.2 s"]
        assert await server.status(token, server.headers()) == 403


async def test_a_socket_that_never_sends_metadata_is_closed_with_1002(tmp_path: Path) -> None:
    async with running(pipeline(tmp_path, metadata_timeout_s=0.2)) as server:
        async with server.connect(server.sessions.expect("call-1"), server.headers()) as ws:
            await ws.send_str(audio_data(b"\1\0" * 320))  # AudioData before AudioMetadata: refused, call goes on
            session = server.sessions.live("call-1")
            message = await asyncio.wait_for(ws.receive(), WAIT_S)
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1002
            assert message.extra.startswith("no AudioMetadata within 0.2 s")
        await server.served.wait_finished(1)
        assert session is not None and session.result is not None and session.result.reason == "fatal"
        assert server.sessions.counts().live == 0


async def test_the_development_switch_admits_a_socket_without_a_token(tmp_path: Path) -> None:
    async with running(pipeline(tmp_path), verifier=NoAuth()) as server:
        async with server.connect(None, {}) as ws:
            await ws.send_str(metadata())
            await ws.send_str(dtmf("5"))
            assert [sample(f) for f in await bot_frames(ws, 3)] == [5000] * 3
            assert server.sessions.counts().live == 1
            await ws.close(code=1000)
        await server.served.wait_finished(1)
        assert await server.status("guess") == 403  # a token that is given is still checked


def test_the_app_mounts_the_route_and_refuses_without_an_audience(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOICEGRAPH_ACS_AUDIENCE", raising=False)
    monkeypatch.delenv("VOICEGRAPH_ACS_NO_AUTH", raising=False)
    app = create_app()
    assert isinstance(app.state.acs_sessions, CallSessions)
    with pytest.raises(WebSocketDenialResponse) as info, TestClient(app).websocket_connect(MEDIA_PATH):
        pass
    assert info.value.status_code == 503


async def test_a_spoken_call_over_the_socket(caplog: pytest.LogCaptureFixture) -> None:
    """Greeting first; the caller talks over it (a StopAudio cuts it); then the answer."""
    caplog.set_level(logging.INFO, logger="transports.acs.route")
    (line,) = render_script(["What are your opening hours"], sample_rate=16000)
    greeting: list[bytes] = []
    answer: list[bytes] = []
    stops = 0
    async with running(pipelines_dir() / "acs.yaml") as server:
        token = server.sessions.expect("call-42")
        async with server.connect(token, server.headers("call-42")) as ws:
            await ws.send_str(metadata())
            first = json.loads(await asyncio.wait_for(ws.receive_str(), WAIT_S))  # the greeting's first frame
            assert set(first) == {"Kind", "AudioData", "StopAudio"}
            assert first["Kind"] == "AudioData" and first["StopAudio"] is None and set(first["AudioData"]) == {"Data"}
            greeting.append(base64.b64decode(first["AudioData"]["Data"]))
            for chunk in frames(line.pcm + b"\0" * (16000 * 2 * 3 // 2)):  # the line, then 1.5 s of silence
                await ws.send_str(audio_data(chunk))
            async with asyncio.timeout(WAIT_S):
                while len(answer) < 75:  # 1.5 s of the answer is enough; the rest plays out in real time
                    message = json.loads(await ws.receive_str())
                    if message["Kind"] == "StopAudio":
                        assert message == {"Kind": "StopAudio", "AudioData": None, "StopAudio": {}}
                        stops += 1
                        continue
                    assert message["Kind"] == "AudioData" and message["StopAudio"] is None
                    (answer if stops else greeting).append(base64.b64decode(message["AudioData"]["Data"]))
            session = server.sessions.live("call-42")
            await ws.close(code=1000)
        await server.served.wait_finished(1)
    assert stops == 1  # the caller's speech cut the greeting once
    assert all(len(f) == FRAME for f in greeting + answer)
    assert 1 <= len(greeting) < 200  # cut well before its ~4.5 s
    loud = sum(1 for f in answer if max(abs(int.from_bytes(f[i:i + 2], "little", signed=True))
                                        for i in range(0, FRAME, 2)) > 1000)
    assert loud > 25  # speech, not silence
    assert session is not None and session.result is not None and session.result.reason == "eos"
    assert any("call call-42 ended: eos" in r.getMessage() for r in caplog.records)
