"""The ``/acs/media`` WebSocket route: one ACS call's media socket, served as one call.

**Who may connect.** ACS connects to ``/acs/media?token=...`` with the per-call token that
the control plane got from :meth:`~transports.acs.sessions.CallSessions.expect` when it
answered the call, and an ``Authorization: Bearer`` JWT it signed for this connection.
Both are checked before the upgrade is accepted, the JWT first (by the
:class:`~transports.acs.auth.RequestVerifier`), then the token. A refusal is one warning
line naming the peer, the call headers and why (never a traceback, never the token), and
an HTTP response instead of the upgrade (the ASGI WebSocket denial response, which
uvicorn and Starlette's test client support; without it, a close before accept, which a
server answers with 403). What a client (aiohttp, websockets, ACS) sees:

* **401** the JWT is missing or invalid (see :mod:`transports.acs.auth`);
* **403** the JWT is valid but the token is missing, unknown, used by an ended call or
  expired;
* **409** the token is that of a live call whose socket is still connected (one socket
  per call at a time);
* **503** we cannot check the JWT now (keys unreachable, no audience configured), or the
  worker is full: more than ``max_pending`` upgrades being checked at once, or
  ``max_connections`` media connections open (a flood is refused in microseconds, with
  ``Retry-After``; the calls already running are not touched).

With ``VOICEGRAPH_ACS_NO_AUTH=1`` (the verifier is :class:`~transports.acs.auth.NoAuth`)
neither is checked: a connection without a token is admitted as a call of its own (a
plain ACS simulator has no control plane); a token that is given is still checked.

**A call.** A first connection with a token becomes a call: a graph of the pipeline is
built for it (in a worker thread: loading parses YAML and builds nodes, which must not
block the loop that carries the other calls), the socket is attached to the graph's
``acs_media`` node, and a :class:`~pipeline.runner.CallRunner` runs it until it ends. The
result is logged, the session ended, and the socket closed if it is still open. The
``x-ms-call-connection-id`` and ``x-ms-call-correlation-id`` headers are logged with it.

**Which pipeline.** ``pipeline`` is the default pipeline file; a call whose session names
another pipeline (a dialled call's ``"pipeline"``, checked against the control plane's list)
runs ``<that name>.yaml`` from the same folder.

**Call actions.** With ``act`` (the control plane's :meth:`~transports.acs.control.CallControl.act`),
an agent's ``CallAction`` (transfer to a human, hang up) is carried out on the ACS call once
the bot's last words have played (:mod:`transports.acs.actions`); without it, it is only
recorded.

**A reconnection.** If the socket drops (a close other than 1000), the call waits for ACS
to reconnect (:class:`~transports.acs.media.AcsMediaTransport`, ``reconnect_window_s``).
ACS reconnects to the same URL, so the call's token stays valid while the call is live
(:meth:`~transports.acs.sessions.CallSessions.resume`), with a new JWT: the new socket is
handed to the running call, and its connection is held open until the call is done with
it. Once the call has ended, its token is refused (403).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from pipeline.config import build_graph, load_pipeline
from pipeline.context import CallContext
from pipeline.errors import ConfigError, FatalError
from pipeline.graph import Graph
from pipeline.runner import CallRunner
from transports.acs.actions import ActionHandler, CallActions
from transports.acs.auth import AuthError, NoAuth, RequestVerifier, verifier_from_env
from transports.acs.media import AcsMediaTransport, StarletteMediaSocket
from transports.acs.sessions import CallSession, CallSessions, CallState

__all__ = ["MEDIA_PATH", "MediaLimits", "media_route"]

logger = logging.getLogger(__name__)

#: Where ACS connects the media WebSocket.
MEDIA_PATH = "/acs/media"

# WebSocket close codes (RFC 6455, 7.4.1).
_NORMAL = 1000
_POLICY_VIOLATION = 1008
_INTERNAL_ERROR = 1011

_PHRASES = {401: "Unauthorized", 403: "Forbidden", 409: "Conflict", 503: "Service Unavailable"}


@dataclass(frozen=True, kw_only=True)
class MediaLimits:
    """How much one worker's media route takes at once.

    ``max_pending``: upgrades being checked (JWT, token) at once; beyond it, a flood of
    connections that may never authenticate is refused before any work. ``max_connections``:
    media connections open at once (a call, and a reconnection while it is handed over).
    """

    max_pending: int = 64
    max_connections: int = 1000

    def __post_init__(self) -> None:
        if self.max_pending < 1 or self.max_connections < 1:
            raise ValueError(f"media limits must be >= 1, got {self}")


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _load_graph(pipeline: Path) -> Graph:
    """A new graph of the pipeline, with its ``acs_media`` node checked (blocking)."""
    graph = build_graph(load_pipeline(pipeline))
    if not any(isinstance(node, AcsMediaTransport) for node in graph.nodes.values()):
        raise ConfigError(f"pipeline '{graph.name}' has no acs_media node to carry the call's media",
                          file=str(pipeline))
    return graph


def _media_node(graph: Graph) -> AcsMediaTransport:
    return next(node for node in graph.nodes.values() if isinstance(node, AcsMediaTransport))


def _header(websocket: WebSocket, name: str) -> str:
    """A header for the log: printable ASCII, bounded (it comes from anyone)."""
    value = websocket.headers.get(name, "")
    clean = "".join(c for c in value[:80] if " " <= c <= "~")
    return clean or "-"


def media_route(sessions: CallSessions, pipeline: Path, *, verifier: RequestVerifier | None = None,
                limits: MediaLimits | None = None, act: ActionHandler | None = None) -> WebSocketRoute:
    """The ``/acs/media`` route: each socket admitted by ``verifier`` and ``sessions`` runs a
    call of ``pipeline`` (or of the pipeline its session names), with its call actions
    carried out by ``act`` (see module docstring).

    ``verifier`` defaults to :func:`~transports.acs.auth.verifier_from_env`; an app passes
    the one it shares with its callbacks route, and closes it (``aclose``) at shutdown.
    """
    check = verifier if verifier is not None else verifier_from_env()
    no_auth = isinstance(check, NoAuth)
    bounds = limits if limits is not None else MediaLimits()
    pending = 0
    connections = 0

    async def endpoint(websocket: WebSocket) -> None:
        nonlocal pending, connections
        client = f"{websocket.client.host}:{websocket.client.port}" if websocket.client else "unknown peer"
        who = (f"{client} (x-ms-call-connection-id {_header(websocket, 'x-ms-call-connection-id')}, "
               f"x-ms-call-correlation-id {_header(websocket, 'x-ms-call-correlation-id')})")
        if pending >= bounds.max_pending or connections >= bounds.max_connections:
            busy = (f"{pending} upgrades already being checked" if pending >= bounds.max_pending
                    else f"{connections} media connections already open")
            await _refuse(websocket, who, _Refused(503, f"worker full: {busy}"))
            return
        pending += 1
        try:
            session = await _admit(websocket, sessions, check, no_auth)
        except _Refused as refused:
            await _refuse(websocket, who, refused)
            return
        finally:
            pending -= 1
        connections += 1
        try:
            if session.graph is not None:
                await _reconnect(websocket, session, who)
                return
            try:
                logger.info("call %s: media socket from %s", session.call_connection_id, who)
                await _serve(websocket, sessions, session, _pipeline_of(session, pipeline), act)
            finally:
                sessions.end(session, "media socket gone")
        finally:
            connections -= 1

    return WebSocketRoute(MEDIA_PATH, endpoint, name="acs_media")


async def _admit(websocket: WebSocket, sessions: CallSessions, verifier: RequestVerifier,
                 no_auth: bool) -> CallSession:
    """The session this upgrade belongs to (a new call, or one to reconnect); :class:`_Refused`."""
    try:
        await verifier.verify(websocket.headers.get("authorization"))
    except AuthError as exc:
        raise _Refused(exc.status, exc.reason) from None
    token = websocket.query_params.get("token")
    if not token:
        if no_auth:
            return sessions.admit(f"dev-{uuid.uuid4().hex[:12]}")
        raise _Refused(403, "no media token")
    live = sessions.resume(token)
    if live is not None:
        if live.graph is None or not _media_node(live.graph).awaiting_reconnect:
            raise _Refused(409, f"call {live.call_connection_id} already has its media socket")
        return live
    claimed = sessions.claim(token)
    if claimed is None:
        raise _Refused(403, "an unknown, used or expired media token")
    return claimed


async def _refuse(websocket: WebSocket, who: str, refused: _Refused) -> None:
    logger.warning("refused an ACS media connection from %s: %s (HTTP %d)", who, refused.reason, refused.status)
    if "websocket.http.response" not in websocket.scope.get("extensions", {}):
        await websocket.close(_POLICY_VIOLATION)  # before accept: the server answers 403
        return
    headers = {"Retry-After": "1"} if refused.status == 503 else None
    await websocket.send_denial_response(
        PlainTextResponse(_PHRASES.get(refused.status, "Refused"), status_code=refused.status, headers=headers))


async def _reconnect(websocket: WebSocket, session: CallSession, who: str) -> None:
    """Hand an accepted socket to a call that is waiting for one; hold it until released."""
    call_id = session.call_connection_id
    assert session.graph is not None
    await websocket.accept()
    socket = StarletteMediaSocket(websocket)
    if not _media_node(session.graph).resume(socket):  # the window closed while we accepted
        logger.warning("call %s: a media reconnection from %s came too late: the call has ended", call_id, who)
        await socket.close(_POLICY_VIOLATION, "the call has ended")
        return
    logger.info("call %s: media socket reconnected from %s", call_id, who)
    await socket.wait_closed()


def _pipeline_of(session: CallSession, default: Path) -> Path:
    """The pipeline file the call runs: the session's (a name beside ``default``), else ``default``."""
    if session.pipeline is None or session.pipeline == default.stem:
        return default
    return default.with_name(f"{session.pipeline}.yaml")


async def _serve(websocket: WebSocket, sessions: CallSessions, session: CallSession, pipeline: Path,
                 act: ActionHandler | None = None) -> None:
    """Run one accepted call to its end (see module docstring)."""
    call_id = session.call_connection_id
    await websocket.accept()
    socket = StarletteMediaSocket(websocket)
    try:
        graph = await asyncio.to_thread(_load_graph, pipeline)
    except ConfigError as exc:
        logger.error("call %s: cannot build the call's pipeline: %s", call_id, exc)
        await socket.close(_INTERNAL_ERROR, "the call's pipeline failed to load")
        return
    if session.state is CallState.DISCONNECTED:  # ended (a CallDisconnected) while the graph was built
        logger.info("call %s: ended before its pipeline was ready (%s)", call_id, session.ended_reason)
        await socket.close(_NORMAL, f"call ended: {session.ended_reason}"[:123])
        return
    line = _media_node(graph)
    line.attach(socket)
    ctx = CallContext(call_id)
    actions = CallActions(call_id, ctx, act) if act is not None else None
    if actions is not None:
        actions.watch(graph)
    runner = CallRunner(graph, ctx)
    session.graph, session.runner, session.task = graph, runner, asyncio.current_task()
    sessions.starting(session)
    code, reason = _INTERNAL_ERROR, "the call failed to start"
    try:
        result = await runner.run()
        session.result = result
        errors = "; ".join(f"{e.node}: {e.message}" for e in result.errors)
        log = logger.info if result.reason == "eos" and not result.errors else logger.warning
        log("call %s ended: %s after %.1f s%s", call_id, result.reason, result.duration_s,
            f" ({len(result.errors)} errors: {errors})" if errors else "")
        # The caller hanging up (eos) or ACS ending the call (a CallDisconnected cancels it) is a
        # normal end; anything else (a timeout, a fatal error) is ours.
        normal = result.reason == "eos" or sessions.has_ended(session.call_connection_id)
        code, reason = (_NORMAL if normal else _INTERNAL_ERROR), f"call ended: {result.reason}"
    except FatalError as exc:  # a node failed to start: the call never ran
        logger.error("call %s: could not start: %s", call_id, exc)
    finally:
        if actions is not None:
            await actions.aclose()
        # The socket the call ends on (a reconnection's, maybe), and the first one: a no-op if closed.
        for open_socket in {id(s): s for s in (line.socket, socket) if s is not None}.values():
            await open_socket.close(code, reason)
