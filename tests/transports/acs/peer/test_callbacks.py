"""The peer's webhook sender: retries with a fresh token per attempt, order per call,
final refusals, giving up; every token checked against the JWKS the peer serves."""

from __future__ import annotations

import socket

import pytest

from transports.acs.peer.callbacks import CallbackPoster
from transports.acs.peer.signer import TokenSigner

from .conftest import PeerFactory

OUR_NUMBER = "+15550100"


async def test_a_5xx_is_retried_with_a_new_token_and_the_call_keeps_its_order(make_env: PeerFactory) -> None:
    env = await make_env(statuses=[500, 503])  # CallConnected fails twice
    ringing = env.peer.switchboard.ring()
    props = await env.client.answer_call(ringing.incoming_call_context, env.callback)
    call_id = str(props.call_connection_id)
    await env.receiver.wait_delivered(2, call_id)
    await env.peer.drain()
    assert [(r.types[0], r.status) for r in env.receiver.received] == [
        ("CallConnected", 500), ("CallConnected", 503), ("CallConnected", 200), ("ParticipantsUpdated", 200)]
    tokens = {r.claims["jti"] for r in env.receiver.received}
    assert len(tokens) == 4  # a new token for each request, retries included
    # the retried requests carried the same event
    assert len({r.events[0]["id"] for r in env.receiver.received[:3]}) == 1
    connected, updated = env.peer.deliveries
    assert (connected.type, connected.attempts, connected.delivered) == ("CallConnected", [500, 503, 200], True)
    assert (updated.type, updated.attempts) == ("ParticipantsUpdated", [200])
    assert connected.authorization.removeprefix("Bearer ") != updated.authorization.removeprefix("Bearer ")


async def test_a_4xx_is_final_and_the_next_event_still_goes(make_env: PeerFactory) -> None:
    env = await make_env(statuses=[403])
    ringing = env.peer.switchboard.ring()
    await env.client.answer_call(ringing.incoming_call_context, env.callback)
    await env.receiver.wait_for(lambda r: len(r.received) == 2)
    await env.peer.drain()
    assert [(d.type, d.attempts, d.delivered) for d in env.peer.deliveries] == [
        ("CallConnected", [403], False), ("ParticipantsUpdated", [200], True)]


async def test_429_and_408_are_retried(make_env: PeerFactory) -> None:
    env = await make_env(statuses=[429, 408])
    ringing = env.peer.switchboard.ring()
    await env.client.answer_call(ringing.incoming_call_context, env.callback)
    await env.receiver.wait_delivered(2)
    await env.peer.drain()
    assert env.peer.deliveries[0].attempts == [429, 408, 200]


async def test_a_receiver_that_stays_down_is_given_up_after_the_retries(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/callbacks"
    poster = CallbackPoster(TokenSigner(), "aud", retry_delays=(0.0, 0.0))
    try:
        first = poster.post("call-1", dead, {"type": "Microsoft.Communication.CallConnected"})
        second = poster.post("call-1", dead, {"type": "Microsoft.Communication.CallDisconnected"})
        await poster.drain()
    finally:
        await poster.aclose()
    assert first.attempts == second.attempts == ["ClientConnectorError"] * 3
    assert not first.delivered and not second.delivered
    assert "callback CallConnected of call call-1 given up after 3 attempts (last: ClientConnectorError)" in caplog.text
    assert all(record.exc_info is None for record in caplog.records)


async def test_several_calls_each_get_their_own_events_in_order(make_env: PeerFactory) -> None:
    env = await make_env()
    ids = []
    for _ in range(3):
        ringing = env.peer.switchboard.ring()
        ids.append(str((await env.client.answer_call(ringing.incoming_call_context, env.callback))
                       .call_connection_id))
    for call_id in ids:
        assert await env.receiver.wait_delivered(2, call_id) == ["CallConnected", "ParticipantsUpdated"]
    assert env.receiver.refused == []
