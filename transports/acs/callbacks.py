"""The ``/acs/callbacks`` endpoint: what ACS tells us about each call, applied to its session.

ACS posts a JSON array of CloudEvents 1.0 (structured mode) to the callback URL we gave
when answering or dialling, ``/acs/callbacks?token=<the call's callback token>``, with an
ACS-signed JWT in ``Authorization``. Each event names its call in ``data.callConnectionId``.
A request is checked in this order, and refused without touching any call:

1. the JWT, by the injected :class:`~transports.acs.auth.RequestVerifier`: a refusal gets
   the :class:`~transports.acs.auth.AuthError`'s status (401/403) and a warning naming the
   reason (the client is not told why);
2. the ``token`` query parameter: missing, 401;
3. the body: over :data:`MAX_BODY_BYTES`, 413; not a JSON array of CloudEvents with the
   fields their type needs, 400 with a message naming the event and the field;
4. each event's call: a known call whose callback token is not ``token`` refuses the whole
   batch with 403. A call we do not know (never ours, or ended long ago) is answered 200
   with an info line (ACS must not retry it); a call that ended recently is ignored
   quietly (a late or repeated event cannot revive it).

Then each event is applied once (an event id seen before for that call is a duplicate and
ignored):

- ``CallConnected``: ``connecting`` -> ``connected``;
- ``CallDisconnected``: the call ends: its graph is cancelled, its session forgotten;
- ``CallTransferAccepted``: the caller went to someone else and the bot left: the call ends;
- ``MediaStreamingFailed``, ``CreateCallFailed``, ``AnswerFailed``: the call ends with an
  error naming ACS's result (code, subcode, message), logged as an error; after a media
  failure the ACS call itself is hung up too (``on_media_failed``): the caller would
  otherwise stay on a line where nobody answers;
- ``ParticipantsUpdated``: the participants are replaced only by a higher ``sequenceNumber``
  (events arrive out of order);
- ``RecordingStateChanged``: the recording id and state, unless an event with a later
  ``time`` has already set them;
- others (media streaming started/stopped, play, recognize, add participant, transfer
  failed, ...): logged (failures as warnings) with their result.

``VOICEGRAPH_ACS_NO_AUTH=1`` (the app passes ``verifier=None``) turns off the JWT and token
checks, for local development only; that is logged as a warning when the endpoint is made.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from transports.acs.auth import NO_AUTH_ENV, AuthError, RequestVerifier
from transports.acs.control import CALLBACKS_PATH
from transports.acs.sessions import CallSession, CallSessions, CallState

__all__ = ["MAX_BODY_BYTES", "BadCallback", "CallEvent", "CallbacksEndpoint", "parse_callbacks"]

logger = logging.getLogger(__name__)

#: The largest callback body accepted (a batch is a few events; participants lists are short).
MAX_BODY_BYTES = 1024 * 1024
_PREFIX = "Microsoft.Communication."
#: Events after which the call is over, and why.
_ENDINGS = {"CallDisconnected": "disconnected", "CallTransferAccepted": "transferred to another participant"}
_FAILURES = {"MediaStreamingFailed": "media streaming failed", "CreateCallFailed": "the call could not be made",
             "AnswerFailed": "the call could not be answered"}


class BadCallback(ValueError):
    """A callback body we cannot act on; the message names what was wrong."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEvent:
    """One CloudEvent about a call: ``kind`` is the type without ``Microsoft.Communication.``."""

    id: str
    kind: str
    call_connection_id: str
    data: dict[str, Any]
    #: The event's ``time`` (Unix seconds), if it had one.
    time: float | None = None

    def result(self) -> str:
        """ACS's ``resultInformation`` as a phrase for a log line (empty if there is none)."""
        info = self.data.get("resultInformation")
        if not isinstance(info, dict):
            return ""
        return f"{info.get('message') or 'no message'} (code {info.get('code')}, subcode {info.get('subCode')})"


def _text(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise BadCallback(f"{where}: {name} must be a non-empty string, got {value!r:.60}")
    return value


def _event(raw: object, where: str) -> CallEvent:
    if not isinstance(raw, dict):
        raise BadCallback(f"{where} must be a JSON object, got {type(raw).__name__}")
    for name in ("id", "source", "type"):
        _text(raw, name, where)
    if raw.get("specversion") != "1.0":
        raise BadCallback(f"{where}: specversion must be \"1.0\" (CloudEvents 1.0), got {raw.get('specversion')!r:.20}")
    kind = raw["type"].removeprefix(_PREFIX)
    where = f"{where} ({kind})"
    data = raw.get("data")
    if not isinstance(data, dict):
        raise BadCallback(f"{where}: data must be a JSON object, got {type(data).__name__}")
    when: float | None = None
    if raw.get("time") is not None:
        try:
            when = datetime.fromisoformat(_text(raw, "time", where)).timestamp()
        except ValueError:
            raise BadCallback(f"{where}: time must be an RFC 3339 timestamp, got {raw['time']!r:.40}") from None
    event = CallEvent(id=raw["id"], kind=kind, call_connection_id=_text(data, "callConnectionId", f"{where}: data"),
                      data=data, time=when)
    if kind == "ParticipantsUpdated":
        sequence = data.get("sequenceNumber")
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
            raise BadCallback(f"{where}: data.sequenceNumber must be an integer >= 0, got {sequence!r:.20}")
        if not isinstance(data.get("participants"), list):
            raise BadCallback(f"{where}: data.participants must be a list")
        _participants(data["participants"], where)
    elif kind == "RecordingStateChanged":
        _text(data, "recordingId", f"{where}: data")
        _text(data, "state", f"{where}: data")
    return event


def _participants(items: list[Any], where: str) -> tuple[str, ...]:
    ids: list[str] = []
    for i, item in enumerate(items):
        identifier = item.get("identifier") if isinstance(item, dict) else None
        raw_id = identifier.get("rawId") if isinstance(identifier, dict) else None
        if not isinstance(raw_id, str) or not raw_id:
            raise BadCallback(f"{where}: data.participants[{i}].identifier.rawId must be a non-empty string")
        ids.append(raw_id)
    return tuple(ids)


def parse_callbacks(body: bytes) -> list[CallEvent]:
    """The events of a callback body, in order (pure; raises :class:`BadCallback`)."""
    try:
        events = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadCallback(f"the body is not JSON: {exc}") from None
    if not isinstance(events, list):
        raise BadCallback(f"the body must be a JSON array of CloudEvents, got a JSON {type(events).__name__}")
    return [_event(raw, f"event {i}") for i, raw in enumerate(events)]


class CallbacksEndpoint:
    """``POST /acs/callbacks`` for the calls of ``sessions`` (see module docstring).

    ``verifier`` checks each request's JWT; ``None`` turns the JWT and token checks off
    (the development switch). ``on_media_failed(call_id, error)`` hangs up a call whose
    media failed (the app passes :meth:`~transports.acs.control.CallControl.end_call`).
    """

    def __init__(self, sessions: CallSessions, verifier: RequestVerifier | None, *,
                 on_media_failed: Callable[[str, str], Awaitable[object]] | None = None) -> None:
        self.sessions = sessions
        self.verifier = verifier
        self.on_media_failed = on_media_failed
        self._tasks: set[asyncio.Task[object]] = set()
        if verifier is None:
            logger.warning("%s=1: %s ACCEPTS CALLBACKS WITHOUT A JWT OR CALLBACK TOKEN; anyone who can reach it "
                           "can end or alter calls. For local development only.", NO_AUTH_ENV, CALLBACKS_PATH)

    def route(self) -> Route:
        """The Starlette route, ``POST /acs/callbacks``."""
        return Route(CALLBACKS_PATH, self.handle, methods=["POST"], name="acs_callbacks")

    async def handle(self, request: Request) -> Response:
        """Serve one callback delivery."""
        token = request.query_params.get("token", "")
        if self.verifier is not None:
            try:
                await self.verifier.verify(request.headers.get("authorization"))
            except AuthError as exc:
                return _refuse(request, exc.status, exc.reason, "the request is not signed by ACS")
            if not token:
                return _refuse(request, 401, "no callback token", "the callback URL's token is required")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _refuse(request, 413, f"the body is over {MAX_BODY_BYTES} bytes")
        try:
            events = parse_callbacks(bytes(body))
        except BadCallback as exc:
            return _refuse(request, 400, str(exc))
        targets: list[tuple[CallEvent, CallSession]] = []
        unknown = late = 0
        for event in events:
            call_id = event.call_connection_id
            session = self._session(call_id, token)
            if session is None and self.sessions.live(call_id) is not None:
                return _refuse(request, 403, f"the callback token is not call {call_id}'s",
                               "the callback token does not match the call")
            if session is not None:
                targets.append((event, session))
            elif self.sessions.has_ended(call_id):
                late += 1
                logger.debug("call %s: %s after the call ended, ignored", call_id, event.kind)
            else:
                unknown += 1
                logger.info("a %s callback for call %s, unknown on this worker: ignored", event.kind, call_id)
        applied = duplicates = 0
        for event, session in targets:
            if not session.first_time(event.id):
                duplicates += 1
                continue
            if session.state is CallState.DISCONNECTED:  # ended by an earlier event of this batch
                late += 1
                continue
            self._apply(event, session)
            applied += 1
        return JSONResponse({"applied": applied, "duplicates": duplicates, "late": late, "unknown": unknown})

    def _session(self, call_id: str, token: str) -> CallSession | None:
        if self.verifier is None:
            return self.sessions.live(call_id)
        return self.sessions.callback(call_id, token)

    def _apply(self, event: CallEvent, session: CallSession) -> None:
        """Apply one new event to its call (see module docstring)."""
        call_id, data = session.call_connection_id, event.data
        if event.kind == "CallConnected":
            if session.state is CallState.CONNECTING:
                session.state = CallState.CONNECTED
            session.server_call_id = session.server_call_id or str(data.get("serverCallId") or "")
            session.correlation_id = session.correlation_id or str(data.get("correlationId") or "")
            logger.info("call %s: connected", call_id)
        elif event.kind in _ENDINGS:
            logger.info("call %s: %s", call_id, _ENDINGS[event.kind])
            self.sessions.end(session, _ENDINGS[event.kind])
        elif event.kind in _FAILURES:
            error = f"{_FAILURES[event.kind]}: {event.result() or 'no result information'}"
            logger.error("call %s: %s", call_id, error)
            self.sessions.end(session, _FAILURES[event.kind], error=error)
            if event.kind == "MediaStreamingFailed" and self.on_media_failed is not None:
                task = asyncio.ensure_future(self.on_media_failed(call_id, error))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif event.kind == "ParticipantsUpdated":
            sequence: int = data["sequenceNumber"]
            if sequence > session.participants_sequence:
                session.participants = _participants(data["participants"], event.kind)
                session.participants_sequence = sequence
                logger.info("call %s: participants %s", call_id, ", ".join(session.participants) or "none")
        elif event.kind == "RecordingStateChanged":
            if event.time is None or event.time >= session.recording_state_at:
                session.recording_id, session.recording_state = data["recordingId"], data["state"]
                if event.time is not None:
                    session.recording_state_at = event.time
                logger.info("call %s: recording %s %s", call_id, session.recording_id, session.recording_state)
        else:
            log = logger.warning if event.kind.endswith("Failed") else logger.info
            result = event.result()
            log("call %s: %s%s", call_id, event.kind, f": {result}" if result else "")


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown peer"


def _refuse(request: Request, status: int, reason: str, public: str | None = None) -> Response:
    """Refuse a delivery: ``reason`` goes to the log, ``public`` (default: ``reason``) to the client."""
    logger.warning("refused a callback from %s: %s", _peer(request), reason)
    return JSONResponse({"error": public or reason}, status_code=status)
