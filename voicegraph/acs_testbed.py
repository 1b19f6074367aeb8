"""Our server and the local ACS, wired as in production, in one process and one event loop.

:class:`AcsTestbed` is what ``voicegraph call --via acs``, the end-to-end tests and the
perf scripts place ACS calls with. Two uvicorn servers on 127.0.0.1, free ports:

- our app (:func:`voicegraph.app.create_app`), its Call Automation client (the real async
  SDK) pointed at the peer with the peer's access key, and its public URL (what
  ``VOICEGRAPH_PUBLIC_URL`` sets in a deployment) the server's own; the JWTs of callbacks
  and media upgrades checked by :class:`~transports.acs.auth.AcsJwtVerifier` with the keys
  of the peer's OpenID configuration, for the peer's resource id (what
  ``VOICEGRAPH_ACS_OPENID_URL`` and ``VOICEGRAPH_ACS_AUDIENCE`` set in a deployment);
- the local ACS (:func:`transports.acs.peer.app.create_peer`): the REST endpoint that
  checks the SDK's HMAC signatures, posts signed callbacks, and runs the media hook
  (a :class:`~transports.acs.peer.media_hook.CallerHook`: the media caller) on each call
  it connects; its Event Grid sender makes the subscription handshake with our
  ``/acs/events`` when the testbed opens.

:meth:`AcsTestbed.ring` is a phone ringing: the peer rings a new call and delivers its
``IncomingCall`` to our ``/acs/events``; our server answers it through the SDK; the peer
connects the call (``CallConnected`` to our ``/acs/callbacks``) and runs the media hook
against our ``/acs/media``. :meth:`AcsTestbed.finished` waits for the call to end on both
sides: the peer's ``CallDisconnected`` delivered, the server's graph done.

Both listening sockets set ``TCP_NODELAY`` before they listen (accepted sockets inherit it;
uvicorn does not set it on sockets it is given): without it every small response waits
out Nagle and delayed ACKs, about 40 ms per request on Linux.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from azure.communication.callautomation import AudioFormat
from azure.communication.callautomation.aio import CallAutomationClient
from azure.core.credentials import AzureKeyCredential

from transports.acs.auth import AcsJwtVerifier
from transports.acs.control import CallControl
from transports.acs.events import EVENTS_PATH
from transports.acs.peer.app import create_peer
from transports.acs.peer.callbacks import Delivery
from transports.acs.peer.connect import MediaHook
from transports.acs.peer.eventgrid import EventGridSender
from transports.acs.peer.rest import AcsRestPeer
from transports.acs.peer.signer import OPENID_PATH
from transports.acs.sessions import CallSession, CallSessions

from .app import acs_pipelines, create_app

__all__ = ["AcsTestbed", "RingRefused", "listening_socket", "serving"]

#: The answer's audio format for each line rate.
_FORMATS = {16000: AudioFormat.PCM16_K_MONO, 24000: AudioFormat.PCM24_K_MONO}


class RingRefused(Exception):
    """Our server did not answer a call the peer rang; the message says what it said."""


def listening_socket() -> socket.socket:
    """A TCP socket on 127.0.0.1, a free port, listening, with ``TCP_NODELAY`` (see module docstring)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serving(app: Any, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn in this event loop on ``sock`` (default: a new
    :func:`listening_socket`); yields the base URL (``http://127.0.0.1:PORT``). The socket
    listens before the server starts, so connections made at once wait in its backlog."""
    import uvicorn

    sock = sock if sock is not None else listening_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn:{port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class AcsTestbed:
    """Our server (pipelines under ``config``) and the local ACS with ``media`` as its
    media hook (see module docstring). Use as ``async with``; the attributes are set then:
    ``url`` (our server), ``peer_url``, ``peer``, ``app``, ``sessions`` (our calls),
    ``control`` (our call actions), ``verifier`` (our check of ACS's JWTs), ``sender``
    (the peer's Event Grid)."""

    def __init__(self, config: Path, media: MediaHook, *, sample_rate: int = 16000,
                 transfer_target: str | None = None) -> None:
        if sample_rate not in _FORMATS:
            raise ValueError(f"ACS streams 16000 or 24000 Hz, not {sample_rate}")
        self.config = config
        self.media = media
        self.sample_rate = sample_rate
        #: Where our server transfers callers when an agent asks (``VOICEGRAPH_ACS_TRANSFER_TARGET``).
        self.transfer_target = transfer_target
        #: The peer's access key (base64, as in a connection string): the SDK signs with it.
        self.key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.sender = EventGridSender()
        self.url = self.peer_url = ""
        self._stack = AsyncExitStack()
        self._peer: AcsRestPeer | None = None
        self._app: Any = None
        self._control: CallControl | None = None
        self.verifier: AcsJwtVerifier | None = None
        #: Every call whose graph our server started, in order (kept after they end).
        self.started: list[CallSession] = []

    @property
    def peer(self) -> AcsRestPeer:
        assert self._peer is not None, "the testbed is not open"
        return self._peer

    @property
    def app(self) -> Any:
        assert self._app is not None, "the testbed is not open"
        return self._app

    @property
    def control(self) -> CallControl:
        assert self._control is not None, "the testbed is not open"
        return self._control

    @property
    def sessions(self) -> CallSessions:
        return self.control.sessions

    async def __aenter__(self) -> AcsTestbed:
        try:
            peer = self._peer = create_peer(self.key, media=self.media, sender=self.sender)
            peer_sock, server_sock = listening_socket(), listening_socket()
            self._stack.callback(peer_sock.close)  # if we fail before serving them (closing twice is harmless)
            self._stack.callback(server_sock.close)
            self.peer_url = f"http://127.0.0.1:{peer_sock.getsockname()[1]}"
            self.url = f"http://127.0.0.1:{server_sock.getsockname()[1]}"
            client = CallAutomationClient(self.peer_url, AzureKeyCredential(self.key))
            self._stack.push_async_callback(client.close)
            self._control = CallControl(CallSessions(), public_url=self.url, client=client,
                                        audio_format=_FORMATS[self.sample_rate],
                                        transfer_target=self.transfer_target,
                                        pipelines=acs_pipelines(self.config / "pipelines") or ("acs",))
            self._control.sessions.watch(self.started.append)
            # ACS's JWTs checked as in production: keys from the peer's OpenID configuration, for its resource id.
            self.verifier = AcsJwtVerifier(peer.resource_id, openid_url=self.peer_url + OPENID_PATH)
            self._stack.push_async_callback(self.verifier.aclose)
            self._app = create_app(self.config, poll_s=3600.0, control=self._control, verifier=self.verifier)
            await self._stack.enter_async_context(serving(peer.app, peer_sock))
            await self._stack.enter_async_context(serving(self._app, server_sock))
            await self.sender.validate(self.url + EVENTS_PATH)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stack.aclose()

    async def ring(self, *, caller: str = "+15550100", callee: str = "+15550199") -> str:
        """Ring our server with a new call from ``caller``; returns the call connection id
        it was answered as (:class:`RingRefused` if it was not)."""
        ringing = self.peer.switchboard.ring(caller=caller, callee=callee)
        sent = await self.sender.incoming_call(self.url + EVENTS_PATH, ringing)
        answered = sent.body.get("answered") if isinstance(sent.body, dict) else None
        if sent.status != 200 or not isinstance(answered, list) or len(answered) != 1:
            raise RingRefused(f"our /acs/events answered the IncomingCall with HTTP {sent.status}: "
                              f"{str(sent.body)[:200]}")
        return str(answered[0])

    async def finished(self, call_connection_id: str) -> None:
        """Return once the call has ended on both sides: the peer's ``CallDisconnected``
        delivered (or given up), and our graph of the call done."""
        await self.peer.switchboard.disconnected(call_connection_id)
        await self.peer.switchboard.poster.drain(call_connection_id)
        tasks = {s.task for s in self.started if s.call_connection_id == call_connection_id and s.task is not None}
        if tasks:
            await asyncio.wait(tasks)

    def deliveries(self, call_connection_id: str) -> list[Delivery]:
        """The callbacks the peer posted about the call, in order, with each attempt's status."""
        return [d for d in self.peer.deliveries if d.call_connection_id == call_connection_id]
