"""Placeholder until synthesis (H2's module) is merged: refuses the connection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

if TYPE_CHECKING:
    from .app import SpeechPeer


async def serve(websocket: WebSocket, peer: SpeechPeer) -> None:
    """Close with 1011: synthesis is not available in this build."""
    await websocket.close(code=1011, reason="synthesis not available")
