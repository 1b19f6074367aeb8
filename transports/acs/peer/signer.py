"""The local ACS's signing key: JWTs as Call Automation signs them, and the keys to check them.

ACS signs every callback request and every media WebSocket upgrade with an RS256 JWT in
the ``Authorization: Bearer`` header (issuer ``https://acscallautomation.communication.azure.com``,
audience the ACS resource's immutable id; a callback's token lives 5 minutes, a media
socket's 24 hours, and each request gets a new one). Receivers find the keys through the
OpenID configuration at ``/calling/.well-known/acsopenidconfiguration``, whose ``jwks_uri``
lists them.

:class:`TokenSigner` is that for tests and the local peer: an RSA key made at start (never
stored), tokens minted with it, and the two documents served by :meth:`routes` so a
verifier configured with the peer's OpenID URL finds the key exactly as it would find
ACS's. :meth:`rotate` makes a new key under a new ``kid`` (a verifier must refetch the keys
on an unknown ``kid``).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["ACS_ISSUER", "JWKS_PATH", "OPENID_PATH", "TokenSigner"]

#: The ``iss`` of every token ACS signs.
ACS_ISSUER = "https://acscallautomation.communication.azure.com"
OPENID_PATH = "/calling/.well-known/acsopenidconfiguration"
JWKS_PATH = "/calling/keys"


class TokenSigner:
    """An RSA signing key with its JWKS and OpenID configuration (see module docstring)."""

    def __init__(self, *, issuer: str = ACS_ISSUER) -> None:
        self.issuer = issuer
        self.kid = ""
        self._key: rsa.RSAPrivateKey | None = None
        #: Every key made, by kid, newest last: the JWKS lists them all (as a rotation would).
        self._public: dict[str, dict[str, Any]] = {}
        self.rotate()
        #: How many times the JWKS was fetched (a verifier caching it fetches rarely).
        self.jwks_fetches = 0

    def rotate(self) -> str:
        """Make a new key under a new ``kid`` and sign with it from now on; returns the kid."""
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex
        jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        self._public[self.kid] = jwk
        return self.kid

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set of the public keys."""
        return {"keys": list(self._public.values())}

    def openid_configuration(self, base_url: str) -> dict[str, Any]:
        """The OpenID configuration document, as served under ``base_url``."""
        return {"issuer": self.issuer, "jwks_uri": f"{base_url.rstrip('/')}{JWKS_PATH}",
                "id_token_signing_alg_values_supported": ["RS256"]}

    def mint(self, audience: str, *, lifetime_s: float = 300.0, now: float | None = None,
             headers: dict[str, Any] | None = None, **claims: Any) -> str:
        """A signed RS256 token for ``audience``, valid ``lifetime_s`` from ``now`` (Unix s).

        ``claims`` are added or override the standard ones (``iss``, ``aud``, ``iat``,
        ``nbf``, ``exp``, ``jti``); ``headers`` are added to the JOSE header.
        """
        assert self._key is not None
        issued = time.time() if now is None else now
        payload: dict[str, Any] = {"iss": self.issuer, "aud": audience, "iat": int(issued), "nbf": int(issued),
                                   "exp": int(issued + lifetime_s), "jti": uuid.uuid4().hex}
        payload.update(claims)
        return jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": self.kid, **(headers or {})})

    def routes(self) -> list[Route]:
        """``GET`` routes serving the OpenID configuration and the JWKS."""

        async def openid(request: Request) -> JSONResponse:
            return JSONResponse(self.openid_configuration(str(request.base_url)))

        async def keys(request: Request) -> JSONResponse:
            self.jwks_fetches += 1
            return JSONResponse(self.jwks())

        return [Route(OPENID_PATH, openid, methods=["GET"]), Route(JWKS_PATH, keys, methods=["GET"])]
