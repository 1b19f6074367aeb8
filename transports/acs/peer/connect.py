"""The media hook: how the local ACS hands a call's media WebSocket to a media caller.

When a call is answered or created with ``mediaStreamingOptions.startMediaStreaming``,
ACS opens a WebSocket to ``transportUrl`` and streams the call's audio. The peer does not
speak the media protocol itself; it calls a pluggable :class:`MediaHook` (the media
caller, ``peer/caller.py``) with a :class:`MediaConnect`: everything ACS would use to open
that socket. The contract between the two:

1. The peer awaits ``hook(connect)`` in a task of its own, after the answer/create response
   and the ``CallConnected`` callback were queued.
2. The hook opens ``connect.transport_url`` with ``connect.headers`` (the media JWT, a
   24-hour RS256 token for the resource id, and the ``x-ms-call-connection-id`` /
   ``x-ms-call-correlation-id`` headers), then calls ``connect.connected()`` once the
   upgrade succeeded: the peer then posts ``MediaStreamingStarted``.
3. ``connect.hung_up`` is set when the call ends on ACS's side (the bot hung up or
   transferred the call): the hook must close its socket and return. The peer waits
   ``grace_s`` for that, then cancels the task.
4. When the hook returns (or raises) on its own, the caller has hung up: the peer ends the
   call and posts ``CallDisconnected``. A hook that ends without having called
   ``connected()`` never reached the bot: the peer posts ``MediaStreamingFailed``
   (``streamConnectionUnsuccessful``) first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["MEDIA_TOKEN_LIFETIME_S", "MediaConnect", "MediaHook"]

#: A media socket's token lives 24 hours, as ACS's do (a call may be long).
MEDIA_TOKEN_LIFETIME_S = 24 * 3600.0


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class MediaConnect:
    """What ACS uses to open one call's media WebSocket (see module docstring)."""

    #: ``mediaStreamingOptions.transportUrl``, token query included.
    transport_url: str
    call_connection_id: str
    server_call_id: str
    correlation_id: str
    #: ``pcm16KMono`` or ``pcm24KMono``, as asked.
    audio_format: str
    #: Hz of the PCM (16000 or 24000); mono, 16-bit little-endian.
    sample_rate: int
    #: ``mixed`` or ``unmixed``.
    audio_channel_type: str
    #: The bot may send audio back (``enableBidirectional``).
    bidirectional: bool
    #: The media JWT (without ``Bearer``).
    token: str
    #: Set by the peer when the call ends on its side: close the socket and return.
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)
    _on_connected: Callable[[], None] = field(default=_nothing, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        """The headers of the WebSocket upgrade request, as ACS sends them."""
        return {"Authorization": f"Bearer {self.token}", "x-ms-call-connection-id": self.call_connection_id,
                "x-ms-call-correlation-id": self.correlation_id}

    def connected(self) -> None:
        """Tell the peer the socket is open (it posts ``MediaStreamingStarted``); call once."""
        self._on_connected()


class MediaHook(Protocol):
    """The media caller: connects one call's media socket and returns when the call is over."""

    async def __call__(self, connect: MediaConnect) -> None:
        """Run the call's media until the caller hangs up or ``connect.hung_up`` is set."""
        ...
