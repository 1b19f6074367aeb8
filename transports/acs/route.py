"""The ``/acs/media`` WebSocket route: one ACS call's media socket, served as one call.

ACS connects to ``/acs/media?token=...`` with the token that the control plane got from
:meth:`~transports.acs.sessions.CallSessions.expect` when it answered the call. The
endpoint :meth:`~transports.acs.sessions.CallSessions.claim` s the token; a missing,
unknown, used or expired token is refused at the handshake (the ASGI close with 1008,
policy violation; a server answers the upgrade with HTTP 403) and logged as a warning,
without a traceback and without touching any other call.

An accepted socket becomes a call: a graph of the pipeline is built for it (in a worker
thread: loading parses YAML and builds nodes, which must not block the loop that carries
the other calls), the socket is attached to the graph's ``acs_media`` node through
:class:`~transports.acs.media.StarletteMediaSocket`, and a
:class:`~pipeline.runner.CallRunner` runs it until it ends: the socket closing (the caller
hung up) ends the call's input, a fatal error ends it at once. The result is logged, the
session ended, and the socket closed if it is still open.

Development switch: with ``VOICEGRAPH_ACS_MEDIA_NO_AUTH=1`` in the environment, a
connection without a token is admitted as a call of its own (a plain ACS simulator has
no control plane to issue tokens). It is off by default and logged as a warning when the
route is made; a connection that does give a token is still checked.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from pipeline.config import build_graph, load_pipeline
from pipeline.context import CallContext
from pipeline.errors import ConfigError, FatalError
from pipeline.graph import Graph
from pipeline.runner import CallRunner
from transports.acs.media import AcsMediaTransport, StarletteMediaSocket
from transports.acs.sessions import CallSession, CallSessions

__all__ = ["MEDIA_PATH", "NO_AUTH_ENV", "media_route"]

logger = logging.getLogger(__name__)

#: Where ACS connects the media WebSocket.
MEDIA_PATH = "/acs/media"
#: Set to ``1`` to admit media sockets without a token (local development only).
NO_AUTH_ENV = "VOICEGRAPH_ACS_MEDIA_NO_AUTH"

# WebSocket close codes (RFC 6455, 7.4.1).
_NORMAL = 1000
_POLICY_VIOLATION = 1008
_INTERNAL_ERROR = 1011


def _load_graph(pipeline: Path) -> Graph:
    """A new graph of the pipeline, with its ``acs_media`` node checked (blocking)."""
    graph = build_graph(load_pipeline(pipeline))
    if not any(isinstance(node, AcsMediaTransport) for node in graph.nodes.values()):
        raise ConfigError(f"pipeline '{graph.name}' has no acs_media node to carry the call's media",
                          file=str(pipeline))
    return graph


def _media_node(graph: Graph) -> AcsMediaTransport:
    return next(node for node in graph.nodes.values() if isinstance(node, AcsMediaTransport))


def media_route(sessions: CallSessions, pipeline: Path, *, no_auth: bool | None = None) -> WebSocketRoute:
    """The ``/acs/media`` route: each socket claimed from ``sessions`` runs a call of ``pipeline``.

    ``no_auth`` defaults to the ``VOICEGRAPH_ACS_MEDIA_NO_AUTH`` environment switch.
    """
    if no_auth is None:
        no_auth = os.environ.get(NO_AUTH_ENV, "") == "1"
    if no_auth:
        logger.warning("%s=1: %s ADMITS MEDIA SOCKETS WITHOUT A TOKEN; anyone who can reach it can start "
                       "a call. For local development with an ACS simulator only.", NO_AUTH_ENV, MEDIA_PATH)

    async def endpoint(websocket: WebSocket) -> None:
        peer = f"{websocket.client.host}:{websocket.client.port}" if websocket.client else "unknown peer"
        token = websocket.query_params.get("token")
        session: CallSession | None = None
        why = "no token"
        if token:
            session = sessions.claim(token)
            why = "an unknown, used or expired token"
        elif no_auth:
            session = sessions.admit(f"dev-{uuid.uuid4().hex[:12]}")
        if session is None:
            logger.warning("refused an ACS media socket from %s: %s", peer, why)
            await websocket.close(_POLICY_VIOLATION, "a valid single-use media token is required")
            return
        try:
            await _serve(websocket, sessions, session, pipeline)
        finally:
            sessions.end(session, "media socket gone")

    return WebSocketRoute(MEDIA_PATH, endpoint, name="acs_media")


async def _serve(websocket: WebSocket, sessions: CallSessions, session: CallSession, pipeline: Path) -> None:
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
    _media_node(graph).attach(socket)
    runner = CallRunner(graph, CallContext(call_id))
    session.graph, session.runner, session.task = graph, runner, asyncio.current_task()
    sessions.starting(session)
    try:
        result = await runner.run()
    except FatalError as exc:  # a node failed to start: the call never ran
        logger.error("call %s: could not start: %s", call_id, exc)
        await socket.close(_INTERNAL_ERROR, "the call failed to start")
        return
    session.result = result
    errors = "; ".join(f"{e.node}: {e.message}" for e in result.errors)
    log = logger.info if result.reason == "eos" and not result.errors else logger.warning
    log("call %s ended: %s after %.1f s%s", call_id, result.reason, result.duration_s,
        f" ({len(result.errors)} errors: {errors})" if errors else "")
    await socket.close(_NORMAL if result.reason == "eos" else _INTERNAL_ERROR, f"call ended: {result.reason}")
