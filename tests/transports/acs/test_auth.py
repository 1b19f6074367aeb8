"""AcsJwtVerifier against a TokenSigner served on a real local server (uvicorn, port 0):
valid tokens pass; expired, not yet valid, wrong audience, issuer or signature, missing or
garbled headers, ``alg: none`` and HS256 are refused with 401 (the last two before any key
is fetched); replays are refused; keys are cached, refetched on rotation, and a flood of
unknown key ids costs one fetch per interval; unreachable keys and a missing audience are
503; the environment switches."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from transports.acs.auth import (
    DEFAULT_OPENID_URL,
    AcsJwtVerifier,
    AuthError,
    NoAuth,
    verifier_from_env,
)
from transports.acs.peer.signer import OPENID_PATH, TokenSigner

AUDIENCE = "resource-0b5c4a7e"


class Monotonic:
    """The verifier's rate-limit clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Keys:
    signer: TokenSigner
    url: str  # the OpenID configuration's URL
    clock: Monotonic

    def verifier(self, **kwargs: Any) -> AcsJwtVerifier:
        return AcsJwtVerifier(AUDIENCE, openid_url=self.url, clock=self.clock, **kwargs)


async def serve(app: Starlette) -> AsyncIterator[str]:
    # Listening before the server starts: connections wait in the backlog, no readiness signal needed.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def keys() -> AsyncIterator[Keys]:
    signer = TokenSigner()
    async for base in serve(Starlette(routes=signer.routes())):
        yield Keys(signer, base + OPENID_PATH, Monotonic())


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def refusal(verifier: AcsJwtVerifier, authorization: str | None) -> tuple[int, str]:
    with pytest.raises(AuthError) as info:
        await verifier.verify(authorization)
    return info.value.status, info.value.reason


async def test_a_valid_token_passes_and_the_keys_are_fetched_once(keys: Keys) -> None:
    verifier = keys.verifier()
    try:
        claims = await verifier.verify(bearer(keys.signer.mint(AUDIENCE, callId="c-1")))
        assert claims["aud"] == AUDIENCE and claims["iss"] == "https://acscallautomation.communication.azure.com"
        assert claims["callId"] == "c-1"
        for _ in range(5):  # each request carries a new token; the keys come from the cache
            await verifier.verify(f"bearer  {keys.signer.mint(AUDIENCE)} ")  # scheme is case-insensitive
        assert (verifier.fetches, keys.signer.jwks_fetches) == (1, 1)
    finally:
        await verifier.aclose()


async def test_bad_tokens_are_refused_with_401(keys: Keys) -> None:
    signer = keys.signer
    now = time.time()
    impostor = TokenSigner()  # another key, claiming the real key's id
    cases = {
        "expired": (signer.mint(AUDIENCE, now=now - 3600, lifetime_s=300), "token expired"),
        "not yet valid": (signer.mint(AUDIENCE, now=now + 3600), "token not yet valid"),
        "wrong audience": (signer.mint("another-resource"), f"token for another audience (expected {AUDIENCE})"),
        "wrong issuer": (signer.mint(AUDIENCE, iss="https://login.example.com"),
                         "token from another issuer (expected https://acscallautomation.communication.azure.com)"),
        "wrong signature": (impostor.mint(AUDIENCE, headers={"kid": signer.kid}), "token signature does not verify"),
        "no exp": (signer.mint(AUDIENCE, exp=None), "token lacks a required claim"),
        "unknown kid": (impostor.mint(AUDIENCE), f"unknown signing key id '{impostor.kid}', also after refetching"),
    }
    verifier = keys.verifier()
    try:
        for name, (token, reason) in cases.items():
            keys.clock.now += 60  # past the refetch interval: the unknown kid refetches
            status, why = await refusal(verifier, bearer(token))
            assert (status, why.startswith(reason)) == (401, True), (name, why)
        assert keys.signer.jwks_fetches == 2  # the first fetch, and one more for the unknown kid
    finally:
        await verifier.aclose()


async def test_missing_garbled_none_and_hmac_tokens_are_refused_before_any_key_lookup(keys: Keys) -> None:
    signer = keys.signer
    claims = {"iss": signer.issuer, "aud": AUDIENCE, "exp": int(time.time()) + 300, "jti": uuid.uuid4().hex}
    alg_none = f"{b64url({'alg': 'none', 'typ': 'JWT', 'kid': signer.kid})}.{b64url(claims)}."
    hs256 = jwt.encode(claims, "a-shared-secret-of-32-bytes-or-more!", algorithm="HS256", headers={"kid": signer.kid})
    cases = [
        (None, "no Authorization header"),
        ("", "no Authorization header"),
        (f"Basic {signer.mint(AUDIENCE)}", "the Authorization header is not 'Bearer <token>'"),
        ("Bearer ", "the Authorization header is not 'Bearer <token>'"),
        ("Bearer not.a.token", "garbled token: "),
        ("Bearer " + "a" * 9000, "token longer than 8192 characters"),
        (bearer(alg_none), "token signed with alg 'none'; only RS256 is accepted"),
        (bearer(hs256), "token signed with alg 'HS256'; only RS256 is accepted"),
        (bearer(f"{b64url({'alg': 'RS256'})}.{b64url(claims)}.c2ln"), "token has no key id (kid)"),
    ]
    verifier = keys.verifier()
    try:
        for authorization, reason in cases:
            status, why = await refusal(verifier, authorization)
            assert (status, why.startswith(reason)) == (401, True), (authorization, why)
        assert (verifier.fetches, signer.jwks_fetches) == (0, 0)
    finally:
        await verifier.aclose()


async def test_a_token_presented_twice_is_a_replay(keys: Keys) -> None:
    verifier = keys.verifier()
    try:
        token = keys.signer.mint(AUDIENCE)
        await verifier.verify(bearer(token))
        status, why = await refusal(verifier, bearer(token))
        assert status == 401 and why.startswith("replayed token (jti:")
        claims = {"iss": keys.signer.issuer, "aud": AUDIENCE, "exp": int(time.time()) + 300}
        anonymous = jwt.encode(claims, keys.signer._key, algorithm="RS256", headers={"kid": keys.signer.kid})
        # no jti: the token's hash identifies it
        await verifier.verify(bearer(anonymous))
        status, why = await refusal(verifier, bearer(anonymous))
        assert status == 401 and why.startswith("replayed token (sha256:")
        await verifier.verify(bearer(keys.signer.mint(AUDIENCE)))  # a fresh token is fine
    finally:
        await verifier.aclose()


async def test_the_replay_guard_forgets_expired_tokens() -> None:
    wall = [1_000_000.0]
    verifier = AcsJwtVerifier(AUDIENCE, wall=lambda: wall[0], leeway_s=30)
    for i in range(100):
        verifier._refuse_replay(f"t{i}", {"jti": f"j{i}", "exp": 1_000_000 + i})
    wall[0] = 1_000_000 + 50 + 30.5  # j0..j50 expired more than the leeway ago
    verifier._refuse_replay("new", {"jti": "new", "exp": 1_000_300})
    assert len(verifier._seen) == 100 - 51 + 1 and "jti:j50" not in verifier._seen and "jti:j51" in verifier._seen


async def test_clock_skew_within_the_leeway_is_tolerated(keys: Keys) -> None:
    verifier = keys.verifier(leeway_s=30)
    try:
        now = time.time()
        await verifier.verify(bearer(keys.signer.mint(AUDIENCE, now=now - 310, lifetime_s=300)))  # expired 10 s ago
        await verifier.verify(bearer(keys.signer.mint(AUDIENCE, now=now + 10)))  # issued 10 s ahead of us
        status, why = await refusal(verifier, bearer(keys.signer.mint(AUDIENCE, now=now - 360, lifetime_s=300)))
        assert (status, why) == (401, "token expired")
    finally:
        await verifier.aclose()


async def test_a_rotated_key_is_fetched_on_its_first_token(keys: Keys) -> None:
    verifier = keys.verifier()
    try:
        await verifier.verify(bearer(keys.signer.mint(AUDIENCE)))
        old_token = keys.signer.mint(AUDIENCE)
        keys.clock.now += 60  # rotations are rare; the rate limit allows a refetch
        keys.signer.rotate()
        await verifier.verify(bearer(keys.signer.mint(AUDIENCE)))
        await verifier.verify(bearer(old_token))  # the old key is still published: still valid
        assert (verifier.fetches, keys.signer.jwks_fetches) == (2, 2)
    finally:
        await verifier.aclose()


async def test_concurrent_misses_share_one_fetch(keys: Keys) -> None:
    verifier = keys.verifier()
    try:
        tokens = [keys.signer.mint(AUDIENCE) for _ in range(20)]
        results = await asyncio.gather(*(verifier.verify(bearer(t)) for t in tokens))
        assert len({r["jti"] for r in results}) == 20
        assert keys.signer.jwks_fetches == 1
    finally:
        await verifier.aclose()


async def test_a_flood_of_unknown_key_ids_costs_one_fetch_per_interval(keys: Keys) -> None:
    verifier = keys.verifier(refetch_interval_s=10)
    signer = keys.signer

    def forged() -> str:
        return signer.mint(AUDIENCE, headers={"kid": uuid.uuid4().hex})

    try:
        await verifier.verify(bearer(signer.mint(AUDIENCE)))  # the cache is warm
        keys.clock.now += 10
        first = await asyncio.gather(*(refusal(verifier, bearer(forged())) for _ in range(50)))
        assert signer.jwks_fetches == 2  # fifty misses, one refetch
        assert all(s == 401 and "also after refetching" in w for s, w in first)
        keys.clock.now += 9.9
        second = await asyncio.gather(*(refusal(verifier, bearer(forged())) for _ in range(50)))
        assert signer.jwks_fetches == 2  # within the interval: no refetch at all
        assert all(s == 401 and "(keys fetched 9.9 s ago)" in w for s, w in second)
        await verifier.verify(bearer(signer.mint(AUDIENCE)))  # genuine tokens still pass
    finally:
        await verifier.aclose()


async def test_unreachable_keys_are_503_and_retried_at_most_once_per_interval(
        keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="transports.acs.auth")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    verifier = AcsJwtVerifier(AUDIENCE, openid_url=f"http://127.0.0.1:{port}{OPENID_PATH}", clock=keys.clock)
    try:
        for _ in range(3):
            status, why = await refusal(verifier, bearer(keys.signer.mint(AUDIENCE)))
            assert status == 503 and why.startswith("cannot fetch ACS's signing keys: ClientConnectorError")
        assert verifier.fetches == 1  # the next attempts waited for the interval
        assert len([r for r in caplog.records if "fetch from" in r.getMessage()]) == 1
        assert all(r.exc_info is None for r in caplog.records)
    finally:
        await verifier.aclose()


async def test_garbage_key_documents_are_503(keys: Keys) -> None:
    async def openid(request: Any) -> PlainTextResponse:
        return PlainTextResponse("<html>maintenance</html>", status_code=200)

    async def broken(request: Any) -> PlainTextResponse:
        return PlainTextResponse("oops", status_code=500)

    app = Starlette(routes=[Route("/garbage", openid), Route("/broken", broken)])
    async for base in serve(app):
        for path, reason in (("/garbage", "JSONDecodeError"), ("/broken", "ValueError: GET " + base + "/broken: HTTP 500")):
            verifier = AcsJwtVerifier(AUDIENCE, openid_url=base + path)
            try:
                status, why = await refusal(verifier, bearer(keys.signer.mint(AUDIENCE)))
                assert status == 503 and reason in why, why
            finally:
                await verifier.aclose()


async def test_without_an_audience_every_request_is_refused_with_503(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="transports.acs.auth")
    verifier = verifier_from_env({})
    assert isinstance(verifier, AcsJwtVerifier) and verifier.openid_url == DEFAULT_OPENID_URL
    assert [r.getMessage() for r in caplog.records] == [
        "VOICEGRAPH_ACS_AUDIENCE is not set: every ACS callback and media connection will be refused (503) until "
        "it is set to the ACS resource's immutable id (or VOICEGRAPH_ACS_NO_AUTH=1 for local development)"]
    status, why = await refusal(verifier, bearer(TokenSigner().mint(AUDIENCE)))
    assert status == 503 and why.startswith("VOICEGRAPH_ACS_AUDIENCE is not set")
    assert verifier.fetches == 0


async def test_the_environment_configures_the_verifier(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="transports.acs.auth")
    verifier = verifier_from_env({"VOICEGRAPH_ACS_AUDIENCE": AUDIENCE, "VOICEGRAPH_ACS_OPENID_URL": "http://peer/x"})
    assert isinstance(verifier, AcsJwtVerifier)
    assert (verifier.audience, verifier.openid_url) == (AUDIENCE, "http://peer/x")
    assert caplog.records == []
    off = verifier_from_env({"VOICEGRAPH_ACS_NO_AUTH": "1", "VOICEGRAPH_ACS_AUDIENCE": AUDIENCE})
    assert isinstance(off, NoAuth) and await off.verify(None) == {}
    assert ["NOT AUTHENTICATED" in r.getMessage() for r in caplog.records] == [True]
