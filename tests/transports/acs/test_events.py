"""The /acs/events webhook against the real SDK and the local ACS REST peer on a free port.

The official async client signs its answer request with HMAC-SHA256; the peer checks the
signature as ACS does, so a passing answer proves the SDK, our options and the peer agree
on the wire."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from azure.communication.callautomation import AudioFormat
from azure.communication.callautomation.aio import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from starlette.applications import Starlette
from starlette.testclient import TestClient

from transports.acs.control import CallControl
from transports.acs.events import EventsWebhook, IncomingCall, SubscriptionValidation, parse_events
from transports.acs.peer.rest import AcsRestPeer, verify_hmac
from transports.acs.sessions import CallSessions
from voicegraph.app import create_app

KEY = base64.b64encode(bytes(range(32))).decode()
WRONG_KEY = base64.b64encode(bytes(range(1, 33))).decode()
PUBLIC = "https://bot.example"


def incoming_call(context: str = "ctx-1") -> dict[str, Any]:
    return {"id": "e1", "topic": "/acs", "subject": "call", "eventType": "Microsoft.Communication.IncomingCall",
            "eventTime": "2026-01-01T00:00:00Z", "dataVersion": "1.0",
            "data": {"to": {"kind": "phoneNumber", "rawId": "4:+15550001"}, "from": {"rawId": "4:+15550002"},
                     "serverCallId": "srv-1", "incomingCallContext": context, "correlationId": "corr-1"}}


@pytest.fixture
async def peer() -> AsyncIterator[tuple[AcsRestPeer, str]]:
    rest = AcsRestPeer(KEY)
    # A socket listening before the server starts: connections wait in its backlog, so the
    # test needs no signal that the server is up.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(rest.app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield rest, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()
        await rest.aclose()  # the callbacks it still retries (the lifespan is off)


async def post(webhook: EventsWebhook, body: Any, *, raw: bytes | None = None) -> httpx.Response:
    app = Starlette(routes=[webhook.route()])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        return await http.post("/acs/events", content=raw if raw is not None else json.dumps(body).encode())


async def test_the_subscription_validation_handshake_echoes_the_code() -> None:
    event = {"id": "v1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
             "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://x"}}
    response = await post(EventsWebhook(CallControl(CallSessions(), public_url=PUBLIC)), [event])
    assert response.status_code == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}


async def test_an_incoming_call_is_answered_through_the_sdk_with_a_media_token(
        peer: tuple[AcsRestPeer, str], caplog: pytest.LogCaptureFixture) -> None:
    rest, url = peer
    sessions = CallSessions()
    async with CallAutomationClient(url, AzureKeyCredential(KEY)) as client:
        webhook = EventsWebhook(CallControl(sessions, public_url=PUBLIC + "/", client=client,
                                            audio_format=AudioFormat.PCM24_K_MONO))
        with caplog.at_level(logging.INFO, logger="transports.acs.control"):
            ringing = rest.switchboard.ring()  # the peer answers only calls it rang
            context = ringing.incoming_call_context
            response = await post(webhook, [incoming_call(context)])
    assert rest.refused == []  # the peer checked the SDK's HMAC signature and it was valid
    assert len(rest.answers) == 1
    answer = rest.answers[0]
    assert response.status_code == 200 and response.json() == {"answered": [answer.call_connection_id]}
    assert answer.body["incomingCallContext"] == context
    callback = urlsplit(answer.body["callbackUri"])
    assert (callback.scheme, callback.netloc, callback.path) == ("https", "bot.example", "/acs/callbacks")
    options = answer.body["mediaStreamingOptions"]
    assert {k: v for k, v in options.items() if k != "transportUrl"} == {
        "transportType": "websocket", "contentType": "audio", "audioChannelType": "mixed",
        "startMediaStreaming": True, "enableBidirectional": True, "audioFormat": "pcm24KMono"}
    transport = urlsplit(options["transportUrl"])
    assert (transport.scheme, transport.netloc, transport.path) == ("wss", "bot.example", "/acs/media")
    (token,) = parse_qs(transport.query)["token"]
    known = sessions.live(answer.call_connection_id)
    assert known is not None and known.state == "connecting" and known.direction == "inbound"
    assert known.server_call_id == ringing.server_call_id and known.correlation_id == "corr-1"
    assert parse_qs(callback.query) == {"token": [known.callback_token]}
    assert known.callback_token != token
    session = sessions.claim(token)
    assert session is known and session.call_connection_id == answer.call_connection_id
    assert sessions.claim(token) is None  # single use
    assert f"as call {answer.call_connection_id}" in caplog.text


async def test_a_wrong_key_is_refused_by_the_peer_and_reported_as_502(
        peer: tuple[AcsRestPeer, str], caplog: pytest.LogCaptureFixture) -> None:
    rest, url = peer
    sessions = CallSessions()
    async with CallAutomationClient(url, AzureKeyCredential(WRONG_KEY)) as client:
        with caplog.at_level(logging.WARNING, logger="transports.acs.control"):
            response = await post(EventsWebhook(CallControl(sessions, public_url=PUBLIC, client=client)),
                                  [incoming_call()])
    assert rest.refused == ["the signature does not match"] and rest.answers == []
    assert response.status_code == 502
    assert response.json() == {"error": "ACS refused to answer incoming call (correlation corr-1): HTTP 401 "
                                        "Unauthorized: Denied by the HMAC check: the signature does not match"}
    assert "HTTP 401" in caplog.text and all(record.exc_info is None for record in caplog.records)
    assert sessions.counts().expected == 0 and sessions.counts().live == 0  # the failed call is forgotten


@pytest.mark.parametrize(("raw", "status", "message"), [
    (b"not json", 400, "the body is not JSON"),
    (b'{"eventType": "x"}', 400, "must be a JSON array of Event Grid events, got a JSON dict"),
    (b"[1]", 400, "event 0 must be a JSON object, got int"),
    (b'[{"data": {}}]', 400, "event 0 has no eventType"),
    (b'[{"eventType": "Microsoft.Communication.IncomingCall", "data": {"correlationId": "c"}}]', 400,
     "event 0 (Microsoft.Communication.IncomingCall): data.incomingCallContext must be a non-empty string"),
    (b'[{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": []}]', 400,
     "data must be a JSON object, got list"),
    (b"[" + b" " * (1024 * 1024) + b"]", 413, "the body is over 1048576 bytes"),
])
async def test_bad_bodies_are_refused_with_a_clear_message(
        raw: bytes, status: int, message: str, caplog: pytest.LogCaptureFixture) -> None:
    sessions = CallSessions()
    with caplog.at_level(logging.WARNING, logger="transports.acs.events"):
        response = await post(EventsWebhook(CallControl(sessions, public_url=PUBLIC)), None, raw=raw)
    assert response.status_code == status
    assert message in response.json()["error"] and message in caplog.text
    assert all(record.exc_info is None for record in caplog.records)
    assert sessions.counts().expected == 0  # nothing of a bad batch is acted on


async def test_unknown_event_types_are_ignored() -> None:
    response = await post(EventsWebhook(CallControl(CallSessions(), public_url=PUBLIC)),
                          [{"eventType": "Microsoft.Communication.CallEnded", "data": {}}])
    assert response.status_code == 200 and response.json() == {"answered": []}


async def test_a_call_without_configuration_is_refused_with_503(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VOICEGRAPH_PUBLIC_URL", "ACS_CONNECTION_STRING", "ACS_ENDPOINT", "ACS_KEY"):
        monkeypatch.delenv(name, raising=False)
    response = await post(EventsWebhook(CallControl(CallSessions())), [incoming_call()])
    assert response.status_code == 503 and "VOICEGRAPH_PUBLIC_URL is not set" in response.json()["error"]
    response = await post(EventsWebhook(CallControl(CallSessions(), public_url=PUBLIC)), [incoming_call()])
    assert response.status_code == 503
    assert "neither ACS_CONNECTION_STRING nor ACS_ENDPOINT + ACS_KEY is set" in response.json()["error"]
    with pytest.raises(ValueError, match="must be an http\\(s\\) base URL"):
        CallControl(CallSessions(), public_url="bot.example/x?y=1")


def test_parse_events_keeps_the_order_and_the_fields() -> None:
    body = json.dumps([incoming_call("a"), {"eventType": "Other", "data": 1},
                       {"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                        "data": {"validationCode": "v"}}]).encode()
    assert parse_events(body) == [IncomingCall("a", "corr-1", "srv-1"), SubscriptionValidation("v")]


def test_the_peer_refuses_a_tampered_body_and_a_stale_date() -> None:
    body = b'{"a": 1}'
    content_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
    now = 1_800_000_000.0  # a whole second: the RFC 1123 date has no fraction
    headers = {"x-ms-date": formatdate(now, usegmt=True), "host": "h", "x-ms-content-sha256": content_hash,
               "authorization": "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=AAAA"}
    key = base64.b64decode(KEY)
    assert verify_hmac(key, "POST", "/p", headers, body, now) == "the signature does not match"
    assert verify_hmac(key, "POST", "/p", headers, b'{"a": 2}', now) == "x-ms-content-sha256 does not match the body"
    assert verify_hmac(key, "POST", "/p", headers, body, now + 901) == "x-ms-date is 901 s from now (at most 900 s)"
    assert verify_hmac(key, "POST", "/p", {}, body, now) == "no HMAC-SHA256 Authorization header"
    with pytest.raises(ValueError, match="must be base64"):
        AcsRestPeer("not base64!")


def test_the_app_serves_the_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEGRAPH_PUBLIC_URL", PUBLIC)
    app = create_app()
    assert app.state.acs_control.public_url == PUBLIC
    with TestClient(app) as client:
        response = client.post("/acs/events", json=[{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                                                     "data": {"validationCode": "code-7"}}])
    assert response.status_code == 200 and response.json() == {"validationResponse": "code-7"}
