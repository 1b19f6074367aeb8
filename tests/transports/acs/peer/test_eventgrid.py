"""The Event Grid sender and the standalone peer's control routes against our real
``/acs/events`` webhook: the handshake, and a rung call answered through the SDK."""

from __future__ import annotations

import httpx
import pytest
from azure.communication.callautomation.aio import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from transports.acs.control import CallControl
from transports.acs.events import EventsWebhook
from transports.acs.peer.app import create_peer, env_lines
from transports.acs.peer.calls import CallState
from transports.acs.peer.eventgrid import EventGridSender, SubscriptionRefused
from transports.acs.sessions import CallSessions

from .conftest import KEY, RESOURCE_ID, Receiver, serve

PUBLIC = "http://bot.invalid"


async def test_the_handshake_and_an_incoming_call_reach_our_webhook_and_the_sdk_answers() -> None:
    sender = EventGridSender()
    peer = create_peer(KEY, resource_id=RESOURCE_ID, sender=sender)
    async with serve(peer.app) as peer_url, CallAutomationClient(peer_url, AzureKeyCredential(KEY)) as client:
        sessions = CallSessions()
        webhook = EventsWebhook(CallControl(sessions, public_url=PUBLIC, client=client))
        async with serve(Starlette(routes=[webhook.route()])) as server_url, httpx.AsyncClient() as http:
            events_url = server_url + "/acs/events"
            subscribed = await http.post(peer_url + "/peer/subscribe", json={"events_url": events_url})
            assert subscribed.status_code == 200 and subscribed.json() == {"validated": True}
            rung = await http.post(peer_url + "/peer/ring", json={"events_url": events_url, "from": "+15550177",
                                                                  "to": "+15550100", "caller_display_name": "Ann"})
            assert rung.status_code == 200
            ring = rung.json()
            (call,) = peer.switchboard.calls.values()
            assert ring["status"] == 200 and ring["response"] == {"answered": [call.call_connection_id]}
            assert (call.source, call.target, call.server_call_id, call.correlation_id) == (
                "4:+15550177", "4:+15550100", ring["serverCallId"], ring["correlationId"])
            assert call.callback_uri.startswith(PUBLIC + "/acs/callbacks?token=")
            assert call.media is not None and call.media.transport_url.startswith("ws://bot.invalid/acs/media?token=")
            # what went over the wire, as Event Grid sends it
            validation, incoming = sender.sent
            assert validation.events[0]["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"
            assert validation.body == {"validationResponse": validation.events[0]["data"]["validationCode"]}
            event = incoming.events[0]
            assert event["subject"] == "/caller/4:+15550177/recipient/4:+15550100"
            assert (event["eventType"], event["dataVersion"], event["metadataVersion"]) == (
                "Microsoft.Communication.IncomingCall", "1.0", "1")
            assert event["data"] == {
                "to": {"kind": "phoneNumber", "rawId": "4:+15550100", "phoneNumber": {"value": "+15550100"}},
                "from": {"kind": "phoneNumber", "rawId": "4:+15550177", "phoneNumber": {"value": "+15550177"}},
                "callerDisplayName": "Ann", "incomingCallContext": ring["incomingCallContext"],
                "correlationId": ring["correlationId"], "serverCallId": ring["serverCallId"]}
            # the far end hangs up through the control route
            hung_up = await http.post(f"{peer_url}/peer/calls/{call.call_connection_id}:hangup")
            assert hung_up.status_code == 204 and call.state is CallState.DISCONNECTED
            listed = (await http.get(peer_url + "/peer/calls")).json()["calls"]
            assert [c["states"] for c in listed] == [["connecting", "connected", "disconnecting", "disconnected"]]
            again = await http.post(f"{peer_url}/peer/calls/{call.call_connection_id}:hangup")
            assert again.status_code == 404


async def test_a_wrong_echo_fails_the_handshake() -> None:
    async def wrong(request: Request) -> Response:
        return JSONResponse({"validationResponse": "not-the-code"})

    async def refuses(request: Request) -> Response:
        return JSONResponse({"error": "no"}, status_code=403)

    app = Starlette(routes=[Route("/wrong", wrong, methods=["POST"]), Route("/refuses", refuses, methods=["POST"])])
    sender = EventGridSender()
    async with serve(app) as url:
        with pytest.raises(SubscriptionRefused) as wrong_echo:
            await sender.validate(url + "/wrong")
        with pytest.raises(SubscriptionRefused, match="answered the validation event with HTTP 403"):
            await sender.validate(url + "/refuses")
    code = sender.sent[0].events[0]["data"]["validationCode"]
    assert str(wrong_echo.value) == (f'{url}/wrong did not echo the validation code: expected '
                                     f'{{"validationResponse": "{code}"}}, got {{"validationResponse": "not-the-code"}}')


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/peer/ring", b"nope", 400, "the body is not JSON"),
    ("/peer/ring", b"[]", 400, "the body must be a JSON object"),
    ("/peer/ring", b'{"events_url": "ftp://x"}', 400, "events_url must be an http(s) URL"),
    ("/peer/ring", b'{"events_url": "http://x", "from": "555"}', 400, "from must be a +E.164 phone number"),
    ("/peer/subscribe", b"{}", 400, "events_url must be an http(s) URL, got None"),
    ("/peer/calls/nope:hangup", b"", 404, "call nope was not found"),
    ("/peer/calls/nope:dance", b"", 404, "no such action 'dance'"),
])
async def test_bad_control_requests_get_clear_errors(path: str, body: bytes, status: int, message: str) -> None:
    peer = create_peer(KEY)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=peer.app), base_url="http://peer") as http:
        response = await http.post(path, content=body)
    assert response.status_code == status and message in response.json()["error"]
    assert peer.switchboard.calls == {} and peer.switchboard.ringing == {}


async def test_an_unreachable_server_is_a_502() -> None:
    peer = create_peer(KEY)
    async with serve(peer.app) as peer_url, httpx.AsyncClient() as http:
        response = await http.post(peer_url + "/peer/ring", json={"events_url": "http://127.0.0.1:9/acs/events"})
    assert response.status_code == 502
    assert response.json()["error"].startswith("could not reach http://127.0.0.1:9/acs/events: ClientConnectorError")


async def test_the_env_lines_point_a_server_at_the_peer_and_its_keys_verify() -> None:
    peer = create_peer(KEY, resource_id=RESOURCE_ID)
    async with serve(peer.app) as peer_url:
        lines = env_lines(peer_url + "/", peer, KEY)
        assert lines == [f"export ACS_ENDPOINT={peer_url}", f"export ACS_KEY={KEY}",
                         f"export VOICEGRAPH_ACS_AUDIENCE={RESOURCE_ID}",
                         f"export VOICEGRAPH_ACS_OPENID_URL={peer_url}/calling/.well-known/acsopenidconfiguration"]
        receiver = Receiver(peer_url, RESOURCE_ID)  # the OpenID URL printed finds the key that signs
        keys = await receiver._keys()
        assert keys[peer.signer.kid] is not None
