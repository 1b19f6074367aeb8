"""The ``/acs/events`` webhook: Event Grid tells us a call is ringing, and we answer it.

Event Grid POSTs a JSON array of events (its own schema: ``eventType``, ``data``, ...).
Two kinds matter here:

- ``Microsoft.EventGrid.SubscriptionValidationEvent``: the handshake that proves the
  endpoint is ours when the subscription is created; we answer
  ``{"validationResponse": data.validationCode}``.
- ``Microsoft.Communication.IncomingCall``: a call to one of our numbers. We answer it with
  the async Call Automation client (nothing blocks the loop), asking ACS to stream the
  call's audio, mixed, bidirectional, PCM mono, from the moment of the answer, to
  ``<public ws(s)>/acs/media?token=...``. ACS wants that URL, token included, in the answer
  request, and only the answer's response carries the call connection id: the token is
  issued under a provisional id and :meth:`~transports.acs.sessions.CallSessions.bind` s
  it to the real id when the response comes. Callbacks go to ``<public>/acs/callbacks``.

Other event types are ignored (200: Event Grid must not retry them). A body that is not a
JSON array of objects, or an event without the fields its type needs, is refused with 400
and a message naming what was wrong; nothing of such a batch is acted on. ACS refusing or
failing the answer gives 502 (504 if it does not answer in time), logged as a warning; the
token issued for that call is then never claimed and expires on its own.

Configuration: the public base URL comes from ``VOICEGRAPH_PUBLIC_URL``, the client from
``ACS_CONNECTION_STRING`` or ``ACS_ENDPOINT`` + ``ACS_KEY``; both are injectable. Either
missing is reported when a call comes (503), so a worker without ACS still serves the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from azure.communication.callautomation import (
    AudioFormat,
    MediaStreamingAudioChannelType,
    MediaStreamingContentType,
    MediaStreamingOptions,
    StreamingTransportType,
)
from azure.communication.callautomation.aio import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from transports.acs.route import MEDIA_PATH
from transports.acs.sessions import CallSessions

__all__ = [
    "CALLBACKS_PATH",
    "EVENTS_PATH",
    "BadEvent",
    "EventsWebhook",
    "IncomingCall",
    "SubscriptionValidation",
    "client_from_env",
    "parse_events",
]

logger = logging.getLogger(__name__)

#: Where Event Grid posts.
EVENTS_PATH = "/acs/events"
#: Where ACS posts the call's CloudEvents (served elsewhere).
CALLBACKS_PATH = "/acs/callbacks"
PUBLIC_URL_ENV = "VOICEGRAPH_PUBLIC_URL"
CONNECTION_STRING_ENV = "ACS_CONNECTION_STRING"
ENDPOINT_ENV = "ACS_ENDPOINT"
KEY_ENV = "ACS_KEY"

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


def client_from_env() -> CallAutomationClient | None:
    """The async Call Automation client configured by the environment, if it is."""
    connection_string = os.environ.get(CONNECTION_STRING_ENV, "")
    if connection_string:
        return CallAutomationClient.from_connection_string(connection_string)
    endpoint, key = os.environ.get(ENDPOINT_ENV, ""), os.environ.get(KEY_ENV, "")
    if endpoint and key:
        return CallAutomationClient(endpoint, AzureKeyCredential(key))
    return None


def _public_base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{PUBLIC_URL_ENV} must be an http(s) base URL without query, got {url!r}")
    return url.rstrip("/")


class EventsWebhook:
    """The ``/acs/events`` endpoint of one worker (see module docstring).

    ``public_url`` defaults to ``VOICEGRAPH_PUBLIC_URL``, ``client`` to
    :func:`client_from_env` (made on the first call; :meth:`aclose` closes a client made
    here, not one that was given).
    """

    def __init__(self, sessions: CallSessions, *, public_url: str | None = None,
                 client: CallAutomationClient | None = None,
                 audio_format: AudioFormat = AudioFormat.PCM16_K_MONO, answer_within_s: float = 10.0) -> None:
        if public_url is None:
            public_url = os.environ.get(PUBLIC_URL_ENV) or None
        self.public_url = _public_base(public_url) if public_url is not None else None
        self.sessions = sessions
        self.audio_format = audio_format
        self.answer_within_s = answer_within_s
        self._client = client
        self._own_client = False

    def route(self) -> Route:
        """The Starlette route, ``POST /acs/events``."""
        return Route(EVENTS_PATH, self.handle, methods=["POST"], name="acs_events")

    async def aclose(self) -> None:
        """Close the client this webhook made (its HTTP connections)."""
        if self._own_client and self._client is not None:
            await self._client.close()
            self._client, self._own_client = None, False

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
            outcome = await self._answer(event)
            if isinstance(outcome, Response):
                return outcome
            answered.append(outcome)
        if validation is not None:
            return JSONResponse({"validationResponse": validation})
        return JSONResponse({"answered": answered})

    async def _answer(self, call: IncomingCall) -> str | Response:
        """Answer one call: its call connection id, or the error response."""
        label = f"incoming call (correlation {call.correlation_id or 'unknown'})"
        if self.public_url is None:
            return _error(503, f"cannot answer {label}: {PUBLIC_URL_ENV} is not set")
        client = self._client_or_none()
        if client is None:
            return _error(503, f"cannot answer {label}: neither {CONNECTION_STRING_ENV} nor "
                               f"{ENDPOINT_ENV} + {KEY_ENV} is set")
        provisional = f"incoming-{uuid.uuid4().hex}"
        token = self.sessions.expect(provisional)
        ws_base = "ws" + self.public_url.removeprefix("http")  # http -> ws, https -> wss
        media = MediaStreamingOptions(
            transport_url=f"{ws_base}{MEDIA_PATH}?token={token}",
            transport_type=StreamingTransportType.WEBSOCKET,
            content_type=MediaStreamingContentType.AUDIO,
            audio_channel_type=MediaStreamingAudioChannelType.MIXED,
            start_media_streaming=True,
            enable_bidirectional=True,
            audio_format=self.audio_format)
        try:
            async with asyncio.timeout(self.answer_within_s):
                props = await client.answer_call(
                    incoming_call_context=call.incoming_call_context,
                    callback_url=f"{self.public_url}{CALLBACKS_PATH}", media_streaming=media)
        except TimeoutError:
            return _error(504, f"ACS did not answer {label} within {self.answer_within_s:g} s")
        except HttpResponseError as exc:
            return _error(502, f"ACS refused to answer {label}: HTTP {exc.status_code} {exc.reason or ''}".rstrip())
        except AzureError as exc:
            return _error(502, f"could not reach ACS to answer {label}: {type(exc).__name__}: {exc.message}")
        call_id = props.call_connection_id
        if not call_id:
            return _error(502, f"ACS answered {label} without a call connection id")
        if not self.sessions.bind(provisional, call_id):
            logger.warning("call %s: its media token expired before the answer returned", call_id)
        logger.info("answered %s as call %s", label, call_id)
        return call_id

    def _client_or_none(self) -> CallAutomationClient | None:
        if self._client is None:
            self._client = client_from_env()
            self._own_client = self._client is not None
        return self._client


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown peer"


def _refuse(request: Request, status: int, message: str) -> Response:
    logger.warning("refused an Event Grid delivery from %s: %s", _peer(request), message)
    return JSONResponse({"error": message}, status_code=status)


def _error(status: int, message: str) -> Response:
    logger.warning("%s", message)
    return JSONResponse({"error": message}, status_code=status)
