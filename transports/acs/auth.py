"""Who may call us: ACS-signed JWTs on callbacks and on the media WebSocket upgrade.

(Interface first; the verifier lands with issue 13's security work.)

Every callback request and media socket upgrade from ACS carries an RS256 JWT in the
``Authorization: Bearer`` header. :class:`RequestVerifier` is what the routes need of a
verifier; a refusal is an :class:`AuthError` carrying the HTTP status (401: no valid
credentials; 403: valid but not allowed) and a reason for the log line. Never a traceback.

Configuration (environment): ``VOICEGRAPH_ACS_AUDIENCE`` (the ACS resource's immutable
id, the tokens' ``aud``), ``VOICEGRAPH_ACS_OPENID_URL`` (defaults to ACS's own OpenID
configuration; the local peer serves one), and ``VOICEGRAPH_ACS_NO_AUTH=1``, the
development switch that turns every check off (logged as a warning).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["AUDIENCE_ENV", "NO_AUTH_ENV", "OPENID_URL_ENV", "AuthError", "RequestVerifier"]

AUDIENCE_ENV = "VOICEGRAPH_ACS_AUDIENCE"
OPENID_URL_ENV = "VOICEGRAPH_ACS_OPENID_URL"
NO_AUTH_ENV = "VOICEGRAPH_ACS_NO_AUTH"


class AuthError(Exception):
    """A request refused: ``status`` (401 or 403) and ``reason`` (for the log, not the client)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RequestVerifier(Protocol):
    """Checks the ``Authorization`` header of one request from ACS."""

    async def verify(self, authorization: str | None) -> Mapping[str, Any]:
        """The token's claims; raises :class:`AuthError` if the request is not from ACS."""
        ...
