"""The local Azure Speech peer on a free port of 127.0.0.1, for tests through the real SDK."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from processors.azure_speech.peer.app import SpeechPeer


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[int]:
    """Serve ``app`` on a free port of 127.0.0.1; yields the port."""
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        server.force_exit = True
        await task
        sock.close()


PeerFactory = Callable[..., Awaitable[tuple[SpeechPeer, str]]]


@pytest.fixture
async def make_peer() -> AsyncIterator[PeerFactory]:
    """``await make_peer(**kw)`` -> (peer, ``ws://127.0.0.1:P``), served until the test ends."""
    stack: list[Any] = []

    async def make(**kwargs: Any) -> tuple[SpeechPeer, str]:
        peer = SpeechPeer(**kwargs)
        cm = serve(peer.app)
        port = await cm.__aenter__()
        stack.append(cm)
        return peer, f"ws://127.0.0.1:{port}"

    yield make
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)
