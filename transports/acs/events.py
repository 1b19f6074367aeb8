"""The ``/acs/events`` webhook: Event Grid tells us a call is ringing, and we answer it.

Event Grid POSTs a JSON array of events (its own schema: ``eventType``, ``data``, ...).
Two kinds matter here:

- ``Microsoft.EventGrid.SubscriptionValidationEvent``: the handshake that proves the
  endpoint is ours when the subscription is created; we answer
  ``{"validationResponse": data.validationCode}``.
- ``Microsoft.Communication.IncomingCall``: a call to one of our numbers, answered by
  :meth:`~transports.acs.control.CallControl.answer` (media streaming to ``/acs/media``,
  callbacks to ``/acs/callbacks``, each with the call's own token).

Other event types are ignored (200: Event Grid must not retry them). A body that is not a
JSON array of objects, or an event without the fields its type needs, is refused with 400
and a message naming what was wrong; nothing of such a batch is acted on. A call that
cannot be answered gets the :class:`~transports.acs.control.ControlError`'s status (502
if ACS refused or failed, 504 if it did not answer in time, 503 if ACS is not configured).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from transports.acs.control import CallControl, ControlError

__all__ = [
    "EVENTS_PATH",
    "BadEvent",
    "EventsWebhook",
    "IncomingCall",
    "SubscriptionValidation",
    "parse_events",
]

logger = logging.getLogger(__name__)

#: Where Event Grid posts.
EVENTS_PATH = "/acs/events"

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
INCOMING_CALL_EVENT = "Microsoft.Communication.IncomingCall"
#: Event Grid delivers at most 1 MB per batch; anything larger is not Event Grid.
MAX_BODY_BYTES = 1024 * 1024


class BadEvent(ValueError):
    """An Event Grid body we cannot act on; the message names what was wrong."""


@dataclass(frozen=True, slots=True)
class SubscriptionValidation:
    """The subscription handshake: echo ``validation_code``."""

    validation_code: str


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A call ringing for us; ``incoming_call_context`` is what answers it."""

    incoming_call_context: str
    correlation_id: str
    server_call_id: str


def _text(data: dict[str, Any], name: str, where: str, *, required: bool = True) -> str:
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise BadEvent(f"{where}: data.{name} must be a non-empty string, got {value!r:.60}")
    return value


def parse_events(body: bytes) -> list[SubscriptionValidation | IncomingCall]:
    """The events of an Event Grid body that we act on, in order (pure; raises :class:`BadEvent`).

    Events of other types are skipped; they still must be objects with an ``eventType``.
    """
    try:
        events = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEvent(f"the body is not JSON: {exc}") from None
    if not isinstance(events, list):
        raise BadEvent(f"the body must be a JSON array of Event Grid events, got a JSON {type(events).__name__}")
    parsed: list[SubscriptionValidation | IncomingCall] = []
    for i, event in enumerate(events):
        where = f"event {i}"
        if not isinstance(event, dict):
            raise BadEvent(f"{where} must be a JSON object, got {type(event).__name__}")
        kind = event.get("eventType")
        if not isinstance(kind, str) or not kind:
            raise BadEvent(f"{where} has no eventType (is this the Event Grid schema?)")
        if kind not in (VALIDATION_EVENT, INCOMING_CALL_EVENT):
            continue
        where = f"event {i} ({kind})"
        data = event.get("data")
        if not isinstance(data, dict):
            raise BadEvent(f"{where}: data must be a JSON object, got {type(data).__name__}")
        if kind == VALIDATION_EVENT:
            parsed.append(SubscriptionValidation(_text(data, "validationCode", where)))
        else:
            parsed.append(IncomingCall(
                incoming_call_context=_text(data, "incomingCallContext", where),
                correlation_id=_text(data, "correlationId", where, required=False),
                server_call_id=_text(data, "serverCallId", where, required=False)))
    return parsed


class EventsWebhook:
    """The ``/acs/events`` endpoint of one worker, answering calls with ``control``."""

    def __init__(self, control: CallControl) -> None:
        self.control = control

    def route(self) -> Route:
        """The Starlette route, ``POST /acs/events``."""
        return Route(EVENTS_PATH, self.handle, methods=["POST"], name="acs_events")

    async def handle(self, request: Request) -> Response:
        """Serve one Event Grid delivery."""
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _refuse(request, 413, f"the body is over {MAX_BODY_BYTES} bytes")
        try:
            events = parse_events(bytes(body))
        except BadEvent as exc:
            return _refuse(request, 400, str(exc))
        validation: str | None = None
        answered: list[str] = []
        for event in events:
            if isinstance(event, SubscriptionValidation):
                logger.info("Event Grid subscription validation from %s", _peer(request))
                validation = event.validation_code
                continue
            try:
                session = await self.control.answer(event.incoming_call_context, correlation_id=event.correlation_id)
            except ControlError as exc:  # logged where it was raised
                return JSONResponse({"error": exc.message}, status_code=exc.status)
            answered.append(session.call_connection_id)
        if validation is not None:
            return JSONResponse({"validationResponse": validation})
        return JSONResponse({"answered": answered})


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown peer"


def _refuse(request: Request, status: int, message: str) -> Response:
    logger.warning("refused an Event Grid delivery from %s: %s", _peer(request), message)
    return JSONResponse({"error": message}, status_code=status)
