"""`voicegraph dial`: the CLI posts to a running server's /acs/calls and prints the call id.

The server is the real CallsApi on a free port; behind it the real async SDK talks to a
tiny stand-in for ACS's create-call operation on the same server (the local ACS peer serves
only answer on this branch), which checks the SDK's HMAC signature."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from azure.communication.callautomation.aio import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from transports.acs.control import CallControl, CallsApi
from transports.acs.peer.rest import verify_hmac
from transports.acs.sessions import CallSessions
from voicegraph.cli import main

KEY = base64.b64encode(bytes(range(32))).decode()
API_KEY = "dial-test-key"


class Server:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.url = ""
        self.sessions = CallSessions()

    async def create_call(self, request: Request) -> JSONResponse:
        body = await request.body()
        why = verify_hmac(base64.b64decode(KEY), "POST", f"{request.url.path}?{request.url.query}",
                          {k.lower(): v for k, v in request.headers.items()}, body, time.time())
        if why is not None:
            return JSONResponse({"error": {"code": "Denied", "message": why}}, status_code=401)
        sent = json.loads(body)
        self.created.append(sent)
        if sent["targets"][0]["rawId"] == "4:+15550666":
            return JSONResponse({"error": {"code": "Forbidden", "message": "not allowed"}}, status_code=403)
        return JSONResponse({"callConnectionId": "call-dialled", "serverCallId": "srv", "targets": sent["targets"],
                             "callbackUri": sent["callbackUri"], "callConnectionState": "connecting"}, status_code=201)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    served = Server()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    served.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with CallAutomationClient(served.url, AzureKeyCredential(KEY)) as client:
        control = CallControl(served.sessions, public_url="https://bot.example", client=client, caller_id="+15550199")
        app = Starlette(routes=[Route("/calling/callConnections", served.create_call, methods=["POST"]),
                                *CallsApi(control, api_key=API_KEY).routes()])
        uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        task = asyncio.create_task(uv.serve(sockets=[sock]))
        try:
            yield served
        finally:
            uv.should_exit = True
            await task
            sock.close()


async def dial(*argv: str) -> int:
    return await asyncio.to_thread(main, ["dial", *argv])


async def test_dial_prints_the_call_connection_id(
        server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VOICEGRAPH_API_KEY", API_KEY)
    assert await dial("+15550100", "--source", "+15550111", "--server", server.url + "/") == 0
    assert capsys.readouterr().out == "call-dialled\n"
    assert server.created[0]["targets"][0]["rawId"] == "4:+15550100"
    assert server.created[0]["sourceCallerIdNumber"] == {"value": "+15550111"}
    assert server.sessions.live("call-dialled") is not None


async def test_a_refused_call_exits_1_with_the_servers_message(
        server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VOICEGRAPH_API_KEY", API_KEY)
    assert await dial("+15550666", "--server", server.url) == 1
    err = capsys.readouterr().err
    assert err == ("error: the server refused the call: HTTP 502: ACS refused to dial +15550666: "
                   "HTTP 403 Forbidden: not allowed\n")
    monkeypatch.setenv("VOICEGRAPH_API_KEY", "wrong")
    assert await dial("+15550100", "--server", server.url) == 1
    assert "HTTP 401: a wrong API key" in capsys.readouterr().err


async def test_bad_targets_flags_and_a_missing_key_exit_2(
        server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VOICEGRAPH_API_KEY", API_KEY)
    assert await dial("5550100", "--server", server.url) == 2
    assert "error: target must be an E.164 phone number like +15551234567 or an ACS user id" in capsys.readouterr().err
    assert await dial("+15550100", "--source", "abc", "--server", server.url) == 2
    assert "error: source must be an E.164 phone number" in capsys.readouterr().err
    assert await dial("+15550100", "--pipeline", "nope", "--server", server.url) == 2
    assert "HTTP 400: pipeline must be one of acs, got 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        await dial("+15550100", "--server", "127.0.0.1:8000")
    assert info.value.code == 2 and "expected an http(s) base URL" in capsys.readouterr().err
    monkeypatch.delenv("VOICEGRAPH_API_KEY")
    assert await dial("+15550100", "--server", server.url) == 2
    assert "error: VOICEGRAPH_API_KEY is not set" in capsys.readouterr().err
    assert server.created == []


async def test_an_unreachable_server_exits_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VOICEGRAPH_API_KEY", API_KEY)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: the connection is refused
    try:
        assert await dial("+15550100", "--server", f"http://127.0.0.1:{sock.getsockname()[1]}") == 1
    finally:
        sock.close()
    assert "error: cannot reach the server at http://127.0.0.1:" in capsys.readouterr().err
