"""Who may call us: ACS-signed JWTs on callbacks and on the media WebSocket upgrade.

Every callback request and media socket upgrade from ACS carries an RS256 JWT in the
``Authorization: Bearer`` header. :class:`RequestVerifier` is what the routes need of a
verifier; a refusal is an :class:`AuthError` carrying the HTTP status and a reason for the
log line (never shown to the client, never a traceback):

* **401**: the request's credentials are not valid: no or garbled header, an algorithm
  other than RS256 (``alg: none``, HS256, ... refused before any key is looked up), a
  wrong signature, expired or not yet valid, wrong audience or issuer, a key id unknown
  even after refetching the keys, or a replayed token.
* **503**: we cannot tell. The signing keys cannot be fetched (the OpenID configuration
  or JWKS endpoint is unreachable or answers garbage), or ``VOICEGRAPH_ACS_AUDIENCE`` is
  not set. The request may be genuine, the fault is ours, and a 5xx says so to ACS and to
  monitoring; a 401 would blame the caller.

:class:`AcsJwtVerifier` checks tokens as ACS documents them: issuer
``https://acscallautomation.communication.azure.com``, audience the ACS resource's
immutable id, keys from the OpenID configuration's ``jwks_uri``, fetched with aiohttp
(never blocking the loop) and cached. An unknown ``kid`` refetches the keys (ACS rotated
them), at most once per ``refetch_interval_s`` so a flood of made-up key ids cannot make
us hammer the JWKS endpoint, and concurrent misses share one fetch. ACS mints a new token
for every callback and every media connection, so a token presented twice while still
valid is a replay and refused (by its ``jti``, or the token's hash if it has none).

Configuration (environment), read by :func:`verifier_from_env`: ``VOICEGRAPH_ACS_AUDIENCE``
(the tokens' ``aud``), ``VOICEGRAPH_ACS_OPENID_URL`` (defaults to ACS's own OpenID
configuration; the local peer serves one), and ``VOICEGRAPH_ACS_NO_AUTH=1``, the
development switch that turns every check off (:class:`NoAuth`, logged as a warning; the
routes also skip their per-call token check for it).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp
import jwt

__all__ = [
    "ACS_ISSUER",
    "AUDIENCE_ENV",
    "DEFAULT_OPENID_URL",
    "NO_AUTH_ENV",
    "OPENID_URL_ENV",
    "AcsJwtVerifier",
    "AuthError",
    "NoAuth",
    "RequestVerifier",
    "verifier_from_env",
]

logger = logging.getLogger(__name__)

AUDIENCE_ENV = "VOICEGRAPH_ACS_AUDIENCE"
OPENID_URL_ENV = "VOICEGRAPH_ACS_OPENID_URL"
NO_AUTH_ENV = "VOICEGRAPH_ACS_NO_AUTH"

#: The ``iss`` of every token ACS signs.
ACS_ISSUER = "https://acscallautomation.communication.azure.com"
#: Where ACS publishes its OpenID configuration (whose ``jwks_uri`` lists the signing keys).
DEFAULT_OPENID_URL = f"{ACS_ISSUER}/calling/.well-known/acsopenidconfiguration"

_ALGORITHM = "RS256"
_MAX_TOKEN = 8192  # ACS tokens are ~1 KB; a longer header is garbage we need not parse
_MAX_DOCUMENT = 1 << 20  # an OpenID configuration or JWKS larger than this is not one


class AuthError(Exception):
    """A request refused: ``status`` (401 or 503, see module docstring) and ``reason`` (for
    the log, not the client)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RequestVerifier(Protocol):
    """Checks the ``Authorization`` header of one request from ACS."""

    async def verify(self, authorization: str | None) -> Mapping[str, Any]:
        """The token's claims; raises :class:`AuthError` if the request is not from ACS."""
        ...


class NoAuth:
    """The development switch (``VOICEGRAPH_ACS_NO_AUTH=1``): every request is admitted.

    Routes recognise it (``isinstance``) and skip their per-call token checks too.
    """

    async def verify(self, authorization: str | None) -> Mapping[str, Any]:
        """No claims, no checks."""
        return {}

    async def aclose(self) -> None:
        """Nothing to release."""


def _short(value: object, limit: int = 64) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


class AcsJwtVerifier:
    """Verifies ACS's RS256 JWTs against its published keys (see module docstring).

    Args:
        audience: the ACS resource's immutable id; ``None`` refuses every request (503).
        openid_url: the OpenID configuration document whose ``jwks_uri`` lists the keys.
        issuer: the required ``iss``.
        leeway_s: clock skew tolerated on ``exp``/``nbf``/``iat`` (ACS's clock and ours).
        refetch_interval_s: the least time between two key fetches caused by unknown key ids.
        fetch_timeout_s: bound on fetching both documents.
        clock: monotonic seconds, for the refetch rate limit.
        wall: Unix seconds, for forgetting replayed tokens once expired.
    """

    def __init__(
        self,
        audience: str | None,
        *,
        openid_url: str = DEFAULT_OPENID_URL,
        issuer: str = ACS_ISSUER,
        leeway_s: float = 30.0,
        refetch_interval_s: float = 10.0,
        fetch_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.audience = audience or None
        self.openid_url = openid_url
        self.issuer = issuer
        self.leeway_s = leeway_s
        self.refetch_interval_s = refetch_interval_s
        self.fetch_timeout_s = fetch_timeout_s
        self._clock = clock
        self._wall = wall
        self._keys: dict[str, jwt.PyJWK] = {}
        self._jwks_uri: str | None = None
        self._fetched_at: float | None = None  # last fetch attempt (success or not)
        self._fetch_error: str | None = None  # why the last fetch failed
        self._generation = 0  # bumped as each fetch attempt ends: waiters see that one happened
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self._seen: dict[str, float] = {}  # replay guard: token id -> exp (Unix s)
        self._expiry: list[tuple[float, str]] = []  # the same, as a heap, to forget the expired
        #: Key fetches attempted (the OpenID configuration and JWKS, counted once).
        self.fetches = 0

    async def verify(self, authorization: str | None) -> Mapping[str, Any]:
        """The claims of the request's valid, fresh ACS token; :class:`AuthError` otherwise."""
        if self.audience is None:
            raise AuthError(503, f"{AUDIENCE_ENV} is not set: ACS tokens cannot be checked; set it to the ACS "
                                 f"resource's immutable id (or {NO_AUTH_ENV}=1 for local development)")
        token = _bearer(authorization)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, f"garbled token: {exc}") from None
        alg = header.get("alg")
        if alg != _ALGORITHM:  # before any key lookup: 'none' and HMAC never get near a key
            raise AuthError(401, f"token signed with alg {_short(alg)}; only {_ALGORITHM} is accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError(401, "token has no key id (kid)")
        key = await self._key(kid)
        claims = self._decode(token, key)
        self._refuse_replay(token, claims)
        return claims

    async def aclose(self) -> None:
        """Close the HTTP session used to fetch the keys."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- claims -------------------------------------------------------------------------

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=[_ALGORITHM], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway_s, options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "token not yet valid (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise AuthError(401, f"token for another audience (expected {self.audience})") from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, f"token from another issuer (expected {self.issuer})") from None
        except jwt.InvalidSignatureError:
            raise AuthError(401, "token signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(401, f"token lacks a required claim: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, f"invalid token: {exc}") from None
        return claims

    def _refuse_replay(self, token: str, claims: Mapping[str, Any]) -> None:
        now = self._wall()
        while self._expiry and self._expiry[0][0] < now - self.leeway_s:  # expired: refused anyway
            _, old = heapq.heappop(self._expiry)
            self._seen.pop(old, None)
        jti = claims.get("jti")
        ident = f"jti:{jti}" if isinstance(jti, str) and jti else "sha256:" + hashlib.sha256(token.encode()).hexdigest()
        if ident in self._seen:
            raise AuthError(401, f"replayed token ({ident[:48]}): ACS signs each request anew")
        exp = float(claims["exp"])
        self._seen[ident] = exp
        heapq.heappush(self._expiry, (exp, ident))

    # --- keys ---------------------------------------------------------------------------

    async def _key(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is not None:
            return key
        generation = self._generation
        async with self._lock:
            if self._generation == generation:  # nobody fetched while we waited: our turn
                since = None if self._fetched_at is None else self._clock() - self._fetched_at
                if since is None or since >= self.refetch_interval_s:
                    await self._refresh()
                elif self._fetch_error is None:
                    raise AuthError(401, f"unknown signing key id {_short(kid)} (keys fetched {since:.1f} s ago)")
            key = self._keys.get(kid)
        if key is not None:
            return key
        if self._fetch_error is not None:
            raise AuthError(503, f"cannot fetch ACS's signing keys: {self._fetch_error}")
        raise AuthError(401, f"unknown signing key id {_short(kid)}, also after refetching the keys")

    async def _refresh(self) -> None:
        """Fetch the keys (called under the lock); a failure keeps the keys we had."""
        self._fetched_at = self._clock()
        self.fetches += 1
        try:
            await self._fetch()
        finally:
            self._generation += 1

    async def _fetch(self) -> None:
        try:
            async with asyncio.timeout(self.fetch_timeout_s):
                if self._jwks_uri is None:
                    config = await self._get_json(self.openid_url)
                    uri = config.get("jwks_uri")
                    if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                        raise ValueError(f"the OpenID configuration at {self.openid_url} has no jwks_uri")
                    self._jwks_uri = uri
                keys = _parse_jwks(await self._get_json(self._jwks_uri))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._jwks_uri = None  # the configuration may have moved it: read it again next time
            self._fetch_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            logger.warning("ACS signing keys: fetch from %s failed: %s", self.openid_url, self._fetch_error)
            return
        self._fetch_error = None
        added = sorted(set(keys) - set(self._keys))
        self._keys = keys
        logger.info("ACS signing keys: %d from %s (new: %s)", len(keys), self._jwks_uri, ", ".join(added) or "none")

    async def _get_json(self, url: str) -> dict[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        async with self._http.get(url, headers={"Accept": "application/json"}) as response:
            if response.status != 200:
                raise ValueError(f"GET {url}: HTTP {response.status}")
            body = await response.content.read(_MAX_DOCUMENT + 1)
        if len(body) > _MAX_DOCUMENT:
            raise ValueError(f"GET {url}: more than {_MAX_DOCUMENT} bytes")
        document = json.loads(body)  # a JSONDecodeError is a ValueError
        if not isinstance(document, dict):
            raise ValueError(f"GET {url}: not a JSON object")
        return document


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError(401, "no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(401, "the Authorization header is not 'Bearer <token>'")
    if len(token) > _MAX_TOKEN:
        raise AuthError(401, f"token longer than {_MAX_TOKEN} characters")
    return token


def _parse_jwks(document: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    """The RS256 signing keys of a JWKS, by kid; keys of other kinds or uses are skipped."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("the JWKS has no 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or entry.get("alg", _ALGORITHM) != _ALGORITHM:
            continue
        try:
            keys[kid] = jwt.PyJWK(entry, algorithm=_ALGORITHM)
        except jwt.PyJWKError as exc:
            logger.warning("ACS signing keys: skipping key %s: %s", _short(kid), exc)
    if not keys:
        raise ValueError("the JWKS lists no RS256 signing key")
    return keys


def verifier_from_env(environ: Mapping[str, str] | None = None) -> AcsJwtVerifier | NoAuth:
    """The verifier the environment configures (see module docstring), with its warnings."""
    env = os.environ if environ is None else environ
    if env.get(NO_AUTH_ENV, "") == "1":
        logger.warning("%s=1: ACS REQUESTS ARE NOT AUTHENTICATED (no JWT, no per-call token): anyone who can "
                       "reach /acs/callbacks and /acs/media can drive calls. For local development only.",
                       NO_AUTH_ENV)
        return NoAuth()
    audience = env.get(AUDIENCE_ENV, "").strip()
    if not audience:
        logger.warning("%s is not set: every ACS callback and media connection will be refused (503) until it "
                       "is set to the ACS resource's immutable id (or %s=1 for local development)",
                       AUDIENCE_ENV, NO_AUTH_ENV)
    return AcsJwtVerifier(audience or None, openid_url=env.get(OPENID_URL_ENV, "").strip() or DEFAULT_OPENID_URL)
