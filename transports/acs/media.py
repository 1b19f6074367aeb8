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
  ACS sends it first on every connection: a socket that has sent none
  ``metadata_timeout_s`` (on the call's clock) after the call started ends the call
  (fatal ``ErrorEvent``, close 1002, protocol error).
* ``AudioData``: its samples, silent chunks included, become ``InputAudio`` (silence is
  what VAD and endpointing need to end a turn). The codec always gives a chunk's samples:
  it refuses a chunk with no data, silent or not, so there is nothing to synthesise here.
  Audio before any ``AudioMetadata`` is refused by the codec (a bad message, below).
* ``DtmfData``: a :class:`~pipeline.frames.DTMF` data frame with the digits.
* Unknown kinds are ignored (the codec logs each kind once).
* A message the codec refuses (bad JSON, a binary frame, audio before any metadata, ...)
  is logged as a warning naming the problem, and the next message is read: one bad
  message never ends a call. :data:`MAX_BAD_IN_A_ROW` refused messages with nothing
  usable between them end it (a broken or hostile peer): a fatal ``ErrorEvent``, and the
  socket closed with 1008 (policy violation).

The socket closing (:class:`MediaState`, each change logged ``old -> new``):

* With 1000 (normal closure) the caller hung up: ``serve`` returns and the call's input
  ends (``EndOfStream``).
* With any other code (1006: the connection dropped without a close; 1001, 1011, ...)
  the socket *dropped*: the call's graph stays up ``reconnect_window_s`` on the call's
  clock (state ``away``), during which ACS may connect again to the same media URL; the
  route hands the new socket over with :meth:`AcsMediaTransport.resume` and the call
  goes on (same graph, same turn). One socket at a time: ``resume`` is refused while a
  socket is connected or once the call has ended. If none comes, the call ends with a
  fatal ``ErrorEvent`` naming the close code and the window.

Outbound: each paced frame is one ``AudioData`` message, a flush that cut audio sends
``StopAudio``. A send on a socket that has closed is dropped. While the call is away,
bot audio is dropped, not queued: the playout keeps the call's time (the bot's words go
on at their pace, so what follows the reconnect is in step with the conversation; a
late burst of stale audio would not be), and ``frames_dropped`` counts it. A flush while
away owes ACS a ``StopAudio``, sent on the new socket before any further audio (ACS may
still be playing what it buffered before the drop).
"""

from __future__ import annotations

import asyncio
import enum
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
    "MediaState",
    "StarletteMediaSocket",
]

logger = logging.getLogger(__name__)

#: Refused messages in a row, with nothing usable between them, that end a call.
MAX_BAD_IN_A_ROW = 100

# WebSocket close codes (RFC 6455, 7.4.1).
_NORMAL = 1000
_PROTOCOL_ERROR = 1002
_UNSUPPORTED_DATA = 1003
_ABNORMAL = 1006  # never sent: what a receiver reports when the connection dropped without a close
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

    @property
    def close_code(self) -> int | None:
        """The peer's close code once :meth:`receive` gave ``None`` (1006 if the connection
        dropped without a close frame)."""
        ...


class StarletteMediaSocket:
    """A :class:`MediaSocket` over an accepted Starlette ``WebSocket``.

    :meth:`wait_closed` returns once the socket is done with (the peer closed it, or we
    did): the route that accepted it keeps its connection open until then.
    """

    __slots__ = ("_done", "_ws", "close_code")

    def __init__(self, websocket: Any) -> None:
        self._ws = websocket
        self._done = asyncio.Event()
        self.close_code: int | None = None

    async def receive(self) -> str | bytes | None:
        from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

        if self._done.is_set():
            return None
        try:
            message = await self._ws.receive()
        except WebSocketDisconnect as exc:
            self._closed(exc.code)
            return None
        except (WebSocketDisconnected, RuntimeError, OSError):  # asked again after the close
            self._closed(_ABNORMAL)
            return None
        if message["type"] == "websocket.disconnect":
            self._closed(int(message.get("code", _ABNORMAL)))
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

        self._done.set()
        try:
            await self._ws.close(code, reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # already closed: nothing to tell the peer

    async def wait_closed(self) -> None:
        """Return once the peer closed the socket or :meth:`close` was called."""
        await self._done.wait()

    def _closed(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code
        self._done.set()


@dataclass(frozen=True, kw_only=True)
class AcsMediaSettings:
    """The line of an ACS call."""

    sample_rate: Annotated[int, OneOf(*SUPPORTED_RATES), Doc(
        "line rate both ways; the one the call was answered with (pcm16KMono or pcm24KMono)")] = 16000
    lead_ms: Annotated[int, Range(ge=0), Doc("playout lead buffer")] = 60
    casing: Annotated[str, OneOf("pascal", "camel"), Doc(
        "spelling of what we send: 'pascal' (Python docs) or 'camel' (JS SDK)")] = "pascal"
    metadata_timeout_s: Annotated[float, Range(gt=0), Doc(
        "a call whose socket sent no AudioMetadata this long after the start ends (ACS sends it at once)")] = 5.0
    reconnect_window_s: Annotated[float, Range(ge=0), Doc(
        "how long a call whose socket dropped waits for ACS to reconnect it; 0: the drop ends the call")] = 5.0


class MediaState(enum.Enum):
    """Where a call's media socket stands."""

    CONNECTED = "connected"
    #: The socket dropped; the call waits for ACS to reconnect.
    AWAY = "away"
    ENDED = "ended"


class AcsMediaTransport(Transport):
    """One ACS call's media WebSocket as the call's transport (see module docstring).

    The socket is handed over with :meth:`attach` (or ``socket=``) before the call starts;
    a reconnection's with :meth:`resume`.
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
        self._broken: MediaSocket | None = None  # the socket a send failed on: drop further sends to it
        self._reconnect: asyncio.Future[MediaSocket] | None = None
        self._stop_owed = False  # a flush cut audio while the call was away
        self.media_state = MediaState.CONNECTED
        #: Messages the codec refused, over the whole call.
        self.messages_refused = 0
        #: Bot frames dropped because the socket was away or had closed.
        self.frames_dropped = 0
        #: Sockets handed over by :meth:`resume` (ACS reconnected the call).
        self.reconnects = 0

    def attach(self, socket: MediaSocket) -> None:
        """Give the transport its call's socket (once, before the call starts)."""
        if self._socket is not None:
            raise StateError(f"{self.name}: a media socket is already attached")
        self._socket = socket

    @property
    def socket(self) -> MediaSocket | None:
        """The socket now connected (``None`` while the call is away)."""
        return self._socket

    @property
    def awaiting_reconnect(self) -> bool:
        """True while the socket has dropped and :meth:`resume` would be taken."""
        return self.media_state is MediaState.AWAY and self._reconnect is not None and not self._reconnect.done()

    def resume(self, socket: MediaSocket) -> bool:
        """Carry on the call on ``socket``, ACS's reconnection after a drop.

        Refused (``False``) unless the call is away: one socket at a time, and none once
        the call has ended.
        """
        if not self.awaiting_reconnect:
            return False
        assert self._reconnect is not None
        self._reconnect.set_result(socket)
        return True

    # --- the wire -----------------------------------------------------------------------

    async def serve(self) -> None:
        socket = self._socket
        if socket is None:
            raise StateError(f"{self.name}: no media socket attached before the call started")
        try:
            async with asyncio.TaskGroup() as tasks:
                watchdog = tasks.create_task(self._require_metadata(),
                                             name=f"{self.ctx.call_id}:{self.name}:metadata")
                try:
                    await self._serve(socket)
                finally:
                    watchdog.cancel()
        except ExceptionGroup as group:  # one wire failure: report it, not a group of one
            raise group.exceptions[0] from None

    async def _serve(self, socket: MediaSocket) -> None:
        """Pump each socket of the call in turn, until a hang-up or the end of the call."""
        while True:
            code = await self._pump(socket)
            if code is None:  # we ended the call
                return
            if code == _NORMAL:
                self._set_media_state(MediaState.ENDED, "the caller hung up (close 1000)")
                return
            window = self.settings.reconnect_window_s
            if window <= 0:
                self._set_media_state(MediaState.ENDED, f"the media socket dropped (close {code})")
                return
            resumed = await self._await_reconnect(code, window)
            if resumed is None:
                await self._end(None, f"the media socket dropped (close {code}) and ACS did not reconnect "
                                      f"within {window:g} s")
                return
            socket = resumed

    async def _pump(self, socket: MediaSocket) -> int | None:
        """Read ``socket`` into the graph until it closes (its close code) or we end the call."""
        bad_run = 0
        while True:
            message = await socket.receive()
            if message is None:
                code = socket.close_code
                return _ABNORMAL if code is None else code
            try:
                event = self._decoder.decode(message)
            except ProtocolError as exc:
                self.messages_refused += 1
                bad_run += 1
                logger.warning("%s: call %s: ignoring an ACS media message: %s", self.name, self.ctx.call_id, exc)
                if bad_run >= MAX_BAD_IN_A_ROW:
                    await self._end(_POLICY_VIOLATION, f"{bad_run} ACS media messages in a row were refused; "
                                                       f"the last: {exc}")
                    return None
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
                return None
            # UnknownKind: ignored (logged once per kind by the codec); not a reset of bad_run,
            # so a peer cannot keep the call alive on garbage by interleaving unknown kinds.

    async def _await_reconnect(self, code: int, window: float) -> MediaSocket | None:
        """Wait up to ``window`` seconds (call clock) for :meth:`resume`; the new socket, or ``None``."""
        self._socket = None
        reconnect: asyncio.Future[MediaSocket] = asyncio.get_running_loop().create_future()
        self._reconnect = reconnect
        self._set_media_state(MediaState.AWAY, f"the media socket dropped (close {code}); waiting {window:g} s for ACS "
                                         f"to reconnect")
        clock = self.ctx.clock
        since = clock.now_ns()
        timer = asyncio.ensure_future(clock.sleep_until(since + int(window * 1e9)))
        try:
            await asyncio.wait((reconnect, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        self._reconnect = None
        if not reconnect.done():  # no await since the wait: resume() cannot slip in now
            reconnect.cancel()
            return None
        socket = reconnect.result()
        self._socket = socket
        self.reconnects += 1
        self._set_media_state(MediaState.CONNECTED, f"ACS reconnected after {(clock.now_ns() - since) / 1e6:.0f} ms")
        if self._stop_owed:  # through the sender task, so it goes before any further frame
            self._stop_owed = False
            self._clear = True
            self._wake_sender()
        return socket

    async def _require_metadata(self) -> None:
        timeout = self.settings.metadata_timeout_s
        clock = self.ctx.clock
        await clock.sleep_until(clock.now_ns() + int(timeout * 1e9))
        if not self._input_rate and self.media_state is not MediaState.ENDED:
            await self._end(_PROTOCOL_ERROR, f"no AudioMetadata within {timeout:g} s of the call's start; "
                                             f"ACS sends it first on every media connection")

    async def send_audio(self, pcm: bytes) -> None:
        if not await self._send_text(self._encoder.audio(pcm)):
            self.frames_dropped += 1

    async def clear_audio(self) -> None:
        if self.media_state is MediaState.AWAY:
            self._stop_owed = True
            return
        await self._send_text(self._encoder.stop_audio())

    # --- internals ----------------------------------------------------------------------

    async def _send_text(self, text: str) -> bool:
        """Send on the connected socket; ``False`` if there is none to take it (dropped)."""
        socket = self._socket
        if self.media_state is not MediaState.CONNECTED or socket is None or socket is self._broken:
            return False
        try:
            await socket.send_text(text)
        except ConnectionError as exc:
            self._broken = socket  # the receive loop sees the close and decides: hang-up or drop
            logger.info("%s: call %s: dropping bot audio: %s", self.name, self.ctx.call_id, exc)
            return False
        return True

    def _set_media_state(self, state: MediaState, why: str) -> None:
        log = logger.info if state is not MediaState.AWAY else logger.warning
        log("%s: call %s: media %s -> %s: %s", self.name, self.ctx.call_id, self.media_state.value, state.value, why)
        self.media_state = state

    async def _end(self, code: int | None, why: str) -> None:
        """End the call for the peer's doing: a clear fatal error, and the socket closed."""
        logger.warning("%s: call %s: ending the call: %s", self.name, self.ctx.call_id, why)
        self._set_media_state(MediaState.ENDED, why)
        socket = self._socket
        # Close before the fatal error: the runner then stops the call, and this task with it.
        if socket is not None and code is not None:
            await socket.close(code, why.encode()[:123].decode(errors="ignore"))  # RFC 6455: <= 123 bytes
        self.emit(ErrorEvent(node=self.name, message=why, fatal=True))
