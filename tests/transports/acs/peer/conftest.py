"""Shared pieces of the local ACS's tests: servers on free ports and a callback receiver that
checks every token as our server would, with the keys fetched over HTTP from the peer."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from azure.communication.callautomation.aio import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from transports.acs.peer.connect import MediaHook
from transports.acs.peer.rest import AcsRestPeer
from transports.acs.peer.signer import ACS_ISSUER, OPENID_PATH

KEY = base64.b64encode(bytes(range(32))).decode()
RESOURCE_ID = "5f3c1a2e-8d4b-4c6f-9e7a-1b2c3d4e5f60"
WAIT_S = 10.0  # generous: conditions, never sleeps


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1 (lifespan on); yields its base URL."""
    # Listening before the server starts: connections wait in the backlog, no readiness signal needed.
    sock = socket.socket()
    # Accepted sockets inherit it: without, every response waits out Nagle + delayed ACK
    # (measured: 44 ms per request instead of 0.7 ms; uvicorn does not set it on given sockets).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Received:
    """One callback request as the receiver saw it."""

    path: str
    events: list[dict[str, Any]]
    claims: dict[str, Any]
    status: int

    @property
    def types(self) -> list[str]:
        return [str(e["type"]).rpartition(".")[2] for e in self.events]


@dataclass
class Receiver:
    """A webhook that verifies each request's JWT (RS256, aud, iss, exp) with the keys the
    peer publishes (OpenID configuration -> jwks_uri, fetched over HTTP once), records it,
    and answers with ``statuses`` in turn (then 200)."""

    peer_url: str
    audience: str
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    url: str = ""
    _jwks: jwt.PyJWKSet | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _keys(self) -> jwt.PyJWKSet:
        if self._jwks is None:
            async with httpx.AsyncClient() as http:
                openid = (await http.get(self.peer_url + OPENID_PATH)).json()
                self._jwks = jwt.PyJWKSet.from_dict((await http.get(openid["jwks_uri"])).json())
        return self._jwks

    async def handle(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            assert scheme == "Bearer", f"scheme {scheme!r}"
            kid = jwt.get_unverified_header(token)["kid"]
            claims = jwt.decode(token, (await self._keys())[kid].key, algorithms=["RS256"], audience=self.audience,
                                issuer=ACS_ISSUER, options={"require": ["exp", "iat", "aud", "iss"]})
        except (AssertionError, jwt.PyJWTError, KeyError) as exc:
            async with self._changed:
                self.refused.append(f"{type(exc).__name__}: {exc}")
                self._changed.notify_all()
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        assert request.headers["content-type"].startswith("application/json")
        status = self.statuses.pop(0) if self.statuses else 200
        async with self._changed:
            self.received.append(Received(request.url.path, json.loads(await request.body()), claims, status))
            self._changed.notify_all()
        return Response(status_code=status)

    async def wait_for(self, predicate: Callable[[Receiver], bool]) -> None:
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    def delivered(self, call_id: str | None = None) -> list[str]:
        """Types of the events answered 2xx, in arrival order (of one call, if given)."""
        return [t for r in self.received if 200 <= r.status < 300 for e, t in zip(r.events, r.types, strict=True)
                if call_id is None or e["data"]["callConnectionId"] == call_id]

    async def wait_delivered(self, count: int, call_id: str | None = None) -> list[str]:
        await self.wait_for(lambda r: len(r.delivered(call_id)) >= count)
        return self.delivered(call_id)


@dataclass
class Env:
    peer: AcsRestPeer
    peer_url: str
    receiver: Receiver
    client: CallAutomationClient

    @property
    def callback(self) -> str:
        return self.receiver.url + "/callbacks?token=per-call"


PeerFactory = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make_env() -> AsyncIterator[PeerFactory]:
    """Builds a peer (with ``media``, ``retry_delays``, ``grace_s``) on a free port, a
    receiver on another, and the real async SDK client pointed at the peer."""
    stack: list[Any] = []

    async def make(media: MediaHook | None = None, retry_delays: tuple[float, ...] = (0.0, 0.0, 0.0),
                   grace_s: float = 2.0, statuses: list[int] | None = None) -> Env:
        peer = AcsRestPeer(KEY, resource_id=RESOURCE_ID, media=media, retry_delays=retry_delays, grace_s=grace_s)
        peer_cm = serve(peer.app)
        peer_url = await peer_cm.__aenter__()
        stack.append(peer_cm)
        receiver = Receiver(peer_url, RESOURCE_ID, statuses=list(statuses or []))
        app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST"])])
        receiver_cm = serve(app)
        receiver.url = await receiver_cm.__aenter__()
        stack.append(receiver_cm)
        client = CallAutomationClient(peer_url, AzureKeyCredential(KEY))
        stack.append(client)
        return Env(peer, peer_url, receiver, client)

    yield make
    for item in reversed(stack):
        if isinstance(item, CallAutomationClient):
            await item.close()
        else:
            await item.__aexit__(None, None, None)
