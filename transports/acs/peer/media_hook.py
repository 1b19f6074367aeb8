"""The media caller as the local ACS's media hook: a scripted person on each call it connects.

:class:`CallerHook` is a :class:`~transports.acs.peer.connect.MediaHook`: for each call the
peer connects, it makes an :class:`~transports.acs.peer.caller.AcsMediaCaller` (``make``
decides what that caller says, from the call's :class:`~transports.acs.peer.connect.MediaConnect`)
and runs it as ACS runs a call's media socket: it opens ``transport_url`` with
``connect.headers`` (the media JWT, ``x-ms-call-connection-id``,
``x-ms-call-correlation-id``), tells the peer when the socket is open
(``connect.connected()``, so the peer posts ``MediaStreamingStarted``), closes it when the
call ends on ACS's side (``connect.hung_up``), and returns when the caller hung up.

A caller made at a rate other than the call's (``connect.sample_rate``, what the answer
asked for) is refused before it connects: ACS streams the rate it was asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from transports.acs.peer.caller import AcsMediaCaller, CallerError
from transports.acs.peer.connect import MediaConnect

__all__ = ["CallerHook"]

logger = logging.getLogger(__name__)


class CallerHook:
    """Runs a media caller on every call the peer connects (see module docstring).

    ``callers`` holds each call's caller by call connection id (kept after the call, for
    reports); ``failures`` the reason each call whose caller failed did.
    """

    def __init__(self, make: Callable[[MediaConnect], AcsMediaCaller]) -> None:
        self.make = make
        self.callers: dict[str, AcsMediaCaller] = {}
        self.failures: dict[str, str] = {}

    async def __call__(self, connect: MediaConnect) -> None:
        """Run one call's media until the caller hangs up or the call ends on ACS's side."""
        call_id = connect.call_connection_id
        caller = self.make(connect)
        self.callers[call_id] = caller
        try:
            if caller.settings.sample_rate != connect.sample_rate:
                raise CallerError(f"the caller speaks at {caller.settings.sample_rate} Hz but the call was "
                                  f"answered at {connect.sample_rate} Hz ({connect.audio_format})")
            await caller.run(connect.transport_url, headers=connect.headers, on_open=connect.connected,
                             hung_up=connect.hung_up)
        except CallerError as exc:
            self.failures[call_id] = str(exc)
            logger.warning("call %s: the media caller failed: %s", call_id, exc)
            raise
