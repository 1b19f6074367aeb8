"""A local Call Automation REST endpoint that the real SDK can talk to.

Point ``CallAutomationClient("http://127.0.0.1:PORT", AzureKeyCredential(key))`` at it
(``from_connection_string`` forces https). It serves the answer request,
``POST /calling/callConnections:answer?api-version=...``, and answers 200 with the call's
``CallConnectionProperties`` (state ``connecting``), as ACS does.

Every request must carry the HMAC-SHA256 signature the SDK computes from the access key
(``azure.communication.callautomation._shared.policy.HMACCredentialsPolicy``)::

    x-ms-content-sha256: base64(sha256(body))
    x-ms-date:           RFC 1123 date, within 15 minutes of now
    Authorization:       HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=<sig>
    sig = base64(hmac_sha256(base64decode(key), "POST\\n<path>?<query>\\n<date>;<host>;<hash>"))

A request without it, or with a wrong one, is refused with 401 and the JSON error body of
the service (``{"error": {"code", "message"}}``), and counted in ``refused``. Accepted
answer requests are kept in ``answers`` (the parsed body) for tests to assert on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["ANSWER_PATH", "AcsRestPeer", "Answer", "verify_hmac"]

ANSWER_PATH = "/calling/callConnections:answer"
SIGNED_HEADERS = "x-ms-date;host;x-ms-content-sha256"
#: How far x-ms-date may be from now, as the service allows.
MAX_CLOCK_SKEW_S = 15 * 60


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
    """The endpoint (see module docstring); ``key`` is the base64 access key, as in a
    connection string. ``app`` is the Starlette application to serve; ``answers`` and
    ``refused`` (the reasons) record what came."""

    def __init__(self, key: str) -> None:
        try:
            self._secret = base64.b64decode(key, validate=True)
        except binascii.Error:
            raise ValueError("the access key must be base64, as in an ACS connection string") from None
        self.answers: list[Answer] = []
        self.refused: list[str] = []
        self.app = Starlette(routes=[Route(ANSWER_PATH, self._answer, methods=["POST"])])

    async def _answer(self, request: Request) -> JSONResponse:
        body = await request.body()
        path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        query = request.scope.get("query_string", b"").decode("latin-1")
        why = verify_hmac(self._secret, request.method, f"{path}?{query}" if query else path,
                          {k.lower(): v for k, v in request.headers.items()}, body, time.time())
        if why is not None:
            self.refused.append(why)
            return _error(401, "Denied", f"Denied by the HMAC check: {why}")
        if "api-version" not in request.query_params:
            return _error(400, "BadRequest", "api-version is required")
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _error(400, "BadRequest", "the body is not JSON")
        if not isinstance(parsed, dict) or not isinstance(parsed.get("incomingCallContext"), str) \
                or not isinstance(parsed.get("callbackUri"), str):
            return _error(400, "BadRequest", "incomingCallContext and callbackUri are required")
        answer = Answer(call_connection_id=str(uuid.uuid4()), body=parsed)
        self.answers.append(answer)
        return JSONResponse({
            "callConnectionId": answer.call_connection_id,
            "serverCallId": f"server-{answer.call_connection_id}",
            "callConnectionState": "connecting",
            "callbackUri": parsed["callbackUri"],
            "targets": [],
            "correlationId": str(uuid.uuid4()),
        })


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
