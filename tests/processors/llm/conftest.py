"""The local OpenAI-compatible peer on a free port, for the LLM tests (used through the real SDK)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from processors.llm.peer import OpenAIPeer, PeerScript


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1; yields its base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle + delayed-ACK stalls
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        server.force_exit = True  # a hanging stream must not hold the test up
        await task
        sock.close()


PeerFactory = Callable[..., Awaitable[tuple[OpenAIPeer, str]]]


@pytest.fixture
async def make_peer() -> AsyncIterator[PeerFactory]:
    """``await make_peer(script=None, **kw)`` -> (peer, base URL), served until the test ends."""
    stack: list[Any] = []

    async def make(script: PeerScript | None = None, **kwargs: Any) -> tuple[OpenAIPeer, str]:
        peer = OpenAIPeer(script, **kwargs)
        cm = serve(peer.app)
        url = await cm.__aenter__()
        stack.append(cm)
        return peer, url

    yield make
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)
