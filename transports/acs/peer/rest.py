"""A local Call Automation REST endpoint that the real SDK can talk to.

Point ``CallAutomationClient("http://127.0.0.1:PORT", AzureKeyCredential(key))`` at it
(``from_connection_string`` forces https). It serves the SDK's requests on the SDK's paths
(``azure/communication/callautomation/_generated/operations/_operations.py``), with the
statuses and bodies the SDK expects:

==========================================================  ======  =============================
request (``?api-version=...`` required)                      status  body
==========================================================  ======  =============================
POST   /calling/callConnections:answer                       200     CallConnectionProperties
POST   /calling/callConnections                  (create)    201     CallConnectionProperties
GET    /calling/callConnections/{id}                         200     CallConnectionProperties
DELETE /calling/callConnections/{id}             (hang up)   204
POST   /calling/callConnections/{id}:terminate               204
POST   /calling/callConnections/{id}:transferToParticipant   202     {"operationContext"}
GET    /calling/callConnections/{id}/participants            200     {"value": [CallParticipant]}
POST   /calling/recordings                       (start)     200     RecordingStateResponse
GET    /calling/recordings/{id}                              200     RecordingStateResponse
DELETE /calling/recordings/{id}                  (stop)      204
POST   /calling/recordings/{id}:pause | :resume              202
==========================================================  ======  =============================

What follows each request (callbacks, the media hook, state changes) is the
:class:`~transports.acs.peer.switchboard.Switchboard`'s. The app also serves the signer's
OpenID configuration and JWKS (``signer.routes()``), as ACS publishes its own.

Errors carry the service's ``CommunicationErrorResponse`` body, ``{"error": {"code",
"message"}}``: 401 for a bad signature, 404 for an unknown or ended call or recording (and
an unknown path), 400 for a malformed body or a request the call's state does not allow.
A POST repeated with the same ``Repeatability-Request-ID`` (the SDK's retries) gets the
first answer again and is not acted on twice.

Every request must carry the HMAC-SHA256 signature the SDK computes from the access key
(``azure.communication.callautomation._shared.policy.HMACCredentialsPolicy``)::

    x-ms-content-sha256: base64(sha256(body))
    x-ms-date:           RFC 1123 date, within 15 minutes of now
    Authorization:       HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=<sig>
    sig = base64(hmac_sha256(base64decode(key), "POST\\n<path>?<query>\\n<date>;<host>;<hash>"))

A request without it, or with a wrong one, is refused with 401 and counted in ``refused``
(the reasons). Accepted answer requests are kept in ``answers`` (the parsed body).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from transports.acs.peer.callbacks import Delivery
from transports.acs.peer.calls import MediaOptions, PeerCall, raw_id_of
from transports.acs.peer.connect import MediaHook
from transports.acs.peer.signer import TokenSigner
from transports.acs.peer.switchboard import AcsError, Switchboard

__all__ = ["ANSWER_PATH", "AcsRestPeer", "Answer", "verify_hmac"]

logger = logging.getLogger(__name__)

ANSWER_PATH = "/calling/callConnections:answer"
SIGNED_HEADERS = "x-ms-date;host;x-ms-content-sha256"
#: How far x-ms-date may be from now, as the service allows.
MAX_CLOCK_SKEW_S = 15 * 60
#: How many POST answers are kept for repeated Repeatability-Request-IDs.
MAX_REMEMBERED = 1024

Handler = Callable[[Request, dict[str, Any]], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Answer:
    """One accepted answer request and the call connection id it was given."""

    call_connection_id: str
    body: dict[str, Any]

    @property
    def transport_url(self) -> str | None:
        """Where the caller's media was asked to stream."""
        options = self.body.get("mediaStreamingOptions") or {}
        url = options.get("transportUrl")
        return url if isinstance(url, str) else None


def verify_hmac(key: bytes, method: str, path_and_query: str, headers: dict[str, str], body: bytes,
                now: float) -> str | None:
    """Why the request's HMAC signature is not valid, or ``None`` if it is (pure).

    ``headers`` are lower-cased names; ``now`` is Unix time in seconds.
    """
    auth = headers.get("authorization", "")
    scheme, _, params = auth.partition(" ")
    if scheme != "HMAC-SHA256":
        return "no HMAC-SHA256 Authorization header"
    fields = dict(part.partition("=")[::2] for part in params.split("&"))
    if fields.get("SignedHeaders") != SIGNED_HEADERS:
        return f"SignedHeaders must be {SIGNED_HEADERS}, got {fields.get('SignedHeaders')!r}"
    date, host = headers.get("x-ms-date", ""), headers.get("host", "")
    content_hash = headers.get("x-ms-content-sha256", "")
    if not (date and host and content_hash):
        return "x-ms-date, host and x-ms-content-sha256 are all required"
    if content_hash != base64.b64encode(hashlib.sha256(body).digest()).decode():
        return "x-ms-content-sha256 does not match the body"
    try:
        skew = abs(parsedate_to_datetime(date).timestamp() - now)
    except (TypeError, ValueError):
        return f"x-ms-date is not an RFC 1123 date: {date!r}"
    if skew > MAX_CLOCK_SKEW_S:
        return f"x-ms-date is {skew:.0f} s from now (at most {MAX_CLOCK_SKEW_S} s)"
    string_to_sign = f"{method.upper()}\n{path_and_query}\n{date};{host};{content_hash}"
    expected = base64.b64encode(hmac.new(key, string_to_sign.encode(), hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected.encode(), fields.get("Signature", "").encode()):
        return "the signature does not match"
    return None




class AcsRestPeer:
    """The endpoint (see module docstring). ``key`` is the base64 access key, as in a
    connection string; ``resource_id`` the resource's immutable id (the ``aud`` of the
    tokens it signs; a new uuid if not given); ``media`` the media hook of answered and
    created calls; ``retry_delays`` the callback retry schedule; ``grace_s`` how long a
    media hook may take to close after a hang-up; ``extra_routes`` are served too (the
    standalone peer's control routes, ``app.py``).

    ``app`` is the Starlette application (its lifespan closes the peer; without a lifespan,
    call :meth:`aclose`). ``switchboard`` holds the calls; ``answers`` and ``refused``
    record requests; ``deliveries`` the callbacks posted.
    """

    def __init__(self, key: str, *, resource_id: str | None = None, signer: TokenSigner | None = None,
                 media: MediaHook | None = None, retry_delays: tuple[float, ...] = (0.5, 2.0, 8.0),
                 grace_s: float = 2.0, extra_routes: Sequence[BaseRoute] = ()) -> None:
        try:
            self._secret = base64.b64decode(key, validate=True)
        except binascii.Error:
            raise ValueError("the access key must be base64, as in an ACS connection string") from None
        self.resource_id = resource_id or str(uuid.uuid4())
        self.signer = signer or TokenSigner()
        self.switchboard = Switchboard(self.signer, self.resource_id, media=media, retry_delays=retry_delays,
                                       grace_s=grace_s)
        self.answers: list[Answer] = []
        self.refused: list[str] = []
        self._remembered: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        routes = [
            Route(ANSWER_PATH, self._endpoint(self._answer), methods=["POST"]),
            Route("/calling/callConnections", self._endpoint(self._create), methods=["POST"]),
            Route("/calling/callConnections/{target}", self._endpoint(self._call), methods=["GET", "DELETE", "POST"]),
            Route("/calling/callConnections/{target}/participants", self._endpoint(self._participants),
                  methods=["GET"]),
            Route("/calling/recordings", self._endpoint(self._start_recording), methods=["POST"]),
            Route("/calling/recordings/{target}", self._endpoint(self._recording), methods=["GET", "DELETE", "POST"]),
            *self.signer.routes(),
            *extra_routes,
        ]

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await self.aclose()

        self.app = Starlette(routes=routes, lifespan=lifespan,
                             exception_handlers={HTTPException: self._http_error})

    @property
    def deliveries(self) -> list[Delivery]:
        """Every callback queued, in order, with the status of each attempt."""
        return self.switchboard.poster.deliveries

    async def hang_up_from_caller(self, call_connection_id: str) -> None:
        """The far end hangs up the call (see :meth:`Switchboard.hang_up_from_caller`)."""
        await self.switchboard.hang_up_from_caller(call_connection_id)

    async def drain(self) -> None:
        """Wait until the callbacks queued so far were delivered or given up."""
        await self.switchboard.drain()

    async def aclose(self) -> None:
        """End the peer's tasks (media hooks, callbacks) and close its HTTP session."""
        await self.switchboard.aclose()

    # --- the request wrapper ------------------------------------------------------------------

    def _endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the HMAC check, ``api-version``, JSON parsing and repeatability."""

        async def endpoint(request: Request) -> Response:
            body = await request.body()
            path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
            query = request.scope.get("query_string", b"").decode("latin-1")
            why = verify_hmac(self._secret, request.method, f"{path}?{query}" if query else path,
                              {k.lower(): v for k, v in request.headers.items()}, body, time.time())
            if why is not None:
                self.refused.append(why)
                logger.warning("refused %s %s: %s", request.method, path, why)
                return _error(401, "Denied", f"Denied by the HMAC check: {why}")
            if "api-version" not in request.query_params:
                return _error(400, "BadRequest", "api-version is required")
            repeat = request.headers.get("repeatability-request-id") if request.method == "POST" else None
            if repeat is not None and repeat in self._remembered:
                status, content = self._remembered[repeat]
                return Response(content, status_code=status, media_type="application/json" if content else None)
            try:
                parsed = json.loads(body) if body else {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                return _error(400, "BadRequest", "the body is not JSON")
            if not isinstance(parsed, dict):
                return _error(400, "BadRequest", "the body must be a JSON object")
            try:
                response = await handler(request, parsed)
            except AcsError as exc:
                response = _error(exc.status, exc.code, exc.message)
            except ValueError as exc:  # a malformed field (calls.bad_request)
                response = _error(400, "BadRequest", str(exc))
            if repeat is not None:
                self._remembered[repeat] = (response.status_code, bytes(response.body))
                while len(self._remembered) > MAX_REMEMBERED:
                    self._remembered.popitem(last=False)
            return response

        return endpoint

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, "NotFound" if exc.status_code == 404 else "BadRequest",
                      f"{request.method} {request.url.path}: {exc.detail}")

    # --- call connections ---------------------------------------------------------------------

    def _connected_later(self, call: PeerCall, status: int) -> Response:
        """The call's properties now; it connects once the response is out, as ACS's does."""
        return JSONResponse(call.properties(), status_code=status,
                            background=BackgroundTask(self.switchboard.connect, call))

    async def _answer(self, request: Request, body: dict[str, Any]) -> Response:
        context, callback = body.get("incomingCallContext"), body.get("callbackUri")
        if not isinstance(context, str) or not isinstance(callback, str):
            raise AcsError(400, "BadRequest", "incomingCallContext and callbackUri are required")
        call = self.switchboard.answer(incoming_call_context=context, callback_uri=_callback(callback),
                                       media=MediaOptions.parse(body.get("mediaStreamingOptions")),
                                       operation_context=_optional_text(body, "operationContext"))
        self.answers.append(Answer(call_connection_id=call.call_connection_id, body=body))
        return self._connected_later(call, 200)

    async def _create(self, request: Request, body: dict[str, Any]) -> Response:
        targets, callback = body.get("targets"), body.get("callbackUri")
        if not isinstance(callback, str):
            raise AcsError(400, "BadRequest", "callbackUri is required")
        if not isinstance(targets, list) or len(targets) != 1:
            raise AcsError(400, "BadRequest", "targets must list exactly one participant (group calls: not here)")
        caller_id = body.get("sourceCallerIdNumber")
        source_caller_id = raw_id_of({"phoneNumber": caller_id}, "sourceCallerIdNumber")[2:] if caller_id else None
        call = self.switchboard.create(target=raw_id_of(targets[0], "targets[0]"), callback_uri=_callback(callback),
                                       media=MediaOptions.parse(body.get("mediaStreamingOptions")),
                                       operation_context=_optional_text(body, "operationContext"),
                                       source_caller_id=source_caller_id)
        return self._connected_later(call, 201)

    async def _call(self, request: Request, body: dict[str, Any]) -> Response:
        call_id, _, action = request.path_params["target"].partition(":")
        match (request.method, action):
            case ("GET", ""):
                return JSONResponse(self.switchboard.get(call_id).properties())
            case ("DELETE", "") | ("POST", "terminate"):
                self.switchboard.hang_up(call_id)
                return Response(status_code=204)
            case ("POST", "transferToParticipant"):
                context = _optional_text(body, "operationContext")
                callback = _optional_text(body, "operationCallbackUri")
                self.switchboard.transfer(call_id, target=raw_id_of(body.get("targetParticipant"), "targetParticipant"),
                                          operation_context=context,
                                          operation_callback_uri=_callback(callback) if callback else None)
                return JSONResponse({"operationContext": context} if context is not None else {}, status_code=202)
        raise AcsError(404, "NotFound", f"{request.method} {request.url.path} is not an operation of this service")

    async def _participants(self, request: Request, body: dict[str, Any]) -> Response:
        return JSONResponse({"value": self.switchboard.live(request.path_params["target"]).participants()})

    # --- recordings ---------------------------------------------------------------------------

    async def _start_recording(self, request: Request, body: dict[str, Any]) -> Response:
        call_id = body.get("callConnectionId")
        if not isinstance(call_id, str):
            locator = body.get("callLocator")
            server_call_id = locator.get("serverCallId") if isinstance(locator, dict) else None
            matches = [c for c in self.switchboard.calls.values() if c.server_call_id == server_call_id]
            if not matches:
                raise AcsError(404 if server_call_id else 400, "NotFound" if server_call_id else "BadRequest",
                               "callConnectionId or callLocator.serverCallId of a live call is required")
            call_id = matches[-1].call_connection_id
        callback = _optional_text(body, "recordingStateCallbackUri")
        recording = self.switchboard.start_recording(call_id, callback_uri=_callback(callback) if callback else None,
                                                     paused=body.get("pauseOnStart") is True)
        return JSONResponse(recording.properties())

    async def _recording(self, request: Request, body: dict[str, Any]) -> Response:
        recording_id, _, action = request.path_params["target"].partition(":")
        match (request.method, action):
            case ("GET", ""):
                return JSONResponse(self.switchboard.recording(recording_id).properties())
            case ("DELETE", ""):
                self.switchboard.stop_recording(recording_id)
                return Response(status_code=204)
            case ("POST", "pause" | "resume"):
                self.switchboard.pause_recording(recording_id, pause=action == "pause")
                return Response(status_code=202)
        raise AcsError(404, "NotFound", f"{request.method} {request.url.path} is not an operation of this service")


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value


def _callback(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"a callback URI must be an http(s) URL, got {url!r:.80}")
    return url


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
