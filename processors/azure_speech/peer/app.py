"""The local Azure AI Speech service: the Speech SDK's WebSocket protocol on a Starlette app.

``voicegraph peer speech --port P`` serves :class:`SpeechPeer`'s application; tests and
``perf/`` run it in-process on port 0. Clients are the official SDK, pointed here with
``SpeechConfig(host="ws://127.0.0.1:P")`` (as for a Speech container).

Routes:

- ``/speech/recognition/{mode}/cognitiveservices/v1`` (``conversation``, ``interactive``,
  ``dictation``; WebSocket, subprotocol ``USP``): recognition, :mod:`.recognition`.
- ``/cognitiveservices/websocket/v1`` (WebSocket; ``/tts/cognitiveservices/websocket/v1``
  for the JavaScript SDK): synthesis, :mod:`.synthesis`.
- ``POST /peer/faults {"kind", "times"?, "after_ms"?, "route"?}`` / ``DELETE``: inject
  faults (see :data:`FAULT_KINDS`); ``GET /peer/state``: counters and what was recognised.

The key (when one is set) is checked at the upgrade, as the service does: the
``Ocp-Apim-Subscription-Key`` header, or ``Authorization: Bearer <token>`` with a token in
:attr:`SpeechPeer.tokens`. A refused upgrade is an HTTP 401 (or 429 for throttling) with
a body that says why, so the SDK reports the status in its cancellation details.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from . import recognition, synthesis

__all__ = ["FAULT_KINDS", "Fault", "PeerSettings", "SpeechPeer"]

logger = logging.getLogger(__name__)

FaultKind = Literal["auth", "throttle", "disconnect", "garbage", "expire", "error"]
FAULT_KINDS: tuple[FaultKind, ...] = ("auth", "throttle", "disconnect", "garbage", "expire", "error")
"""``auth``: 401 at the upgrade. ``throttle``: 429 at the upgrade. ``disconnect``: the
connection is dropped after ``after_ms`` of a turn's audio. ``garbage``: a frame that is
not a USP message is sent after ``after_ms``. ``expire``: after ``after_ms`` the
connection's token expires (with a key: the key is rotated) and the connection closes, so
the SDK's reconnect gets a 401.
``error``: the turn ends with an error message after ``after_ms``."""

Route_ = Literal["recognition", "synthesis", "any"]


@dataclass(slots=True)
class Fault:
    """One injected fault; ``times`` connections get it (``None``: all, until cleared)."""

    kind: FaultKind
    times: int | None = 1
    after_ms: int = 0
    route: Route_ = "any"


@dataclass(slots=True)
class PeerSettings:
    """Delays (wall-clock milliseconds, the service's own pacing) and the backing engines.

    Attributes:
        stt_engine: The embedded recogniser behind recognition (``pocketsphinx`` is cheap;
            ``whisper`` hears better).
        first_hypothesis_ms: Pause before a phrase's first ``speech.hypothesis``.
        final_ms: Pause before each ``speech.phrase``.
        segmentation_silence_ms: Silence that ends a phrase, unless the client sets it.
        first_audio_ms: Pause before a synthesis turn's first audio chunk.
        chunk_ms: Audio per synthesis chunk; chunks are paced at real time when ``pace``.
        pace: Send synthesis audio no faster than real time.
    """

    stt_engine: Literal["pocketsphinx", "whisper"] = "pocketsphinx"
    first_hypothesis_ms: int = 0
    final_ms: int = 0
    segmentation_silence_ms: int = 500
    first_audio_ms: int = 0
    chunk_ms: int = 100
    pace: bool = False


@dataclass(slots=True)
class Counters:
    """What the peer served, for tests and ``GET /peer/state``."""

    connections: dict[str, int] = field(default_factory=lambda: {"recognition": 0, "synthesis": 0})
    refused: dict[int, int] = field(default_factory=dict)
    turns: dict[str, int] = field(default_factory=lambda: {"recognition": 0, "synthesis": 0})
    faults: list[str] = field(default_factory=list)
    closed_bad_input: list[str] = field(default_factory=list)


class SpeechPeer:
    """The service (``app``), its settings, faults, and what it served.

    Args:
        key: The subscription key to require; ``None`` accepts any client (a container).
        tokens: Authorization tokens accepted in place of the key.
        settings: Delays and engines.
    """

    def __init__(self, *, key: str | None = None, tokens: set[str] | None = None,
                 settings: PeerSettings | None = None) -> None:
        self.key = key
        self.tokens: set[str] = set(tokens or ())
        self.settings = settings or PeerSettings()
        self.faults: list[Fault] = []
        self.counters = Counters()
        self.phrases: list[str] = []  # every speech.phrase text sent, in order
        self.requests: list[dict[str, str]] = []  # path, query, auth kind of each upgrade
        self.contexts: list[dict[str, Any]] = []  # per recognition turn: segmentation_ms, phrases
        self._changed = asyncio.Condition()
        self.app = Starlette(routes=[
            WebSocketRoute("/speech/recognition/{mode}/cognitiveservices/v1", self._recognition),
            *(WebSocketRoute(path, self._synthesis) for path in synthesis.SYNTHESIS_PATHS),
            Route("/peer/faults", self._faults, methods=["POST", "DELETE"]),
            Route("/peer/state", self._state, methods=["GET"]),
        ])

    def inject(self, fault: Fault) -> None:
        """Queue ``fault`` for the next matching connection(s)."""
        self.faults.append(fault)

    def take_fault(self, route: Literal["recognition", "synthesis"], kinds: tuple[FaultKind, ...]) -> Fault | None:
        """The first queued fault of ``kinds`` for ``route``, used up once; recorded."""
        for fault in self.faults:
            if fault.kind in kinds and fault.route in (route, "any"):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                self.counters.faults.append(f"{route}:{fault.kind}")
                return fault
        return None

    async def notify(self) -> None:
        """Wake :meth:`wait_for` (called by the routes after each change)."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[SpeechPeer], bool], timeout: float = 20.0) -> None:
        """Wait until ``predicate(self)`` holds (tests); TimeoutError after ``timeout`` s."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def admit(self, websocket: WebSocket, route: Literal["recognition", "synthesis"]) -> bool:
        """Check the key and upgrade-time faults; refuse with an HTTP status, or accept."""
        headers = websocket.headers
        auth = headers.get("authorization", "")
        kind = "key" if "ocp-apim-subscription-key" in headers else ("token" if auth else "none")
        self.requests.append({"route": route, "path": websocket.url.path, "query": websocket.url.query,
                              "auth": kind})
        status, why = 0, ""
        if self.key is not None:
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
            if headers.get("ocp-apim-subscription-key") != self.key and token not in self.tokens:
                status, why = 401, "Unauthorized: the key or token is missing or wrong"
        fault = self.take_fault(route, ("auth", "throttle")) if not status else None
        if fault is not None:
            status, why = (401, "Unauthorized (injected)") if fault.kind == "auth" else (
                429, "Too many requests (injected)")
        if status:
            logger.info("speech peer: %s upgrade refused with %d: %s", route, status, why)
            self.counters.refused[status] = self.counters.refused.get(status, 0) + 1
            await websocket.send_denial_response(PlainTextResponse(why, status_code=status))
            await self.notify()
            return False
        protocols = websocket.scope.get("subprotocols", [])
        await websocket.accept(subprotocol="USP" if "USP" in protocols else None)
        self.counters.connections[route] += 1
        await self.notify()
        return True

    async def _recognition(self, websocket: WebSocket) -> None:
        if websocket.path_params["mode"] not in ("conversation", "interactive", "dictation"):
            await websocket.close(code=1008, reason="unknown recognition mode")
            return
        if await self.admit(websocket, "recognition"):
            await recognition.serve(websocket, self)

    async def _synthesis(self, websocket: WebSocket) -> None:
        await synthesis.serve(websocket, self)

    async def _faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
            return Response(status_code=204)
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict) or body.get("kind") not in FAULT_KINDS:
                raise ValueError(f"'kind' must be one of {', '.join(FAULT_KINDS)}")
            times = body.get("times", 1)
            after_ms = body.get("after_ms", 0)
            route = body.get("route", "any")
            if times is not None and (not isinstance(times, int) or times < 1):
                raise ValueError("'times' must be a positive integer or null")
            if not isinstance(after_ms, int) or after_ms < 0:
                raise ValueError("'after_ms' must be a non-negative integer")
            if route not in ("recognition", "synthesis", "any"):
                raise ValueError("'route' must be recognition, synthesis or any")
        except ValueError as exc:  # json.JSONDecodeError is one
            return JSONResponse({"error": f"bad fault: {exc}"}, status_code=400)
        self.inject(Fault(body["kind"], times, after_ms, route))
        return JSONResponse({"queued": len(self.faults)}, status_code=201)

    async def _state(self, request: Request) -> Response:
        c = self.counters
        return JSONResponse({
            "connections": c.connections, "refused": {str(k): v for k, v in c.refused.items()},
            "turns": c.turns, "faults": c.faults, "closed_bad_input": c.closed_bad_input,
            "phrases": self.phrases, "pending_faults": len(self.faults),
        })

