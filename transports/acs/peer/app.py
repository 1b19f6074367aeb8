"""The local ACS on its own, for development against ``voicegraph serve``.

``voicegraph peer acs --port P`` serves :func:`create_peer`'s application: the Call
Automation REST endpoint (``rest.py``, HMAC-checked), the OpenID configuration and JWKS of
its signing key, and a few control routes of its own under ``/peer`` (no HMAC: they are
the local stand-in for "a phone rings", bound to 127.0.0.1 by default):

- ``POST /peer/subscribe {"events_url"}``: the Event Grid subscription handshake with the
  server's ``/acs/events``; 200 ``{"validated": true}``, or 502 saying what went wrong.
- ``POST /peer/ring {"events_url", "from"?, "to"?, "caller_display_name"?}``: ring the
  server: an ``IncomingCall`` for a new call goes to ``events_url``; 200 with
  ``incomingCallContext``, ``serverCallId``, ``correlationId`` and the server's status and
  body (502 if it could not be reached). The server then answers through the SDK like any
  ACS application.
- ``POST /peer/calls/{id}:hangup``: the far end of a call hangs up (204; 404 if unknown).
- ``GET /peer/calls``: every call with its state history.

Point the server at it with the lines :func:`env_lines` prints (``ACS_ENDPOINT``,
``ACS_KEY``, ``VOICEGRAPH_ACS_AUDIENCE``, ``VOICEGRAPH_ACS_OPENID_URL``). It has no media
caller of its own: answered calls get their callbacks, and a media hook
(``connect.MediaHook``) plugs in through :func:`create_peer` (``voicegraph call --via
acs`` composes the peer with the media caller in one process).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from transports.acs.peer.connect import MediaHook
from transports.acs.peer.eventgrid import EventGridSender, SubscriptionRefused
from transports.acs.peer.rest import AcsRestPeer
from transports.acs.peer.signer import OPENID_PATH
from transports.acs.peer.switchboard import AcsError

__all__ = ["create_peer", "env_lines"]


def env_lines(base_url: str, peer: AcsRestPeer, key: str) -> list[str]:
    """The environment that points ``voicegraph serve`` at the peer, as shell lines."""
    base = base_url.rstrip("/")
    return [f"export ACS_ENDPOINT={base}", f"export ACS_KEY={key}",
            f"export VOICEGRAPH_ACS_AUDIENCE={peer.resource_id}",
            f"export VOICEGRAPH_ACS_OPENID_URL={base}{OPENID_PATH}"]


def create_peer(key: str, *, resource_id: str | None = None, media: MediaHook | None = None,
                sender: EventGridSender | None = None) -> AcsRestPeer:
    """A peer whose ``app`` also serves the ``/peer`` control routes (see module docstring)."""
    grid = sender or EventGridSender()
    control = _Control(grid)
    peer = AcsRestPeer(key, resource_id=resource_id, media=media, extra_routes=control.routes())
    control.peer = peer
    return peer


class _Control:
    def __init__(self, sender: EventGridSender) -> None:
        self.sender = sender
        self.peer: AcsRestPeer | None = None

    def routes(self) -> list[Route]:
        return [Route("/peer/subscribe", self.subscribe, methods=["POST"]),
                Route("/peer/ring", self.ring, methods=["POST"]),
                Route("/peer/calls/{target}", self.hang_up, methods=["POST"]),
                Route("/peer/calls", self.calls, methods=["GET"])]

    async def subscribe(self, request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        url = body.get("events_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return _error(400, f"events_url must be an http(s) URL, got {url!r:.80}")
        try:
            await self.sender.validate(url)
        except SubscriptionRefused as exc:
            return _error(502, str(exc))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(502, f"could not reach {url}: {type(exc).__name__}: {exc}")
        return JSONResponse({"validated": True})

    async def ring(self, request: Request) -> Response:
        assert self.peer is not None
        body = await _body(request)
        if isinstance(body, Response):
            return body
        url = body.get("events_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return _error(400, f"events_url must be an http(s) URL, got {url!r:.80}")
        caller, callee = body.get("from", "+15550100"), body.get("to", "+15550199")
        display = body.get("caller_display_name", "")
        for name, number in (("from", caller), ("to", callee)):
            if not isinstance(number, str) or not number.startswith("+") or not number[1:].isdigit():
                return _error(400, f"{name} must be a +E.164 phone number, got {number!r:.40}")
        if not isinstance(display, str):
            return _error(400, f"caller_display_name must be a string, got {display!r:.40}")
        ringing = self.peer.switchboard.ring(caller=caller, callee=callee, caller_display_name=display)
        try:
            sent = await self.sender.incoming_call(url, ringing)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(502, f"could not reach {url}: {type(exc).__name__}: {exc}")
        return JSONResponse({"incomingCallContext": ringing.incoming_call_context,
                             "serverCallId": ringing.server_call_id, "correlationId": ringing.correlation_id,
                             "status": sent.status, "response": sent.body})

    async def hang_up(self, request: Request) -> Response:
        assert self.peer is not None
        call_id, _, action = request.path_params["target"].partition(":")
        if action != "hangup":
            return _error(404, f"no such action {action!r}; POST /peer/calls/{{id}}:hangup")
        try:
            await self.peer.hang_up_from_caller(call_id)
        except AcsError as exc:
            return _error(exc.status, exc.message)
        return Response(status_code=204)

    async def calls(self, request: Request) -> Response:
        assert self.peer is not None
        return JSONResponse({"calls": [{"callConnectionId": c.call_connection_id, "state": str(c.state),
                                        "states": [str(s) for s in c.states], "inbound": c.inbound}
                                       for c in self.peer.switchboard.calls.values()]})


async def _body(request: Request) -> dict[str, Any] | Response:
    try:
        body = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _error(400, "the body is not JSON")
    return body if isinstance(body, dict) else _error(400, "the body must be a JSON object")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
