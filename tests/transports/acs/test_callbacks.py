"""/acs/callbacks: each CloudEvent type applied to its call's session, duplicates and
out-of-order events, unknown and ended calls, callback tokens, the JWT check, bad bodies.

The JWT check is the injected RequestVerifier; here a small fake that accepts one header
value (the verifier itself is tested with its own module), so these tests hold with any
verifier that honours the Protocol."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from pipeline.graph import Graph
from pipeline.runner import CallRunner
from pipeline.testing import Collector, Feeder
from transports.acs.auth import AuthError
from transports.acs.callbacks import CallbacksEndpoint, CallEvent, parse_callbacks
from transports.acs.sessions import CallSession, CallSessions, CallState, provisional_id

GOOD = "Bearer signed-by-acs"


class FakeVerifier:
    """Accepts ``GOOD``; anything else is refused as a verifier would (401, a reason)."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    async def verify(self, authorization: str | None) -> Mapping[str, Any]:
        self.seen.append(authorization)
        if authorization is None:
            raise AuthError(401, "no Authorization header")
        if authorization != GOOD:
            raise AuthError(401, "the signature does not verify")
        return {"iss": "https://acscallautomation.communication.azure.com"}


def event(kind: str, call_id: str, *, event_id: str | None = None, time: str | None = "2026-11-26T10:00:00Z",
          **data: Any) -> dict[str, Any]:
    source = f"calling/callConnections/{call_id}"
    out: dict[str, Any] = {
        "id": event_id or str(uuid.uuid4()), "source": source, "type": f"Microsoft.Communication.{kind}",
        "specversion": "1.0", "datacontenttype": "application/json", "subject": source,
        "data": {"callConnectionId": call_id, "serverCallId": "server-1", "correlationId": "corr-1", **data}}
    if time is not None:
        out["time"] = time
    return out


def participants(sequence: int, *raw_ids: str) -> dict[str, Any]:
    return {"sequenceNumber": sequence, "participants": [
        {"identifier": {"rawId": r, "kind": "phoneNumber", "phoneNumber": {"value": r[2:]}}, "isMuted": False}
        for r in raw_ids]}


class Harness:
    """One CallbacksEndpoint on a registry, with one expected call, posted to in-process."""

    def __init__(self, *, verifier: FakeVerifier | None = None) -> None:
        self.sessions = CallSessions()
        self.verifier = verifier if verifier is not None else FakeVerifier()
        self.hung_up: list[tuple[str, str]] = []
        self.hung = asyncio.Event()
        self.endpoint = CallbacksEndpoint(self.sessions, self.verifier, on_media_failed=self._hang_up)
        self.app = Starlette(routes=[self.endpoint.route()])
        self.media_token = self.sessions.expect("call-1")
        session = self.sessions.live("call-1")
        assert session is not None
        self.session = session

    async def _hang_up(self, call_id: str, why: str) -> None:
        self.hung_up.append((call_id, why))
        self.hung.set()

    async def post(self, events: Any, *, token: str | None = None, raw: bytes | None = None,
                   authorization: str | None = GOOD) -> httpx.Response:
        token = self.session.callback_token if token is None else token
        headers = {"Authorization": authorization} if authorization is not None else {}
        body = raw if raw is not None else json.dumps(events).encode()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test") as http:
            return await http.post(f"/acs/callbacks?token={token}", content=body, headers=headers)


async def test_call_connected_marks_the_call_connected() -> None:
    h = Harness()
    response = await h.post([event("CallConnected", "call-1")])
    assert response.status_code == 200
    assert response.json() == {"applied": 1, "duplicates": 0, "late": 0, "unknown": 0}
    assert h.session.state is CallState.CONNECTED
    assert (h.session.server_call_id, h.session.correlation_id) == ("server-1", "corr-1")
    assert h.verifier.seen == [GOOD]


class Forever(Feeder):
    """A source that never ends: the call runs until something ends it."""

    async def run(self) -> None:
        await asyncio.Event().wait()


async def running_call(session: CallSession) -> asyncio.Task[None]:
    """Run a graph for ``session`` as the media route does, until it ends."""
    graph = Graph("held")
    graph.chain(Forever([]), Collector())
    runner = CallRunner(graph)

    async def serve() -> None:
        session.result = await runner.run()

    task = asyncio.create_task(serve())
    session.graph, session.runner, session.task = graph, runner, task
    for _ in range(1000):  # the runner is wired and started within a few loop turns
        if graph.ctx is not None:
            break
        await asyncio.sleep(0)
    assert graph.ctx is not None
    return task


async def test_call_disconnected_ends_the_graph_and_frees_the_session_and_its_task() -> None:
    h = Harness()
    assert h.sessions.claim(h.media_token) is h.session
    task = await running_call(h.session)
    await h.post([event("CallConnected", "call-1")])
    response = await h.post([event("CallDisconnected", "call-1")])
    assert response.status_code == 200 and response.json()["applied"] == 1
    await asyncio.wait_for(task, 30)
    assert task.done() and task.exception() is None
    assert h.session.result is not None and h.session.result.reason == "cancelled"
    assert h.sessions.live("call-1") is None and h.sessions.counts().live == 0
    assert h.session.state is CallState.DISCONNECTED and h.session.ended_reason == "disconnected"
    assert h.session.error == ""


async def test_a_call_connected_after_the_disconnect_does_not_revive_the_call() -> None:
    h = Harness()
    await h.post([event("CallDisconnected", "call-1")])
    response = await h.post([event("CallConnected", "call-1")])
    assert response.status_code == 200 and response.json() == {"applied": 0, "duplicates": 0, "late": 1, "unknown": 0}
    assert h.sessions.live("call-1") is None and h.session.state is CallState.DISCONNECTED
    # ... nor in the same batch
    h2 = Harness()
    response = await h2.post([event("CallDisconnected", "call-1"), event("CallConnected", "call-1")])
    assert response.json() == {"applied": 1, "duplicates": 0, "late": 1, "unknown": 0}
    assert h2.session.state is CallState.DISCONNECTED


async def test_media_streaming_failed_ends_the_call_with_a_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    assert h.sessions.claim(h.media_token) is h.session
    task = await running_call(h.session)
    info = {"code": 500, "subCode": 8581, "message": "Media streaming failed: the WebSocket could not connect."}
    with caplog.at_level(logging.ERROR, logger="transports.acs.callbacks"):
        await h.post([event("MediaStreamingFailed", "call-1", resultInformation=info,
                            mediaStreamingUpdate={"contentType": "Audio", "mediaStreamingStatus": "mediaStreamingFailed",
                                                  "mediaStreamingStatusDetails": "streamConnectionUnsuccessful"})])
    await asyncio.wait_for(task, 30)
    expected = ("media streaming failed: Media streaming failed: the WebSocket could not connect. "
                "(code 500, subcode 8581)")
    assert h.session.error == expected and h.session.ended_reason == "media streaming failed"
    assert h.sessions.live("call-1") is None and h.session.result is not None
    ours = [r for r in caplog.records if r.name == "transports.acs.callbacks"]
    assert [r.getMessage() for r in ours] == [f"call call-1: {expected}"] and ours[0].exc_info is None
    # ... and the ACS call is hung up too: the caller is not left on a line nobody answers.
    await asyncio.wait_for(h.hung.wait(), 30)
    assert h.hung_up == [("call-1", expected)]


async def test_a_transfer_accepted_means_the_bot_left_the_call() -> None:
    h = Harness()
    await h.post([event("CallTransferAccepted", "call-1", transferTarget={"rawId": "4:+15550123"},
                        transferee={"rawId": "4:+15550100"})])
    assert h.sessions.live("call-1") is None
    assert h.session.ended_reason == "transferred to another participant" and h.session.error == ""
    assert h.hung_up == []  # only a media failure hangs the ACS call up


@pytest.mark.parametrize("kind", ["CreateCallFailed", "AnswerFailed"])
async def test_a_call_that_could_not_be_made_or_answered_ends_with_an_error(kind: str) -> None:
    h = Harness()
    await h.post([event(kind, "call-1", resultInformation={"code": 408, "subCode": 8519, "message": "Timed out."})])
    assert h.sessions.live("call-1") is None and h.session.error.endswith(": Timed out. (code 408, subcode 8519)")


async def test_participants_keep_the_latest_by_sequence_number() -> None:
    h = Harness()
    await h.post([event("ParticipantsUpdated", "call-1", **participants(2, "4:+15550100", "8:acs:bot"))])
    assert h.session.participants == ("4:+15550100", "8:acs:bot") and h.session.participants_sequence == 2
    await h.post([event("ParticipantsUpdated", "call-1", **participants(1, "4:+15550100"))])  # older: ignored
    assert h.session.participants == ("4:+15550100", "8:acs:bot") and h.session.participants_sequence == 2
    await h.post([event("ParticipantsUpdated", "call-1", **participants(3, "8:acs:bot"))])
    assert h.session.participants == ("8:acs:bot",) and h.session.participants_sequence == 3


async def test_recording_state_keeps_the_latest_by_time() -> None:
    h = Harness()
    await h.post([event("RecordingStateChanged", "call-1", time="2026-11-26T10:00:05.1234567Z",
                        recordingId="rec-1", state="inactive")])
    await h.post([event("RecordingStateChanged", "call-1", time="2026-11-26T10:00:01Z",
                        recordingId="rec-1", state="active")])  # older: ignored
    assert (h.session.recording_id, h.session.recording_state) == ("rec-1", "inactive")
    await h.post([event("RecordingStateChanged", "call-1", time="2026-11-26T10:01:00+00:00",
                        recordingId="rec-2", state="active")])
    assert (h.session.recording_id, h.session.recording_state) == ("rec-2", "active")


async def test_other_events_are_logged_with_their_result(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    with caplog.at_level(logging.INFO, logger="transports.acs.callbacks"):
        response = await h.post([
            event("MediaStreamingStarted", "call-1", mediaStreamingUpdate={"mediaStreamingStatus": "mediaStreamingStarted"}),
            event("PlayFailed", "call-1", resultInformation={"code": 400, "subCode": 8535, "message": "Bad file."}),
            event("CallTransferFailed", "call-1", resultInformation={"code": 500, "subCode": 7000, "message": "No."}),
            event("SomethingNew", "call-1")])
    assert response.json() == {"applied": 4, "duplicates": 0, "late": 0, "unknown": 0}
    assert h.sessions.live("call-1") is h.session and h.session.state is CallState.CONNECTING
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [("INFO", "call call-1: MediaStreamingStarted"),
                     ("WARNING", "call call-1: PlayFailed: Bad file. (code 400, subcode 8535)"),
                     ("WARNING", "call call-1: CallTransferFailed: No. (code 500, subcode 7000)"),
                     ("INFO", "call call-1: SomethingNew")]


async def test_a_repeated_event_id_is_applied_once() -> None:
    h = Harness()
    first = event("ParticipantsUpdated", "call-1", event_id="ev-1", **participants(5, "8:acs:a"))
    await h.post([first])
    h.session.participants = ()  # were it applied again, the list would come back
    response = await h.post([first, first])
    assert response.json() == {"applied": 0, "duplicates": 2, "late": 0, "unknown": 0}
    assert h.session.participants == ()


async def test_unknown_calls_are_answered_200_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    with caplog.at_level(logging.INFO, logger="transports.acs.callbacks"):
        response = await h.post([event("CallConnected", "call-elsewhere")], token="some-token")
    assert response.status_code == 200 and response.json()["unknown"] == 1
    assert "a CallConnected callback for call call-elsewhere, unknown on this worker: ignored" in caplog.text
    assert h.session.state is CallState.CONNECTING


async def test_the_first_callback_binds_a_call_whose_answer_has_not_returned() -> None:
    sessions = CallSessions()
    pending = provisional_id()
    sessions.expect(pending)
    session = sessions.live(pending)
    assert session is not None
    app = Starlette(routes=[CallbacksEndpoint(sessions, FakeVerifier()).route()])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        response = await http.post(f"/acs/callbacks?token={session.callback_token}", headers={"Authorization": GOOD},
                                   content=json.dumps([event("CallConnected", "call-7")]).encode())
    assert response.json()["applied"] == 1
    assert sessions.live("call-7") is session and session.state is CallState.CONNECTED


async def test_another_calls_token_is_refused_403_and_nothing_is_applied(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    h.sessions.expect("call-2")
    other = h.sessions.live("call-2")
    assert other is not None
    with caplog.at_level(logging.WARNING, logger="transports.acs.callbacks"):
        response = await h.post([event("CallConnected", "call-2"), event("CallDisconnected", "call-1")])
    assert response.status_code == 403 and response.json() == {"error": "the callback token does not match the call"}
    assert h.sessions.live("call-1") is h.session and other.state is CallState.CONNECTING
    assert "the callback token is not call call-2's" in caplog.text
    assert h.session.callback_token not in caplog.text


async def test_a_missing_token_and_a_refused_jwt_are_401_without_a_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    with caplog.at_level(logging.WARNING, logger="transports.acs.callbacks"):
        no_token = await h.post([event("CallDisconnected", "call-1")], token="")
        no_jwt = await h.post([event("CallDisconnected", "call-1")], authorization=None)
        forged = await h.post([event("CallDisconnected", "call-1")], authorization="Bearer forged")
    assert [r.status_code for r in (no_token, no_jwt, forged)] == [401, 401, 401]
    assert no_token.json() == {"error": "the callback URL's token is required"}
    assert no_jwt.json() == forged.json() == {"error": "the request is not signed by ACS"}
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "no callback token", "no Authorization header", "the signature does not verify"]
    assert all(r.exc_info is None for r in caplog.records)
    assert h.sessions.live("call-1") is h.session


async def test_without_a_verifier_tokens_and_jwts_are_not_checked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="transports.acs.callbacks"):
        sessions = CallSessions()
        endpoint = CallbacksEndpoint(sessions, None)
    assert "ACCEPTS CALLBACKS WITHOUT A JWT OR CALLBACK TOKEN" in caplog.text
    sessions.expect("call-1")
    app = Starlette(routes=[endpoint.route()])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        response = await http.post("/acs/callbacks", content=json.dumps([event("CallConnected", "call-1")]).encode())
    assert response.status_code == 200 and sessions.live("call-1").state is CallState.CONNECTED  # type: ignore[union-attr]


@pytest.mark.parametrize(("raw", "status", "message"), [
    (b"not json", 400, "the body is not JSON"),
    (b'{"id": "x"}', 400, "the body must be a JSON array of CloudEvents, got a JSON dict"),
    (b"[1]", 400, "event 0 must be a JSON object, got int"),
    (b'[{"source": "s", "type": "t", "specversion": "1.0", "data": {}}]', 400,
     "event 0: id must be a non-empty string"),
    (b'[{"id": "1", "source": "s", "type": "Microsoft.Communication.CallConnected", "data": {}}]', 400,
     'event 0: specversion must be "1.0" (CloudEvents 1.0), got None'),
    (b'[{"id": "1", "source": "s", "type": "Microsoft.Communication.CallConnected", "specversion": "1.0", '
     b'"data": []}]', 400, "event 0 (CallConnected): data must be a JSON object, got list"),
    (b'[{"id": "1", "source": "s", "type": "Microsoft.Communication.CallConnected", "specversion": "1.0", '
     b'"data": {}}]', 400, "event 0 (CallConnected): data: callConnectionId must be a non-empty string"),
    (b'[{"id": "1", "source": "s", "type": "Microsoft.Communication.CallConnected", "specversion": "1.0", '
     b'"time": "yesterday", "data": {"callConnectionId": "call-1"}}]', 400,
     "event 0 (CallConnected): time must be an RFC 3339 timestamp, got 'yesterday'"),
    (json.dumps([event("ParticipantsUpdated", "call-1", sequenceNumber="7", participants=[])]).encode(), 400,
     "event 0 (ParticipantsUpdated): data.sequenceNumber must be an integer >= 0, got '7'"),
    (json.dumps([event("ParticipantsUpdated", "call-1", sequenceNumber=7, participants=[{"identifier": {}}])]).encode(),
     400, "event 0 (ParticipantsUpdated): data.participants[0].identifier.rawId must be a non-empty string"),
    (json.dumps([event("RecordingStateChanged", "call-1", recordingId="r")]).encode(), 400,
     "event 0 (RecordingStateChanged): data: state must be a non-empty string"),
    (b"[" + b" " * (1024 * 1024) + b"]", 413, "the body is over 1048576 bytes"),
])
async def test_bad_bodies_are_refused_with_a_message_naming_the_problem(
        raw: bytes, status: int, message: str, caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    with caplog.at_level(logging.WARNING, logger="transports.acs.callbacks"):
        response = await h.post(None, raw=raw)
    assert response.status_code == status
    assert message in response.json()["error"] and message in caplog.text
    assert all(r.exc_info is None for r in caplog.records)
    assert h.sessions.live("call-1") is h.session and h.session.state is CallState.CONNECTING


async def test_a_bad_event_after_good_ones_applies_none_of_the_batch() -> None:
    h = Harness()
    response = await h.post(None, raw=json.dumps([event("CallDisconnected", "call-1"), {"id": "x"}]).encode())
    assert response.status_code == 400 and h.sessions.live("call-1") is h.session


def test_parse_callbacks_keeps_the_order_and_the_fields() -> None:
    body = json.dumps([event("CallConnected", "c1", event_id="a", time="2026-11-26T10:00:00Z"),
                       event("PlayCompleted", "c1", event_id="b", time=None)]).encode()
    first, second = parse_callbacks(body)
    assert isinstance(first, CallEvent)
    assert (first.id, first.kind, first.call_connection_id, first.time) == ("a", "CallConnected", "c1", 1795687200.0)
    assert (second.id, second.kind, second.time) == ("b", "PlayCompleted", None)
