"""Call actions on ACS Call Automation: answer, dial, hang up, transfer, record.

:class:`CallControl` is the one place that talks to the async Call Automation client
(``azure.communication.callautomation.aio``; nothing blocks the loop) and that builds what
ACS needs to reach us back: the media streaming options (WebSocket transport, mixed audio,
bidirectional, PCM 16 or 24 kHz mono, started at connect) whose transport URL is our
``/acs/media?token=<media token>``, and the callback URL ``/acs/callbacks?token=<callback
token>``; both tokens come from :class:`~transports.acs.sessions.CallSessions`. Each action
is a coroutine agents can call (issue 14); :class:`CallsApi` serves them over HTTP:

- ``POST /acs/calls`` ``{"target", "source"?, "pipeline"?}`` -> 201 ``{"callConnectionId"}``
- ``POST /acs/calls/{id}:hangup`` -> 200; ``:transfer`` ``{"target"}`` -> 202 (the bot leaves
  when ACS accepts it); ``:recording`` ``{"action": "start"|"stop"}`` -> 200
  (``{"recordingId"}`` on start).

Every request needs ``Authorization: Bearer <VOICEGRAPH_API_KEY>`` (compared in constant
time): 401 without it or with another key, 503 if no key is configured.

Failures raise :class:`ControlError` with the HTTP status that reports them and a message
naming what was wrong: a bad target 400, an unknown call 404, a call not in a state for the
action 409, missing configuration 503, ACS refusing or unreachable 502, ACS not answering
within ``timeout_s`` 504. Each is logged once, as a warning, without a traceback.

Targets (:func:`parse_target`) are E.164 phone numbers (``+15551234567``) or ACS
communication user ids (``8:acs:<resource>_<user>``). A phone target needs a caller id
to show: ``source``, or ``VOICEGRAPH_ACS_CALLER_ID``.

Agents act on their call through :meth:`CallControl.act` (``transfer`` goes to
``VOICEGRAPH_ACS_TRANSFER_TARGET``, a phone number or ACS user id: the human team's line;
``hangup`` ends the call), carried out by :mod:`transports.acs.actions` once the bot's
last words have played.

Configuration (environment, each injectable): the public base URL
``VOICEGRAPH_PUBLIC_URL``; the client from ``ACS_CONNECTION_STRING`` or ``ACS_ENDPOINT`` +
``ACS_KEY`` (made on first use, so a worker without ACS still serves everything else).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from azure.communication.callautomation import (
    AudioFormat,
    CommunicationIdentifier,
    CommunicationUserIdentifier,
    MediaStreamingAudioChannelType,
    MediaStreamingContentType,
    MediaStreamingOptions,
    PhoneNumberIdentifier,
    StreamingTransportType,
)
from azure.communication.callautomation.aio import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ServiceRequestTimeoutError,
    ServiceResponseTimeoutError,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from transports.acs.route import MEDIA_PATH
from transports.acs.sessions import CallSession, CallSessions, provisional_id

__all__ = [
    "CALLBACKS_PATH",
    "CALLER_ID_ENV",
    "CONNECTION_STRING_ENV",
    "ENDPOINT_ENV",
    "KEY_ENV",
    "PUBLIC_URL_ENV",
    "TRANSFER_TARGET_ENV",
    "API_KEY_ENV",
    "CALLS_PATH",
    "CallControl",
    "CallsApi",
    "ControlError",
    "client_from_env",
    "parse_phone_number",
    "parse_target",
]

logger = logging.getLogger(__name__)

#: Where ACS posts a call's CloudEvents (served by :mod:`transports.acs.callbacks`).
CALLBACKS_PATH = "/acs/callbacks"
PUBLIC_URL_ENV = "VOICEGRAPH_PUBLIC_URL"
CONNECTION_STRING_ENV = "ACS_CONNECTION_STRING"
ENDPOINT_ENV = "ACS_ENDPOINT"
KEY_ENV = "ACS_KEY"
CALLER_ID_ENV = "VOICEGRAPH_ACS_CALLER_ID"
TRANSFER_TARGET_ENV = "VOICEGRAPH_ACS_TRANSFER_TARGET"
API_KEY_ENV = "VOICEGRAPH_API_KEY"
#: Where the call actions are served.
CALLS_PATH = "/acs/calls"
#: A call action's body is a few short fields.
MAX_ACTION_BODY_BYTES = 64 * 1024

# E.164: a plus, a country code that does not start with 0, at most 15 digits in all.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# An ACS communication user id: 8:acs:<resource id>_<user id>; no spaces or controls.
_ACS_USER = re.compile(r"8:acs:[0-9A-Za-z_.:-]+")
_MAX_TARGET_CHARS = 256


class ControlError(Exception):
    """A call action that failed: ``status`` (the HTTP status reporting it) and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _fail(status: int, message: str) -> ControlError:
    """The error to raise, logged once (a warning: bad input or a failing service, never a bug)."""
    logger.warning("%s", message)
    return ControlError(status, message)


def parse_phone_number(text: object, what: str = "source") -> PhoneNumberIdentifier:
    """An E.164 phone number as the SDK's identifier; :class:`ControlError` (400) if it is not one."""
    if not isinstance(text, str) or not _E164.fullmatch(text):
        raise _fail(400, f"{what} must be an E.164 phone number like +15551234567, got {text!r:.80}")
    return PhoneNumberIdentifier(text)


def parse_target(text: object) -> CommunicationIdentifier:
    """Who to call or transfer to: an E.164 phone number or an ``8:acs:...`` user id
    (:class:`ControlError` 400 naming what was wrong otherwise)."""
    if not isinstance(text, str) or not text:
        raise _fail(400, f"target must be a non-empty string, got {text!r:.80}")
    if len(text) > _MAX_TARGET_CHARS:
        raise _fail(400, f"target is {len(text)} characters long (at most {_MAX_TARGET_CHARS})")
    if text.startswith("+"):
        return parse_phone_number(text, "target")
    if _ACS_USER.fullmatch(text):
        return CommunicationUserIdentifier(text)
    raise _fail(400, "target must be an E.164 phone number like +15551234567 or an ACS user id "
                            f"like 8:acs:<resource>_<user>, got {text!r:.80}")


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


class CallControl:
    """The call actions of one worker (see module docstring).

    ``public_url`` defaults to ``VOICEGRAPH_PUBLIC_URL``, ``client`` to
    :func:`client_from_env` (made on first use; :meth:`aclose` closes a client made here,
    not one that was given), ``caller_id`` to ``VOICEGRAPH_ACS_CALLER_ID``,
    ``transfer_target`` (where agents transfer callers) to ``VOICEGRAPH_ACS_TRANSFER_TARGET``.
    ``pipelines`` are the pipeline names a call may run; the first is the default.
    """

    def __init__(self, sessions: CallSessions, *, public_url: str | None = None,
                 client: CallAutomationClient | None = None, caller_id: str | None = None,
                 audio_format: AudioFormat = AudioFormat.PCM16_K_MONO, timeout_s: float = 10.0,
                 pipelines: Collection[str] = ("acs",), transfer_target: str | None = None) -> None:
        if transfer_target is None:
            transfer_target = os.environ.get(TRANSFER_TARGET_ENV) or None
        if transfer_target is not None:
            try:
                parse_target(transfer_target)
            except ControlError as exc:
                raise ValueError(f"{TRANSFER_TARGET_ENV}: {exc.message}") from None
        if public_url is None:
            public_url = os.environ.get(PUBLIC_URL_ENV) or None
        if caller_id is None:
            caller_id = os.environ.get(CALLER_ID_ENV) or None
        if caller_id is not None and not _E164.fullmatch(caller_id):
            raise ValueError(f"{CALLER_ID_ENV} must be an E.164 phone number like +15551234567, got {caller_id!r}")
        if not pipelines:
            raise ValueError("pipelines: at least one pipeline name is needed")
        self.public_url = _public_base(public_url) if public_url is not None else None
        self.sessions = sessions
        self.caller_id = caller_id
        self.audio_format = audio_format
        self.timeout_s = timeout_s
        self.pipelines = tuple(pipelines)
        self.transfer_target = transfer_target
        self._client = client
        self._own_client = False

    async def aclose(self) -> None:
        """Close the client this control made (its HTTP connections)."""
        if self._own_client and self._client is not None:
            await self._client.close()
            self._client, self._own_client = None, False

    async def answer(self, incoming_call_context: str, *, correlation_id: str = "") -> CallSession:
        """Answer a ringing call (Event Grid's ``IncomingCall``) with media streaming to us."""
        label = f"incoming call (correlation {correlation_id or 'unknown'})"
        client = self._configured(f"answer {label}")
        session, media, callback_url = self._expect(direction="inbound", pipeline=self.pipelines[0])
        session.correlation_id = correlation_id
        async with self._acs(f"answer {label}", session):
            props = await client.answer_call(incoming_call_context=incoming_call_context,
                                             callback_url=callback_url, media_streaming=media)
        return self._bind(session, props.call_connection_id, props.server_call_id, f"answered {label}")

    async def dial(self, target: str, source: str | None = None, *, pipeline: str | None = None) -> CallSession:
        """Call ``target`` (see :func:`parse_target`) with media streaming to us; the call
        is ``connecting`` until ACS posts ``CallConnected``."""
        callee = parse_target(target)
        caller = parse_phone_number(source) if source is not None else None
        if caller is None and isinstance(callee, PhoneNumberIdentifier):
            if self.caller_id is None:
                raise _fail(400, f"calling the phone number {target} needs a caller id: give source, "
                                      f"or set {CALLER_ID_ENV}")
            caller = PhoneNumberIdentifier(self.caller_id)
        pipeline = pipeline if pipeline is not None else self.pipelines[0]
        if pipeline not in self.pipelines:
            raise _fail(400, f"pipeline must be one of {', '.join(self.pipelines)}, got {pipeline!r:.80}")
        client = self._configured(f"dial {target}")
        session, media, callback_url = self._expect(direction="outbound", pipeline=pipeline)
        async with self._acs(f"dial {target}", session):
            props = await client.create_call(callee, callback_url, source_caller_id_number=caller,
                                             media_streaming=media)
        return self._bind(session, props.call_connection_id, props.server_call_id, f"dialled {target}")

    async def hang_up(self, call_connection_id: str) -> None:
        """End the call for everyone; its graph ends at once."""
        session = self._known(call_connection_id)
        client = self._configured(f"hang up call {call_connection_id}")
        async with self._acs(f"hang up call {call_connection_id}"):
            await client.get_call_connection(call_connection_id).hang_up(is_for_everyone=True)
        logger.info("call %s: hung up", call_connection_id)
        self.sessions.end(session, "hung up")

    async def end_call(self, call_connection_id: str, why: str) -> bool:
        """Hang up a call our side can no longer serve (its media failed), whether or not
        its session is still live; a failure is logged, never raised. True if ACS took it."""
        try:
            client = self._configured(f"hang up call {call_connection_id}")
            async with self._acs(f"hang up call {call_connection_id} ({why})"):
                await client.get_call_connection(call_connection_id).hang_up(is_for_everyone=True)
        except ControlError:
            return False  # logged by _fail
        logger.info("call %s: hung up (%s)", call_connection_id, why)
        return True

    async def transfer(self, call_connection_id: str, target: str) -> None:
        """Transfer the caller to ``target`` (a human); the bot leaves the call when ACS
        posts ``CallTransferAccepted``."""
        self._known(call_connection_id)
        transferee = parse_target(target)
        client = self._configured(f"transfer call {call_connection_id}")
        async with self._acs(f"transfer call {call_connection_id} to {target}"):
            await client.get_call_connection(call_connection_id).transfer_call_to_participant(transferee)
        logger.info("call %s: transfer to %s requested", call_connection_id, target)

    async def act(self, call_connection_id: str, action: str, reason: str = "") -> None:
        """Carry out an agent's call action: ``"hangup"``, or ``"transfer"`` to
        :attr:`transfer_target` (a 503 :class:`ControlError` when none is configured)."""
        if action == "hangup":
            await self.hang_up(call_connection_id)
        elif action == "transfer":
            if self.transfer_target is None:
                raise _fail(503, f"no transfer target: set {TRANSFER_TARGET_ENV} to the phone number or ACS user "
                                 "id of the human team")
            await self.transfer(call_connection_id, self.transfer_target)
        else:
            raise _fail(400, f"unknown call action {action!r:.40}: transfer or hangup")

    async def start_recording(self, call_connection_id: str) -> str:
        """Start recording the call; returns the recording id (kept on the session)."""
        session = self._known(call_connection_id)
        if not session.server_call_id:
            raise _fail(409, f"call {call_connection_id} has no server call id yet: it cannot be recorded")
        if session.recording_id and session.recording_state != "inactive":
            raise _fail(409, f"call {call_connection_id} is already being recorded ({session.recording_id})")
        client = self._configured(f"record call {call_connection_id}")
        async with self._acs(f"start recording call {call_connection_id}"):
            props = await client.start_recording(server_call_id=session.server_call_id,
                                                 recording_state_callback_url=self._callback_url(session))
        if not props.recording_id:
            raise _fail(502, f"ACS started recording call {call_connection_id} without a recording id")
        session.recording_id = props.recording_id
        session.recording_state = str(props.recording_state or session.recording_state)
        logger.info("call %s: recording %s started", call_connection_id, props.recording_id)
        return props.recording_id

    async def stop_recording(self, call_connection_id: str) -> None:
        """Stop the call's recording."""
        session = self._known(call_connection_id)
        if not session.recording_id:
            raise _fail(409, f"call {call_connection_id} is not being recorded")
        client = self._configured(f"stop recording call {call_connection_id}")
        async with self._acs(f"stop recording call {call_connection_id}"):
            await client.stop_recording(session.recording_id)
        logger.info("call %s: recording %s stopped", call_connection_id, session.recording_id)

    # --- helpers ---------------------------------------------------------------------------

    def _known(self, call_connection_id: str) -> CallSession:
        session = self.sessions.live(call_connection_id)
        if session is None:
            raise _fail(404, f"no call {call_connection_id!r:.80} on this worker (unknown or ended)")
        return session

    def _configured(self, action: str) -> CallAutomationClient:
        if self.public_url is None:
            raise _fail(503, f"cannot {action}: {PUBLIC_URL_ENV} is not set")
        if self._client is None:
            self._client = client_from_env()
            self._own_client = self._client is not None
        if self._client is None:
            raise _fail(503, f"cannot {action}: neither {CONNECTION_STRING_ENV} nor "
                                  f"{ENDPOINT_ENV} + {KEY_ENV} is set")
        return self._client

    def _callback_url(self, session: CallSession) -> str:
        return f"{self.public_url}{CALLBACKS_PATH}?token={session.callback_token}"

    def _expect(self, *, direction: str, pipeline: str) -> tuple[CallSession, MediaStreamingOptions, str]:
        """A call expected under a provisional id, its media options and callback URL."""
        provisional = provisional_id()
        token = self.sessions.expect(provisional, direction=direction, pipeline=pipeline)
        session = self.sessions.live(provisional)
        assert session is not None and self.public_url is not None
        ws_base = "ws" + self.public_url.removeprefix("http")  # http -> ws, https -> wss
        media = MediaStreamingOptions(
            transport_url=f"{ws_base}{MEDIA_PATH}?token={token}",
            transport_type=StreamingTransportType.WEBSOCKET,
            content_type=MediaStreamingContentType.AUDIO,
            audio_channel_type=MediaStreamingAudioChannelType.MIXED,
            start_media_streaming=True,
            enable_bidirectional=True,
            audio_format=self.audio_format)
        return session, media, self._callback_url(session)

    def _bind(self, session: CallSession, call_id: str | None, server_call_id: str | None, what: str) -> CallSession:
        if not call_id:
            self.sessions.end(session, "no call connection id", error="ACS gave no call connection id")
            raise _fail(502, f"ACS {what} without a call connection id")
        if not self.sessions.bind(session.call_connection_id, call_id) and self.sessions.live(call_id) is not session:
            logger.warning("call %s: its media token expired before ACS's response came", call_id)
        session.server_call_id = session.server_call_id or server_call_id or ""
        logger.info("%s as call %s", what, call_id)
        return session

    @asynccontextmanager
    async def _acs(self, action: str, pending: CallSession | None = None) -> AsyncIterator[None]:
        """Run one SDK request with the timeout, mapping its failures to :class:`ControlError`;
        a ``pending`` call (answered or dialled) is forgotten if the request fails."""
        error: ControlError | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                yield
        except (TimeoutError, ServiceRequestTimeoutError, ServiceResponseTimeoutError):
            error = ControlError(504, f"ACS did not respond to {action} within {self.timeout_s:g} s")
        except HttpResponseError as exc:
            detail = f": {exc.error.message}" if exc.error is not None and exc.error.message else ""
            error = ControlError(502, f"ACS refused to {action}: HTTP {exc.status_code} "
                                      f"{exc.reason or ''}".rstrip() + detail)
        except AzureError as exc:
            error = ControlError(502, f"could not reach ACS to {action}: {type(exc).__name__}: {exc.message}")
        if error is not None:
            if pending is not None:
                self.sessions.end(pending, "the request to ACS failed", error=error.message)
            raise _fail(error.status, error.message)


class CallsApi:
    """The HTTP endpoints of the call actions (see module docstring); ``api_key`` defaults
    to ``VOICEGRAPH_API_KEY``."""

    def __init__(self, control: CallControl, *, api_key: str | None = None) -> None:
        self.control = control
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")

    def routes(self) -> list[Route]:
        """``POST /acs/calls`` and ``POST /acs/calls/{id}:{action}``."""
        return [Route(CALLS_PATH, self._create, methods=["POST"], name="acs_calls"),
                Route(CALLS_PATH + "/{call_action}", self._act, methods=["POST"], name="acs_call_action")]

    async def _create(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            body = await _body(request)
            session = await self.control.dial(_required(body, "target"), _optional(body, "source"),
                                              pipeline=_optional(body, "pipeline"))
        except ControlError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return JSONResponse({"callConnectionId": session.call_connection_id}, status_code=201)

    async def _act(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        call_id, _, action = str(request.path_params["call_action"]).rpartition(":")
        try:
            if not call_id or action not in ("hangup", "transfer", "recording"):
                raise _fail(404, f"no such call action {request.url.path!r:.120}: use "
                                              f"{CALLS_PATH}/<id>:hangup, :transfer or :recording")
            if action == "hangup":
                await self.control.hang_up(call_id)
                return JSONResponse({"callConnectionId": call_id, "state": "disconnected"})
            body = await _body(request)
            if action == "transfer":
                await self.control.transfer(call_id, _required(body, "target"))
                return JSONResponse({"callConnectionId": call_id, "transfer": "requested"}, status_code=202)
            what = body.get("action")
            if what == "start":
                recording_id = await self.control.start_recording(call_id)
                return JSONResponse({"callConnectionId": call_id, "recordingId": recording_id})
            if what == "stop":
                await self.control.stop_recording(call_id)
                return JSONResponse({"callConnectionId": call_id, "recording": "stopped"})
            raise _fail(400, f'action must be "start" or "stop", got {what!r:.80}')
        except ControlError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)

    def _refused(self, request: Request) -> Response | None:
        """The answer to a request without the API key, or ``None`` if it has it."""
        peer = f"{request.client.host}:{request.client.port}" if request.client else "unknown peer"
        if not self.api_key:
            logger.warning("refused a call action from %s: %s is not set", peer, API_KEY_ENV)
            return JSONResponse({"error": f"call actions are disabled: {API_KEY_ENV} is not set"}, status_code=503)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("utf-8", "surrogateescape"), self.api_key.encode()):
            why = "no bearer API key" if scheme.lower() != "bearer" else "a wrong API key"
            logger.warning("refused a call action from %s: %s", peer, why)
            return JSONResponse({"error": f"{why}: send Authorization: Bearer ${API_KEY_ENV}"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return None


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object (:class:`ControlError` 400/413 naming what was wrong)."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_ACTION_BODY_BYTES:
            raise _fail(413, f"the body is over {MAX_ACTION_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(400, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _fail(400, f"the body must be a JSON object, got a JSON {type(body).__name__}")
    return body


def _optional(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _fail(400, f"{name} must be a string, got {value!r:.80}")
    return value


def _required(body: dict[str, Any], name: str) -> str:
    value = _optional(body, name)
    if value is None:
        raise _fail(400, f"{name} is required")
    return value
