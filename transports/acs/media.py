"""The ACS media WebSocket transport: one call's socket, on the transport base.

ACS bidirectional media streaming connects a WebSocket to us for each call and streams
the caller's audio as JSON text messages; we send the bot's audio back the same way.
This module is the thin adapter between that socket and the call's graph. Everything
that does not depend on the wire (playout, pacing on the shared pacer, speaking events,
flush) is the base's (docs/design/transports.md); the messages are the sans-I/O codec's
(``transports.acs.codec``). The socket is reached through :class:`MediaSocket`, so the
transport runs on an in-memory socket in tests and on Starlette's ``WebSocket`` through
:class:`StarletteMediaSocket`.

Inbound (``serve``), message by message:

* ``AudioMetadata``: the first one announces the caller's format
  (:meth:`~transports.base.Transport.input_format`); repeats of the same rate are
  ignored. A *different* rate mid-call ends the call: the graph's line rate is fixed
  per call (its resampler, VAD and STT were set up for it), and audio at a new rate
  cannot be played into a graph built for the old one. The call ends with a fatal
  ``ErrorEvent`` naming both rates and the socket is closed with 1003 (unsupported data).
* ``AudioData``: its samples, silent chunks included, become ``InputAudio`` (silence is
  what VAD and endpointing need to end a turn). The codec always gives a chunk's samples:
  it refuses a chunk with no data, silent or not, so there is nothing to synthesise here.
* ``DtmfData``: a :class:`~pipeline.frames.DTMF` data frame with the digits.
* Unknown kinds are ignored (the codec logs each kind once).
* A message the codec refuses (bad JSON, a binary frame, audio before any metadata, ...)
  is logged as a warning naming the problem, and the next message is read: one bad
  message never ends a call. :data:`MAX_BAD_IN_A_ROW` refused messages with nothing
  usable between them end it (a broken or hostile peer): a fatal ``ErrorEvent``, and the
  socket closed with 1008 (policy violation).
* The socket closing is the caller hanging up: ``serve`` returns and the call's input
  ends (``EndOfStream``).

Outbound: each paced frame is one ``AudioData`` message, a flush that cut audio sends
``StopAudio``. A send on a socket that has closed is dropped (the hang-up is seen by the
receive loop, which ends the call).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from pipeline.errors import ProtocolError, StateError
from pipeline.frames import DTMF, ErrorEvent, InputAudio
from pipeline.settings import Doc, OneOf, Range
from transports.acs.codec import Casing, MediaDecoder, MediaEncoder
from transports.acs.messages import SUPPORTED_RATES, AudioChunk, AudioMetadata, Dtmf, FormatChanged
from transports.base import Transport

__all__ = [
    "MAX_BAD_IN_A_ROW",
    "AcsMediaSettings",
    "AcsMediaTransport",
    "MediaSocket",
    "StarletteMediaSocket",
]

logger = logging.getLogger(__name__)

#: Refused messages in a row, with nothing usable between them, that end a call.
MAX_BAD_IN_A_ROW = 100

# WebSocket close codes (RFC 6455, 7.4.1).
_UNSUPPORTED_DATA = 1003
_POLICY_VIOLATION = 1008


class MediaSocket(Protocol):
    """One call's media WebSocket, already accepted, as the transport needs it."""

    async def receive(self) -> str | bytes | None:
        """The next message (text or a binary frame), or ``None`` once the peer closed."""
        ...

    async def send_text(self, text: str) -> None:
        """Send one text message; raises ``ConnectionError`` if the socket has closed."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close the socket with a WebSocket close code; a no-op if it has closed."""
        ...


class StarletteMediaSocket:
    """A :class:`MediaSocket` over an accepted Starlette ``WebSocket``."""

    __slots__ = ("_ws",)

    def __init__(self, websocket: Any) -> None:
        self._ws = websocket

    async def receive(self) -> str | bytes | None:
        from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

        try:
            message = await self._ws.receive()
        except (WebSocketDisconnect, WebSocketDisconnected):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text: str | None = message.get("text")
        if text is not None:
            return text
        data: bytes | None = message.get("bytes")
        return data if data is not None else b""

    async def send_text(self, text: str) -> None:
        from starlette.websockets import WebSocketDisconnect

        try:
            await self._ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:  # Starlette's "already closed" is a RuntimeError
            raise ConnectionError(f"media socket closed: {exc}") from None

    async def close(self, code: int, reason: str) -> None:
        from starlette.websockets import WebSocketDisconnect

        try:
            await self._ws.close(code, reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # already closed: nothing to tell the peer


@dataclass(frozen=True, kw_only=True)
class AcsMediaSettings:
    """The line of an ACS call."""

    sample_rate: Annotated[int, OneOf(*SUPPORTED_RATES), Doc(
        "line rate both ways; the one the call was answered with (pcm16KMono or pcm24KMono)")] = 16000
    lead_ms: Annotated[int, Range(ge=0), Doc("playout lead buffer")] = 60
    casing: Annotated[str, OneOf("pascal", "camel"), Doc(
        "spelling of what we send: 'pascal' (Python docs) or 'camel' (JS SDK)")] = "pascal"


class AcsMediaTransport(Transport):
    """One ACS call's media WebSocket as the call's transport (see module docstring).

    The socket is handed over with :meth:`attach` (or ``socket=``) before the call starts.
    """

    produces = (InputAudio, DTMF)
    Settings = AcsMediaSettings
    settings: AcsMediaSettings

    def __init__(
        self, settings: AcsMediaSettings | None = None, *, name: str | None = None, socket: MediaSocket | None = None
    ) -> None:
        s = settings if settings is not None else AcsMediaSettings()
        super().__init__(s, name=name, sample_rate=s.sample_rate, frame_ms=20, lead_ms=s.lead_ms)
        casing: Casing = "camel" if s.casing == "camel" else "pascal"
        self._encoder = MediaEncoder(s.sample_rate, casing=casing)
        self._decoder = MediaDecoder()
        self._socket = socket
        self._closed = False
        #: Messages the codec refused, over the whole call.
        self.messages_refused = 0

    def attach(self, socket: MediaSocket) -> None:
        """Give the transport its call's socket (once, before the call starts)."""
        if self._socket is not None:
            raise StateError(f"{self.name}: a media socket is already attached")
        self._socket = socket

    # --- the wire -----------------------------------------------------------------------

    async def serve(self) -> None:
        socket = self._socket
        if socket is None:
            raise StateError(f"{self.name}: no media socket attached before the call started")
        bad_run = 0
        while True:
            message = await socket.receive()
            if message is None:
                self._closed = True
                logger.info("%s: call %s: media socket closed", self.name, self.ctx.call_id)
                return
            try:
                event = self._decoder.decode(message)
            except ProtocolError as exc:
                self.messages_refused += 1
                bad_run += 1
                logger.warning("%s: call %s: ignoring an ACS media message: %s", self.name, self.ctx.call_id, exc)
                if bad_run >= MAX_BAD_IN_A_ROW:
                    await self._end(_POLICY_VIOLATION, f"{bad_run} ACS media messages in a row were refused; "
                                                       f"the last: {exc}")
                    return
                continue
            if isinstance(event, AudioChunk):
                bad_run = 0
                await self.receive_audio(event.pcm)
            elif isinstance(event, AudioMetadata):
                bad_run = 0
                if not self._input_rate:
                    if event.sample_rate != self.sample_rate:
                        logger.warning("%s: call %s: ACS streams at %d Hz on a line answered at %d Hz: "
                                       "the caller hears our audio at the wrong rate", self.name,
                                       self.ctx.call_id, event.sample_rate, self.sample_rate)
                    await self.input_format(event.sample_rate)
            elif isinstance(event, Dtmf):
                bad_run = 0
                await self.push(DTMF(digits=event.digits))
            elif isinstance(event, FormatChanged):
                await self._end(_UNSUPPORTED_DATA, f"ACS changed the audio format mid-call, from "
                                                   f"{event.old.sample_rate} Hz to {event.new.sample_rate} Hz; "
                                                   f"a call's line rate is fixed")
                return
            # UnknownKind: ignored (logged once per kind by the codec); not a reset of bad_run,
            # so a peer cannot keep the call alive on garbage by interleaving unknown kinds.

    async def send_audio(self, pcm: bytes) -> None:
        await self._send_text(self._encoder.audio(pcm))

    async def clear_audio(self) -> None:
        await self._send_text(self._encoder.stop_audio())

    # --- internals ----------------------------------------------------------------------

    async def _send_text(self, text: str) -> None:
        if self._closed or self._socket is None:
            return
        try:
            await self._socket.send_text(text)
        except ConnectionError as exc:
            self._closed = True  # the receive loop sees the close and ends the call
            logger.info("%s: call %s: dropping bot audio: %s", self.name, self.ctx.call_id, exc)

    async def _end(self, code: int, why: str) -> None:
        """End the call for the peer's doing: a clear fatal error, and the socket closed."""
        logger.warning("%s: call %s: ending the call: %s", self.name, self.ctx.call_id, why)
        self._closed = True
        assert self._socket is not None
        # Close before the fatal error: the runner then stops the call, and this task with it.
        await self._socket.close(code, why.encode()[:123].decode(errors="ignore"))  # RFC 6455: <= 123 bytes
        self.emit(ErrorEvent(node=self.name, message=why, fatal=True))
