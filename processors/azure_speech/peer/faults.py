"""The injected mid-turn faults both of the peer's services act out the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from .wire import new_request_id

if TYPE_CHECKING:
    from .app import Fault, SpeechPeer

__all__ = ["FAULT_CLOSES", "act_out"]


#: How an injected mid-turn fault closes the connection (``garbage`` does not close it).
FAULT_CLOSES: dict[str, tuple[int, str]] = {
    "disconnect": (1001, "Going away (injected disconnect)"),
    "expire": (1008, "Unauthorized. The credential has expired (injected)"),
    "error": (1011, "Internal service error (injected)"),
}


async def act_out(fault: Fault, ws: WebSocket, peer: SpeechPeer) -> tuple[int, str] | None:
    """Act out an injected mid-turn fault on ``ws``: garbage frames (None: the connection
    stays), or the close code and reason to end it with (an ``expire`` first revokes the
    connection's credential: reconnecting with it is a 401)."""
    if fault.kind == "garbage":
        await ws.send_text("this is not a USP message")
        await ws.send_bytes(b"\xff\xff\x00")
        return None
    if fault.kind == "expire":
        auth = ws.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            peer.tokens.discard(auth[len("Bearer "):])
        elif peer.key is not None:
            peer.key = "rotated-" + new_request_id()
    return FAULT_CLOSES[fault.kind]
