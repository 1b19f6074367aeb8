"""The local ACS's REST endpoint against the official async SDK: each request kind, the
service's statuses and bodies (the SDK parses them), the callbacks each one causes,
bad signatures and unknown calls."""

from __future__ import annotations

import base64

import httpx
import pytest
from azure.communication.callautomation import (
    CommunicationUserIdentifier,
    PhoneNumberIdentifier,
)
from azure.communication.callautomation.aio import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from transports.acs.peer.calls import CallState

from .conftest import RESOURCE_ID, Env, PeerFactory

CALLEE = "+15550142"
OUR_NUMBER = "+15550100"


async def answered(env: Env) -> str:
    """Ring the peer, answer through the SDK, wait for the connect callbacks; the call id."""
    ringing = env.peer.switchboard.ring(caller="+15550177", callee=OUR_NUMBER)
    props = await env.client.answer_call(ringing.incoming_call_context, env.callback, operation_context="greet")
    assert props.call_connection_state == "connecting"
    await env.receiver.wait_delivered(2, props.call_connection_id)
    return str(props.call_connection_id)


async def test_answer_returns_the_call_and_posts_signed_connect_callbacks(make_env: PeerFactory) -> None:
    env = await make_env()
    ringing = env.peer.switchboard.ring(caller="+15550177", callee=OUR_NUMBER, caller_display_name="Ann")
    props = await env.client.answer_call(ringing.incoming_call_context, env.callback, operation_context="greet")
    assert props.call_connection_state == "connecting"
    assert props.server_call_id == ringing.server_call_id and props.correlation_id == ringing.correlation_id
    assert props.source is not None and props.source.raw_id == "4:+15550177"
    assert [t.raw_id for t in props.targets] == ["4:+15550100"]
    assert props.callback_url == env.callback
    call_id = props.call_connection_id
    assert await env.receiver.wait_delivered(2) == ["CallConnected", "ParticipantsUpdated"]
    connected, participants = env.receiver.received
    assert connected.path == "/callbacks" and env.receiver.refused == []
    event = connected.events[0]
    assert {k: event[k] for k in ("source", "subject", "specversion", "datacontenttype")} == {
        "source": f"calling/callConnections/{call_id}", "subject": f"calling/callConnections/{call_id}",
        "specversion": "1.0", "datacontenttype": "application/json"}
    assert event["data"] == {"callConnectionId": call_id, "serverCallId": ringing.server_call_id,
                             "correlationId": ringing.correlation_id, "operationContext": "greet"}
    update = participants.events[0]["data"]
    assert update["sequenceNumber"] == 1
    assert [p["identifier"]["rawId"] for p in update["participants"]] == ["4:+15550177", env.peer.switchboard.bot_id]
    # each request has its own token, for the resource id
    assert connected.claims["aud"] == participants.claims["aud"] == RESOURCE_ID
    assert connected.claims["jti"] != participants.claims["jti"]
    assert connected.claims["exp"] - connected.claims["iat"] == 300
    props = await env.client.get_call_connection(call_id).get_call_properties()
    assert props.call_connection_state == "connected"


async def test_an_unknown_or_already_answered_context_is_refused(make_env: PeerFactory) -> None:
    env = await make_env()
    with pytest.raises(HttpResponseError) as unknown:
        await env.client.answer_call("eyJhbGciOiJub25lIn0.eyJjYyI6Im5vIn0.", env.callback)
    assert unknown.value.status_code == 400
    assert unknown.value.error is not None and "not the context of a call this resource rang" in \
        unknown.value.error.message
    ringing = env.peer.switchboard.ring()
    await env.client.answer_call(ringing.incoming_call_context, env.callback)
    with pytest.raises(HttpResponseError) as twice:
        await env.client.answer_call(ringing.incoming_call_context, env.callback)
    assert twice.value.status_code == 400
    assert twice.value.error is not None and twice.value.error.message == "the incoming call was already answered"
    assert len(env.peer.switchboard.calls) == 1


async def test_create_call_to_a_phone_number_is_201_and_connects(make_env: PeerFactory) -> None:
    env = await make_env()
    props = await env.client.create_call(PhoneNumberIdentifier(CALLEE), env.callback,
                                         source_caller_id_number=PhoneNumberIdentifier(OUR_NUMBER),
                                         operation_context="outbound-1")
    assert props.call_connection_state == "connecting"
    assert [t.raw_id for t in props.targets] == ["4:+15550142"]
    assert props.source_caller_id_number is not None and props.source_caller_id_number.raw_id == "4:+15550100"
    call_id = str(props.call_connection_id)
    assert await env.receiver.wait_delivered(2, call_id) == ["CallConnected", "ParticipantsUpdated"]
    assert env.receiver.received[0].events[0]["data"]["operationContext"] == "outbound-1"
    assert env.peer.switchboard.calls[call_id].states == [CallState.CONNECTING, CallState.CONNECTED]
    participants = [p.identifier.raw_id async for p in env.client.get_call_connection(call_id).list_participants()]
    assert participants == ["4:+15550142", env.peer.switchboard.bot_id]


async def test_create_call_to_a_phone_number_needs_a_caller_id(make_env: PeerFactory) -> None:
    env = await make_env()
    with pytest.raises(HttpResponseError) as exc:
        await env.client.create_call(PhoneNumberIdentifier(CALLEE), env.callback)
    assert exc.value.status_code == 400 and exc.value.error is not None
    assert exc.value.error.message == "sourceCallerIdNumber is required to call a phone number"
    # an ACS user needs none
    props = await env.client.create_call(CommunicationUserIdentifier("8:acs:someone"), env.callback)
    assert [t.raw_id for t in props.targets] == ["8:acs:someone"]


@pytest.mark.parametrize("for_everyone", [True, False], ids=["terminate", "leave"])
async def test_hang_up_posts_call_disconnected_and_forgets_the_call(make_env: PeerFactory, for_everyone: bool) -> None:
    env = await make_env()
    call_id = await answered(env)
    connection = env.client.get_call_connection(call_id)
    await connection.hang_up(is_for_everyone=for_everyone)
    assert await env.receiver.wait_delivered(3, call_id) == ["CallConnected", "ParticipantsUpdated", "CallDisconnected"]
    await env.peer.switchboard.disconnected(call_id)
    assert env.peer.switchboard.calls[call_id].states == [
        CallState.CONNECTING, CallState.CONNECTED, CallState.DISCONNECTING, CallState.DISCONNECTED]
    with pytest.raises(ResourceNotFoundError) as gone:
        await connection.get_call_properties()
    assert gone.value.error is not None and gone.value.error.code == "NotFound"
    assert gone.value.error.message == f"call {call_id} was not found"
    with pytest.raises(ResourceNotFoundError):
        await connection.hang_up(is_for_everyone=True)


async def test_transfer_posts_accepted_then_disconnected(make_env: PeerFactory) -> None:
    env = await make_env()
    call_id = await answered(env)
    result = await env.client.get_call_connection(call_id).transfer_call_to_participant(
        PhoneNumberIdentifier("+15550123"), operation_context="to-a-human",
        operation_callback_url=env.receiver.url + "/transfer")
    assert result.operation_context == "to-a-human"
    await env.receiver.wait_delivered(4, call_id)
    accepted, disconnected = env.receiver.received[2:]
    assert (accepted.path, accepted.types, disconnected.path, disconnected.types) == (
        "/transfer", ["CallTransferAccepted"], "/callbacks", ["CallDisconnected"])
    data = accepted.events[0]["data"]
    assert data["operationContext"] == "to-a-human"
    assert data["transferTarget"]["rawId"] == "4:+15550123" and data["transferee"]["rawId"] == "4:+15550177"
    await env.peer.switchboard.disconnected(call_id)
    assert env.peer.switchboard.calls[call_id].states == [
        CallState.CONNECTING, CallState.CONNECTED, CallState.TRANSFERRING, CallState.TRANSFER_ACCEPTED,
        CallState.DISCONNECTING, CallState.DISCONNECTED]


async def test_recording_start_pause_resume_stop(make_env: PeerFactory) -> None:
    env = await make_env()
    call_id = await answered(env)
    recording = await env.client.start_recording(call_connection_id=call_id)
    assert recording.recording_state == "active" and recording.recording_id
    assert (await env.client.get_recording_properties(recording.recording_id)).recording_state == "active"
    await env.client.pause_recording(recording.recording_id)
    await env.client.resume_recording(recording.recording_id)
    await env.client.stop_recording(recording.recording_id)
    await env.receiver.wait_delivered(6, call_id)
    changes = [r.events[0]["data"] for r in env.receiver.received[2:]]
    assert [(c["recordingId"], c["state"]) for c in changes] == [
        (recording.recording_id, "active"), (recording.recording_id, "inactive"),
        (recording.recording_id, "active"), (recording.recording_id, "inactive")]
    with pytest.raises(ResourceNotFoundError):
        await env.client.stop_recording(recording.recording_id)


async def test_a_recording_of_a_call_that_ends_goes_inactive_before_the_disconnect(make_env: PeerFactory) -> None:
    env = await make_env()
    call_id = await answered(env)
    server_call_id = env.peer.switchboard.calls[call_id].server_call_id
    recording = await env.client.start_recording(server_call_id=server_call_id,
                                                 recording_state_callback_url=env.receiver.url + "/recording")
    await env.client.get_call_connection(call_id).hang_up(is_for_everyone=True)
    await env.receiver.wait_delivered(5, call_id)
    assert [(r.path, r.types[0], r.events[0]["data"].get("state")) for r in env.receiver.received[2:]] == [
        ("/recording", "RecordingStateChanged", "active"), ("/recording", "RecordingStateChanged", "inactive"),
        ("/callbacks", "CallDisconnected", None)]
    with pytest.raises(ResourceNotFoundError):
        await env.client.get_recording_properties(recording.recording_id)


async def test_a_wrong_key_is_refused_with_401_and_the_service_error_body(make_env: PeerFactory) -> None:
    env = await make_env()
    wrong = base64.b64encode(bytes(range(1, 33))).decode()
    async with CallAutomationClient(env.peer_url, AzureKeyCredential(wrong)) as client:
        with pytest.raises(ClientAuthenticationError) as exc:
            await client.get_call_connection("any").get_call_properties()
        with pytest.raises(ClientAuthenticationError):
            await client.create_call(CommunicationUserIdentifier("8:acs:x"), env.callback)
    assert exc.value.status_code == 401 and exc.value.error is not None and exc.value.error.code == "Denied"
    assert env.peer.refused == ["the signature does not match"] * 2
    assert env.peer.switchboard.calls == {}
    async with httpx.AsyncClient() as http:  # no signature at all
        response = await http.post(env.peer_url + "/calling/callConnections?api-version=2026-03-12", json={})
    assert response.status_code == 401
    assert response.json() == {"error": {"code": "Denied",
                                         "message": "Denied by the HMAC check: no HMAC-SHA256 Authorization header"}}


async def test_unknown_calls_are_404_with_the_service_error_body(make_env: PeerFactory) -> None:
    env = await make_env()
    connection = env.client.get_call_connection("no-such-call")
    for action in (connection.get_call_properties(), connection.hang_up(is_for_everyone=True),
                   connection.hang_up(is_for_everyone=False),
                   connection.transfer_call_to_participant(PhoneNumberIdentifier("+15550123")),
                   env.client.start_recording(call_connection_id="no-such-call"),
                   env.client.stop_recording("no-such-recording")):
        with pytest.raises(ResourceNotFoundError) as exc:
            await action
        assert exc.value.error is not None and exc.value.error.code == "NotFound"
    assert env.receiver.received == []


async def test_a_repeated_request_is_answered_once(make_env: PeerFactory) -> None:
    env = await make_env()
    headers = {"Repeatability-Request-ID": "2c6ad5a4-3c53-4b5e-8f35-8c6f1d4f5a77"}
    first = await env.client.create_call(CommunicationUserIdentifier("8:acs:x"), env.callback, headers=headers)
    again = await env.client.create_call(CommunicationUserIdentifier("8:acs:x"), env.callback, headers=headers)
    assert again.call_connection_id == first.call_connection_id
    assert list(env.peer.switchboard.calls) == [first.call_connection_id]
