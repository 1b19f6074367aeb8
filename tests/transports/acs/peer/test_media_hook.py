"""The media hook: called with what ACS opens the media socket with, and the call's life
tied to it (the caller hanging up, the bot hanging up, a hook that never connects)."""

from __future__ import annotations

import asyncio

import jwt
import pytest
from azure.communication.callautomation import (
    AudioFormat,
    MediaStreamingAudioChannelType,
    MediaStreamingContentType,
    MediaStreamingOptions,
    PhoneNumberIdentifier,
    StreamingTransportType,
)

from transports.acs.peer.calls import CallState
from transports.acs.peer.connect import MediaConnect
from transports.acs.peer.signer import ACS_ISSUER

from .conftest import RESOURCE_ID, WAIT_S, Env, PeerFactory

TRANSPORT = "wss://bot.example/acs/media?token=abc123"


def streaming(audio_format: AudioFormat = AudioFormat.PCM24_K_MONO, start: bool = True) -> MediaStreamingOptions:
    return MediaStreamingOptions(
        transport_url=TRANSPORT, transport_type=StreamingTransportType.WEBSOCKET,
        content_type=MediaStreamingContentType.AUDIO, audio_channel_type=MediaStreamingAudioChannelType.MIXED,
        start_media_streaming=start, enable_bidirectional=True, audio_format=audio_format)


class Caller:
    """A media hook that records its connect, reports the socket open, and stays on the line
    until told to hang up (``leave``) or the peer hangs up (``connect.hung_up``)."""

    def __init__(self, *, connects: bool = True, honours_hang_up: bool = True, fails: bool = False) -> None:
        self.connects, self.honours_hang_up, self.fails = connects, honours_hang_up, fails
        self.seen: list[MediaConnect] = []
        self.called = asyncio.Event()
        self.leave = asyncio.Event()
        self.outcome = ""

    async def __call__(self, connect: MediaConnect) -> None:
        self.seen.append(connect)
        self.called.set()
        if self.fails:
            raise ConnectionRefusedError("the bot refused the socket")
        if self.connects:
            connect.connected()
        waits = [asyncio.ensure_future(self.leave.wait())]
        if self.honours_hang_up:
            waits.append(asyncio.ensure_future(connect.hung_up.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            self.outcome = "hung up by the peer" if connect.hung_up.is_set() else "left"
        except asyncio.CancelledError:
            self.outcome = "cancelled"
            raise
        finally:
            for task in waits:
                task.cancel()


async def call_with_media(env: Env, caller: Caller, **options: object) -> str:
    ringing = env.peer.switchboard.ring(caller="+15550177")
    props = await env.client.answer_call(ringing.incoming_call_context, env.callback,
                                         media_streaming=streaming(**options))  # type: ignore[arg-type]
    async with asyncio.timeout(WAIT_S):
        await caller.called.wait()
    return str(props.call_connection_id)


async def test_the_hook_gets_the_transport_url_format_and_signed_headers(make_env: PeerFactory) -> None:
    caller = Caller()
    env = await make_env(media=caller)
    call_id = await call_with_media(env, caller)
    (connect,) = caller.seen
    call = env.peer.switchboard.calls[call_id]
    assert (connect.transport_url, connect.call_connection_id, connect.correlation_id, connect.server_call_id) == (
        TRANSPORT, call_id, call.correlation_id, call.server_call_id)
    assert (connect.audio_format, connect.sample_rate, connect.audio_channel_type, connect.bidirectional) == (
        "pcm24KMono", 24000, "mixed", True)
    assert connect.headers == {"Authorization": f"Bearer {connect.token}", "x-ms-call-connection-id": call_id,
                               "x-ms-call-correlation-id": call.correlation_id}
    key = env.peer.signer.jwks()["keys"][0]
    claims = jwt.decode(connect.token, jwt.PyJWK(key).key, algorithms=["RS256"], audience=RESOURCE_ID,
                        issuer=ACS_ISSUER)
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert await env.receiver.wait_delivered(3, call_id) == [
        "CallConnected", "ParticipantsUpdated", "MediaStreamingStarted"]
    started = env.receiver.received[2].events[0]["data"]["mediaStreamingUpdate"]
    assert started == {"contentType": "Audio", "mediaStreamingStatus": "mediaStreamingStarted",
                       "mediaStreamingStatusDetails": "subscriptionStarted"}


async def test_the_caller_hanging_up_ends_the_call(make_env: PeerFactory) -> None:
    caller = Caller()
    env = await make_env(media=caller)
    call_id = await call_with_media(env, caller, audio_format=AudioFormat.PCM16_K_MONO)
    assert caller.seen[0].sample_rate == 16000
    caller.leave.set()
    await env.peer.switchboard.disconnected(call_id)
    assert await env.receiver.wait_delivered(6, call_id) == [
        "CallConnected", "ParticipantsUpdated", "MediaStreamingStarted", "ParticipantsUpdated",
        "MediaStreamingStopped", "CallDisconnected"]
    update = env.receiver.received[3].events[0]["data"]
    assert update["sequenceNumber"] == 2
    assert [p["identifier"]["rawId"] for p in update["participants"]] == [env.peer.switchboard.bot_id]
    assert caller.outcome == "left"


async def test_the_bot_hanging_up_closes_the_media_hook(make_env: PeerFactory) -> None:
    caller = Caller()
    env = await make_env(media=caller)
    call_id = await call_with_media(env, caller)
    await env.receiver.wait_delivered(3, call_id)
    await env.client.get_call_connection(call_id).hang_up(is_for_everyone=True)
    await env.peer.switchboard.disconnected(call_id)
    assert caller.outcome == "hung up by the peer"
    assert await env.receiver.wait_delivered(5, call_id) == [
        "CallConnected", "ParticipantsUpdated", "MediaStreamingStarted", "MediaStreamingStopped", "CallDisconnected"]


async def test_a_hook_that_ignores_the_hang_up_is_cancelled_after_the_grace(make_env: PeerFactory,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    caller = Caller(honours_hang_up=False)
    env = await make_env(media=caller, grace_s=0.05)
    call_id = await call_with_media(env, caller)
    await env.client.get_call_connection(call_id).hang_up(is_for_everyone=False)
    await env.peer.switchboard.disconnected(call_id)
    assert caller.outcome == "cancelled"
    assert f"call {call_id}: the media hook did not close within 0.05 s; cancelling it" in caplog.text
    assert (await env.receiver.wait_delivered(5, call_id))[-1] == "CallDisconnected"


async def test_a_hook_that_fails_before_connecting_posts_media_streaming_failed(
        make_env: PeerFactory, caplog: pytest.LogCaptureFixture) -> None:
    caller = Caller(fails=True)
    env = await make_env(media=caller)
    call_id = await call_with_media(env, caller)
    await env.peer.switchboard.disconnected(call_id)
    assert await env.receiver.wait_delivered(5, call_id) == [
        "CallConnected", "ParticipantsUpdated", "MediaStreamingFailed", "ParticipantsUpdated", "CallDisconnected"]
    failed = env.receiver.received[2].events[0]["data"]
    assert failed["mediaStreamingUpdate"]["mediaStreamingStatusDetails"] == "streamConnectionUnsuccessful"
    assert "the media hook failed: ConnectionRefusedError: the bot refused the socket" in caplog.text
    assert all(record.exc_info is None for record in caplog.records)


async def test_no_hook_without_start_media_streaming_and_hang_up_from_caller(make_env: PeerFactory) -> None:
    caller = Caller()
    env = await make_env(media=caller)
    ringing = env.peer.switchboard.ring()
    props = await env.client.answer_call(ringing.incoming_call_context, env.callback,
                                         media_streaming=streaming(start=False))
    call_id = str(props.call_connection_id)
    await env.receiver.wait_delivered(2, call_id)
    await env.peer.hang_up_from_caller(call_id)
    assert env.peer.switchboard.calls[call_id].state is CallState.DISCONNECTED
    assert await env.receiver.wait_delivered(4, call_id) == [
        "CallConnected", "ParticipantsUpdated", "ParticipantsUpdated", "CallDisconnected"]
    assert caller.seen == []


async def test_a_created_call_with_media_runs_the_hook(make_env: PeerFactory) -> None:
    caller = Caller()
    env = await make_env(media=caller)
    props = await env.client.create_call(PhoneNumberIdentifier("+15550142"), env.callback,
                                         source_caller_id_number=PhoneNumberIdentifier("+15550100"),
                                         media_streaming=streaming())
    async with asyncio.timeout(WAIT_S):
        await caller.called.wait()
    assert caller.seen[0].call_connection_id == props.call_connection_id
    assert caller.seen[0].transport_url == TRANSPORT
