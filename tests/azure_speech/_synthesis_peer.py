"""The speech peer's synthesis service on a free port of 127.0.0.1, for the TTS tests."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from processors.azure_speech.peer.synthesis import SYNTHESIS_PATHS, SynthesisState, serve, synthesis_state


class _Peer:
    """Stands in for H1's SpeechPeer until app.py lands."""


@asynccontextmanager
async def synthesis_peer() -> AsyncIterator[tuple[SynthesisState, str]]:
    """Yields (the peer's synthesis state, its ``ws://`` host for ``SpeechConfig(host=...)``)."""
    peer = _Peer()

    async def route(websocket: WebSocket) -> None:
        await serve(websocket, peer)

    app = Starlette(routes=[WebSocketRoute(path, route) for path in SYNTHESIS_PATHS])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    state = synthesis_state(peer)
    state.settings.engine = "espeak"
    try:
        yield state, f"ws://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        state.faults.release.set()
        server.should_exit = True
        server.force_exit = True
        await task
        sock.close()
