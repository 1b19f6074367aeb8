"""CallControl and the /acs/calls API through the real async SDK, against a local ACS on a free port.

The local ACS REST peer (transports/acs/peer/rest.py) serves only the answer request on
this branch, so dial, hang up, transfer and recording go to ``FakeAcs`` below: a tiny
Starlette app on the SDK's own paths that checks the SDK's HMAC signature with the peer's
``verify_hmac``, records each request and answers with the status and body ACS documents
(create 201, terminate 204, transferToParticipant 202, recordings 200 / DELETE 204). It
stands in until the peer grows those operations."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from azure.communication.callautomation import AudioFormat
from azure.communication.callautomation.aio import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from transports.acs.control import CallControl, CallsApi, ControlError, parse_target
from transports.acs.peer.rest import verify_hmac
from transports.acs.sessions import CallSessions, CallState

KEY = base64.b64encode(bytes(range(32))).decode()
PUBLIC = "https://bot.example"
API_KEY = "test-api-key-0123456789"


@dataclass
class FakeAcs:
    """Records the SDK's requests (method, path, body); ``fail`` maps a path suffix to an error status."""

    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    hold: asyncio.Event | None = None

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/calling/{rest:path}", self.handle, methods=["POST", "DELETE"])])

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        query = request.scope["query_string"].decode()
        why = verify_hmac(base64.b64decode(KEY), request.method, f"{path}?{query}",
                          {k.lower(): v for k, v in request.headers.items()}, body, time.time())
        if why is not None:
            self.refused.append(why)
            return JSONResponse({"error": {"code": "Denied", "message": why}}, status_code=401)
        self.requests.append((request.method, path, json.loads(body) if body else {}))
        if self.hold is not None:
            await self.hold.wait()
        for suffix, status in self.fail.items():
            if path.endswith(suffix):
                return JSONResponse({"error": {"code": "Bad", "message": f"refused {suffix}"}}, status_code=status)
        if path == "/calling/callConnections" and request.method == "POST":
            sent = json.loads(body)
            return JSONResponse({"callConnectionId": "call-out-1", "serverCallId": "server-out-1",
                                 "callConnectionState": "connecting", "callbackUri": sent["callbackUri"],
                                 "targets": sent["targets"], "correlationId": "corr-out-1"}, status_code=201)
        if path.endswith(":terminate"):
            return Response(status_code=204)
        if path.endswith(":transferToParticipant"):
            return JSONResponse({"operationContext": None}, status_code=202)
        if path == "/calling/recordings":
            return JSONResponse({"recordingId": "rec-1", "recordingState": "active", "recordingKind": "AzureCommunicationServices"})
        if request.method == "DELETE" and path.startswith("/calling/recordings/"):
            return Response(status_code=204)
        return JSONResponse({"error": {"code": "NotFound", "message": path}}, status_code=404)


@pytest.fixture
async def acs() -> AsyncIterator[tuple[FakeAcs, str]]:
    fake = FakeAcs()
    # A socket listening before the server starts: connections wait in its backlog.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(fake.app(), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield fake, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        if fake.hold is not None:
            fake.hold.set()
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def control(acs: tuple[FakeAcs, str]) -> AsyncIterator[CallControl]:
    async with CallAutomationClient(acs[1], AzureKeyCredential(KEY)) as client:
        yield CallControl(CallSessions(), public_url=PUBLIC, client=client, caller_id="+15550199")


async def test_dial_creates_the_call_with_media_streaming_and_the_calls_tokens(
        acs: tuple[FakeAcs, str], control: CallControl) -> None:
    fake, _ = acs
    control.audio_format = AudioFormat.PCM24_K_MONO
    session = await control.dial("+15550100")
    assert fake.refused == []  # the SDK's HMAC signature checked and valid
    ((method, path, body),) = fake.requests
    assert (method, path) == ("POST", "/calling/callConnections")
    assert body["targets"] == [{"rawId": "4:+15550100", "phoneNumber": {"value": "+15550100"}}]
    assert body["sourceCallerIdNumber"] == {"value": "+15550199"}
    options = body["mediaStreamingOptions"]
    assert {k: v for k, v in options.items() if k != "transportUrl"} == {
        "transportType": "websocket", "contentType": "audio", "audioChannelType": "mixed",
        "startMediaStreaming": True, "enableBidirectional": True, "audioFormat": "pcm24KMono"}
    media, callback = urlsplit(options["transportUrl"]), urlsplit(body["callbackUri"])
    assert (media.scheme, media.netloc, media.path) == ("wss", "bot.example", "/acs/media")
    assert (callback.scheme, callback.netloc, callback.path) == ("https", "bot.example", "/acs/callbacks")
    assert parse_qs(callback.query) == {"token": [session.callback_token]}
    assert session.call_connection_id == "call-out-1" and session.server_call_id == "server-out-1"
    assert session.direction == "outbound" and session.state is CallState.CONNECTING and session.pipeline == "acs"
    assert control.sessions.live("call-out-1") is session
    (token,) = parse_qs(media.query)["token"]
    assert control.sessions.claim(token) is session


async def test_dial_an_acs_user_with_an_explicit_source(acs: tuple[FakeAcs, str], control: CallControl) -> None:
    await control.dial("8:acs:resource_0001-user", source="+15550111")
    body = acs[0].requests[0][2]
    assert body["targets"] == [{"rawId": "8:acs:resource_0001-user",
                                "communicationUser": {"id": "8:acs:resource_0001-user"}}]
    assert body["sourceCallerIdNumber"] == {"value": "+15550111"}


@pytest.mark.parametrize(("target", "source", "message"), [
    ("15550100", None, "target must be an E.164 phone number like +15551234567 or an ACS user id"),
    ("+0555", None, "target must be an E.164 phone number like +15551234567, got '+0555'"),
    ("+1555010012345678", None, "target must be an E.164 phone number"),
    ("", None, "target must be a non-empty string, got ''"),
    ("8:acs:", None, "or an ACS user id like 8:acs:<resource>_<user>, got '8:acs:'"),
    ("8:acs:x y", None, "got '8:acs:x y'"),
    ("+15550100", "555", "source must be an E.164 phone number like +15551234567, got '555'"),
    ("+1" + "5" * 300, None, "target is 302 characters long (at most 256)"),
])
async def test_bad_targets_are_refused_400_before_acs_is_asked(
        acs: tuple[FakeAcs, str], control: CallControl, target: str, source: str | None, message: str) -> None:
    with pytest.raises(ControlError) as info:
        await control.dial(target, source)
    assert info.value.status == 400 and message in info.value.message
    assert acs[0].requests == [] and control.sessions.counts().live == 0


async def test_a_phone_target_needs_a_caller_id(acs: tuple[FakeAcs, str]) -> None:
    async with CallAutomationClient(acs[1], AzureKeyCredential(KEY)) as client:
        control = CallControl(CallSessions(), public_url=PUBLIC, client=client)
        control.caller_id = None
        with pytest.raises(ControlError, match="calling the phone number \\+15550100 needs a caller id") as info:
            await control.dial("+15550100")
    assert info.value.status == 400 and acs[0].requests == []
    with pytest.raises(ValueError, match=r"VOICEGRAPH_ACS_CALLER_ID must be an E\.164 phone number"):
        CallControl(CallSessions(), public_url=PUBLIC, caller_id="5550100")


async def test_hang_up_terminates_the_call_for_everyone_and_ends_it_here(
        acs: tuple[FakeAcs, str], control: CallControl) -> None:
    session = await control.dial("+15550100")
    await control.hang_up("call-out-1")
    assert acs[0].requests[-1][:2] == ("POST", "/calling/callConnections/call-out-1:terminate")
    assert control.sessions.live("call-out-1") is None and session.ended_reason == "hung up"
    with pytest.raises(ControlError) as info:
        await control.hang_up("call-out-1")
    assert info.value.status == 404 and info.value.message == "no call 'call-out-1' on this worker (unknown or ended)"
    assert len(acs[0].requests) == 2  # the unknown call never reached ACS


async def test_transfer_asks_acs_and_the_call_goes_on_until_acs_accepts(
        acs: tuple[FakeAcs, str], control: CallControl) -> None:
    await control.dial("+15550100")
    await control.transfer("call-out-1", "+15550123")
    method, path, body = acs[0].requests[-1]
    assert (method, path) == ("POST", "/calling/callConnections/call-out-1:transferToParticipant")
    assert body["targetParticipant"] == {"rawId": "4:+15550123",
                                         "phoneNumber": {"value": "+15550123"}}
    assert control.sessions.live("call-out-1") is not None
    with pytest.raises(ControlError, match=r"target must be an E\.164"):
        await control.transfer("call-out-1", "someone")


async def test_recording_starts_on_the_server_call_and_stops_by_its_id(
        acs: tuple[FakeAcs, str], control: CallControl) -> None:
    session = await control.dial("+15550100")
    with pytest.raises(ControlError, match="call call-out-1 is not being recorded") as info:
        await control.stop_recording("call-out-1")
    assert info.value.status == 409
    assert await control.start_recording("call-out-1") == "rec-1"
    method, path, body = acs[0].requests[-1]
    assert (method, path) == ("POST", "/calling/recordings")
    assert body["callLocator"] == {"serverCallId": "server-out-1", "kind": "serverCallLocator"}
    assert body["recordingStateCallbackUri"] == f"{PUBLIC}/acs/callbacks?token={session.callback_token}"
    assert (session.recording_id, session.recording_state) == ("rec-1", "active")
    with pytest.raises(ControlError, match="already being recorded \\(rec-1\\)"):
        await control.start_recording("call-out-1")
    await control.stop_recording("call-out-1")
    assert acs[0].requests[-1][:2] == ("DELETE", "/calling/recordings/rec-1")


async def test_acs_refusing_is_502_and_a_refused_dial_leaves_nothing(
        acs: tuple[FakeAcs, str], control: CallControl, caplog: pytest.LogCaptureFixture) -> None:
    acs[0].fail["/calling/callConnections"] = 403
    with caplog.at_level(logging.WARNING, logger="transports.acs.control"), pytest.raises(ControlError) as info:
        await control.dial("+15550100")
    assert info.value.status == 502
    assert info.value.message == ("ACS refused to dial +15550100: HTTP 403 Forbidden: refused /calling/callConnections")
    assert control.sessions.counts().live == 0 and control.sessions.counts().expected == 0
    assert info.value.message in caplog.text and all(r.exc_info is None for r in caplog.records)


async def test_acs_not_answering_in_time_is_504(acs: tuple[FakeAcs, str], control: CallControl) -> None:
    acs[0].hold = asyncio.Event()  # the request is received and never answered
    control.timeout_s = 0.05
    with pytest.raises(ControlError) as info:
        await control.dial("+15550100")
    assert info.value.status == 504 and info.value.message == "ACS did not respond to dial +15550100 within 0.05 s"
    assert len(acs[0].requests) == 1 and control.sessions.counts().live == 0


async def test_acs_unreachable_is_502() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    port = sock.getsockname()[1]
    try:
        async with CallAutomationClient(f"http://127.0.0.1:{port}", AzureKeyCredential(KEY),
                                        retry_total=0) as client:
            control = CallControl(CallSessions(), public_url=PUBLIC, client=client)
            with pytest.raises(ControlError) as info:
                await control.dial("8:acs:r_1")
    finally:
        sock.close()
    assert info.value.status == 502 and info.value.message.startswith("could not reach ACS to dial 8:acs:r_1: ")


async def test_without_configuration_actions_are_503(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VOICEGRAPH_PUBLIC_URL", "ACS_CONNECTION_STRING", "ACS_ENDPOINT", "ACS_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ControlError, match="cannot dial 8:acs:r_1: VOICEGRAPH_PUBLIC_URL is not set") as info:
        await CallControl(CallSessions()).dial("8:acs:r_1")
    assert info.value.status == 503
    with pytest.raises(ControlError, match="neither ACS_CONNECTION_STRING nor ACS_ENDPOINT \\+ ACS_KEY") as info:
        await CallControl(CallSessions(), public_url=PUBLIC).dial("8:acs:r_1")
    assert info.value.status == 503


def test_parse_target_gives_the_sdks_identifiers() -> None:
    assert parse_target("+15550100").raw_id == "4:+15550100"
    assert parse_target("8:acs:res_user").raw_id == "8:acs:res_user"


# --- the HTTP API --------------------------------------------------------------------------


async def call_api(control: CallControl, path: str, body: Any = None, *, key: str | None = API_KEY,
                   api_key: str = API_KEY, raw: bytes | None = None) -> httpx.Response:
    app = Starlette(routes=CallsApi(control, api_key=api_key).routes())
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    content = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        return await http.post(path, content=content, headers=headers)


async def test_the_api_needs_the_key(acs: tuple[FakeAcs, str], control: CallControl,
                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="transports.acs.control"):
        missing = await call_api(control, "/acs/calls", {"target": "+15550100"}, key=None)
        wrong = await call_api(control, "/acs/calls", {"target": "+15550100"}, key="guess")
        unset = await call_api(control, "/acs/calls", {"target": "+15550100"}, api_key="")
    assert (missing.status_code, wrong.status_code, unset.status_code) == (401, 401, 503)
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json() == {"error": "no bearer API key: send Authorization: Bearer $VOICEGRAPH_API_KEY"}
    assert wrong.json() == {"error": "a wrong API key: send Authorization: Bearer $VOICEGRAPH_API_KEY"}
    assert unset.json() == {"error": "call actions are disabled: VOICEGRAPH_API_KEY is not set"}
    assert acs[0].requests == [] and API_KEY not in caplog.text and "guess" not in caplog.text


async def test_the_api_dials_hangs_up_transfers_and_records(acs: tuple[FakeAcs, str], control: CallControl) -> None:
    created = await call_api(control, "/acs/calls", {"target": "+15550100", "pipeline": "acs"})
    assert created.status_code == 201 and created.json() == {"callConnectionId": "call-out-1"}
    transfer = await call_api(control, "/acs/calls/call-out-1:transfer", {"target": "+15550123"})
    assert transfer.status_code == 202
    start = await call_api(control, "/acs/calls/call-out-1:recording", {"action": "start"})
    assert start.status_code == 200 and start.json() == {"callConnectionId": "call-out-1", "recordingId": "rec-1"}
    stop = await call_api(control, "/acs/calls/call-out-1:recording", {"action": "stop"})
    assert stop.status_code == 200
    hangup = await call_api(control, "/acs/calls/call-out-1:hangup")
    assert hangup.status_code == 200 and hangup.json() == {"callConnectionId": "call-out-1", "state": "disconnected"}
    assert [p for _, p, _ in acs[0].requests] == [
        "/calling/callConnections", "/calling/callConnections/call-out-1:transferToParticipant",
        "/calling/recordings", "/calling/recordings/rec-1", "/calling/callConnections/call-out-1:terminate"]
    gone = await call_api(control, "/acs/calls/call-out-1:hangup")
    assert gone.status_code == 404


@pytest.mark.parametrize(("path", "body", "raw", "status", "message"), [
    ("/acs/calls", None, b"{", 400, "the body is not JSON"),
    ("/acs/calls", None, b"[]", 400, "the body must be a JSON object, got a JSON list"),
    ("/acs/calls", {}, None, 400, "target is required"),
    ("/acs/calls", {"target": 15550100}, None, 400, "target must be a string, got 15550100"),
    ("/acs/calls", {"target": "+15550100", "pipeline": "other"}, None, 400, "pipeline must be one of acs, got 'other'"),
    ("/acs/calls", None, b"{" + b" " * 70_000 + b"}", 413, "the body is over 65536 bytes"),
    ("/acs/calls/call-x:dance", {}, None, 404, "no such call action '/acs/calls/call-x:dance'"),
    ("/acs/calls/call-x", {}, None, 404, "no such call action"),
    ("/acs/calls/call-x:hangup", None, None, 404, "no call 'call-x' on this worker"),
    ("/acs/calls/call-x:recording", {"action": "start"}, None, 404, "no call 'call-x'"),
])
async def test_the_api_refuses_bad_requests_clearly(
        acs: tuple[FakeAcs, str], control: CallControl, path: str, body: Any, raw: bytes | None,
        status: int, message: str) -> None:
    response = await call_api(control, path, body, raw=raw)
    assert response.status_code == status and message in response.json()["error"]
    assert acs[0].requests == []


async def test_a_recording_action_must_be_start_or_stop(acs: tuple[FakeAcs, str], control: CallControl) -> None:
    await control.dial("+15550100")
    response = await call_api(control, "/acs/calls/call-out-1:recording", {"action": "pause"})
    assert response.status_code == 400 and response.json() == {"error": 'action must be "start" or "stop", got \'pause\''}


async def test_end_call_hangs_up_a_call_whose_session_is_gone_and_never_raises(
        caplog: pytest.LogCaptureFixture) -> None:
    unconfigured = CallControl(CallSessions(), public_url="https://bot.example")
    with caplog.at_level(logging.WARNING, logger="transports.acs.control"):
        assert await unconfigured.end_call("call-9", "media streaming failed") is False
    assert any("ACS_CONNECTION_STRING" in r.getMessage() or "not configured" in r.getMessage()
               for r in caplog.records if r.name == "transports.acs.control")


async def test_end_call_terminates_a_call_that_is_no_longer_live_here(
        acs: tuple[FakeAcs, str], control: CallControl) -> None:
    session = await control.dial("+15550100")
    control.sessions.end(session, "media streaming failed", error="media streaming failed: ...")
    assert await control.end_call("call-out-1", "media streaming failed") is True
    assert acs[0].requests[-1][:2] == ("POST", "/calling/callConnections/call-out-1:terminate")
