"""The local ACS's calls: what happens after each Call Automation request, and when.

:class:`Switchboard` owns the peer's calls, the incoming calls it rang, its recordings,
the callback poster and the media hook. The REST layer (``rest.py``) parses requests and
calls it; it raises :class:`AcsError` (HTTP status, error code, message) for requests the
service would refuse. What it does, as ACS does:

- :meth:`ring` makes an incoming call: an ``incomingCallContext`` (an unsigned JWT, like
  ACS's) that :meth:`answer` accepts once; an unknown or already answered context is
  refused (400).
- :meth:`answer` / :meth:`create` make a call in state ``connecting``; once the response is
  out, :meth:`connect` moves it to ``connected`` and posts ``CallConnected`` then
  ``ParticipantsUpdated`` (sequenceNumber 1); with ``startMediaStreaming`` it runs the media
  hook (``connect.py``), and ``MediaStreamingStarted`` follows when the hook reports the
  socket open.
- :meth:`hang_up` (terminate for everyone, or the bot leaving: in a two-party call both end
  it) and :meth:`hang_up_from_caller` end the call: ``disconnecting``, the media hook is
  told (``hung_up``) and given ``grace_s`` to close; then a caller hang-up posts
  ``ParticipantsUpdated`` without the caller, active recordings post
  ``RecordingStateChanged`` inactive, started media posts ``MediaStreamingStopped``, and
  ``CallDisconnected`` ends it: ``disconnected``. A media hook that ends without having
  connected posts ``MediaStreamingFailed`` (``streamConnectionUnsuccessful``) when it ends.
- :meth:`transfer`: ``transferring``, then ``CallTransferAccepted`` (to the operation's
  callback URI if one was given) and the bot leaves the call: ``CallDisconnected``.
- :meth:`start_recording` / :meth:`stop_recording` / pause / resume post
  ``RecordingStateChanged`` (``active``/``inactive``) to ``recordingStateCallbackUri`` or
  the call's callback URI.

Every task it starts is kept and ended by :meth:`aclose`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import jwt

from transports.acs.peer.callbacks import CallbackPoster
from transports.acs.peer.calls import CallState, MediaOptions, PeerCall, identifier, phone_number
from transports.acs.peer.connect import MEDIA_TOKEN_LIFETIME_S, MediaConnect, MediaHook
from transports.acs.peer.signer import TokenSigner

__all__ = ["AcsError", "Recording", "Ringing", "Switchboard"]

logger = logging.getLogger(__name__)


class AcsError(Exception):
    """A request the service refuses: ``status``, ``code`` and ``message`` of its error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def not_found(what: str) -> AcsError:
    """The 404 of an unknown (or ended) call or recording."""
    return AcsError(404, "NotFound", f"{what} was not found")


@dataclass(slots=True)
class Ringing:
    """An incoming call the peer rang and nobody answered yet."""

    incoming_call_context: str
    server_call_id: str
    correlation_id: str
    caller: str
    callee: str
    caller_display_name: str
    answered: bool = False

    def event_data(self) -> dict[str, Any]:
        """The ``data`` of its Event Grid ``Microsoft.Communication.IncomingCall`` event."""
        return {"to": identifier(self.callee), "from": identifier(self.caller),
                "callerDisplayName": self.caller_display_name, "incomingCallContext": self.incoming_call_context,
                "correlationId": self.correlation_id, "serverCallId": self.server_call_id}


@dataclass(slots=True)
class Recording:
    """One recording of a call; ``state`` is ``active`` or ``inactive``."""

    recording_id: str
    call: PeerCall
    callback_uri: str
    state: str

    def properties(self) -> dict[str, Any]:
        """The ``RecordingStateResponse`` JSON."""
        return {"recordingId": self.recording_id, "recordingState": self.state,
                "recordingKind": "azureCommunicationServices"}


class Switchboard:
    """The calls of one local ACS (see module docstring). ``resource_id`` is the tokens' ``aud``."""

    def __init__(self, signer: TokenSigner, resource_id: str, *, media: MediaHook | None = None,
                 retry_delays: tuple[float, ...] = (0.5, 2.0, 8.0), grace_s: float = 2.0) -> None:
        self.signer = signer
        self.resource_id = resource_id
        self.media = media
        self.grace_s = grace_s
        #: Our application's identity: the ``source`` of created calls, a participant of every call.
        self.bot_id = f"8:acs:{resource_id}_{uuid.uuid4()}"
        self.poster = CallbackPoster(signer, resource_id, retry_delays=retry_delays)
        #: Every call made, by call connection id (ended ones stay, for tests).
        self.calls: dict[str, PeerCall] = {}
        self.ringing: dict[str, Ringing] = {}
        self.recordings: dict[str, Recording] = {}
        self._connects: dict[str, MediaConnect] = {}
        self._media_tasks: dict[str, asyncio.Task[None]] = {}
        self._started: set[str] = set()
        self._disconnected: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- making calls -------------------------------------------------------------------------

    def ring(self, *, caller: str = "+15550100", callee: str = "+15550199", caller_display_name: str = "") -> Ringing:
        """A new incoming call from phone number ``caller`` to ``callee`` (not yet posted anywhere)."""
        correlation_id = str(uuid.uuid4())
        # ACS's contexts are unsigned JWTs (alg none); what they carry is the service's business.
        context = jwt.encode({"cc": uuid.uuid4().hex, "correlationId": correlation_id}, "", algorithm="none")
        ringing = Ringing(context, f"peer-server-call-{uuid.uuid4()}", correlation_id, phone_number(caller)["rawId"],
                          phone_number(callee)["rawId"], caller_display_name)
        self.ringing[context] = ringing
        return ringing

    def answer(self, *, incoming_call_context: str, callback_uri: str, media: MediaOptions | None,
               operation_context: str | None) -> PeerCall:
        """Answer a call :meth:`ring` made; the call is ``connecting`` until :meth:`connect`."""
        ringing = self.ringing.get(incoming_call_context)
        if ringing is None:
            raise AcsError(400, "BadRequest", "incomingCallContext is not the context of a call this resource rang")
        if ringing.answered:
            raise AcsError(400, "BadRequest", "the incoming call was already answered")
        ringing.answered = True
        call = PeerCall(inbound=True, bot_id=self.bot_id, callback_uri=callback_uri, source=ringing.caller,
                        target=ringing.callee, media=media, operation_context=operation_context,
                        server_call_id=ringing.server_call_id, correlation_id=ringing.correlation_id)
        self._add(call)
        return call

    def create(self, *, target: str, callback_uri: str, media: MediaOptions | None, operation_context: str | None,
               source_caller_id: str | None) -> PeerCall:
        """An outbound call to raw id ``target``; it is ``connecting`` until :meth:`connect`."""
        if target.startswith("4:") and not source_caller_id:
            raise AcsError(400, "BadRequest", "sourceCallerIdNumber is required to call a phone number")
        call = PeerCall(inbound=False, bot_id=self.bot_id, callback_uri=callback_uri, source=self.bot_id,
                        target=target, media=media, operation_context=operation_context,
                        source_caller_id=source_caller_id)
        self._add(call)
        return call

    async def connect(self, call: PeerCall) -> None:
        """The far end is on the line: ``connected``, the connect callbacks, the media hook."""
        if call.state is not CallState.CONNECTING:
            return  # hung up before it connected
        call.set_state(CallState.CONNECTED)
        self._post(call, call.event("CallConnected"))
        self._post(call, call.event("ParticipantsUpdated", participants=call.participants(),
                                    sequenceNumber=call.next_sequence()))
        if call.media is None or not call.media.start or self.media is None:
            return
        connect = MediaConnect(
            transport_url=call.media.transport_url, call_connection_id=call.call_connection_id,
            server_call_id=call.server_call_id, correlation_id=call.correlation_id,
            audio_format=call.media.audio_format, sample_rate=call.media.sample_rate,
            audio_channel_type=call.media.audio_channel_type, bidirectional=call.media.bidirectional,
            token=self.signer.mint(self.resource_id, lifetime_s=MEDIA_TOKEN_LIFETIME_S),
            _on_connected=lambda: self._media_connected(call))
        self._connects[call.call_connection_id] = connect
        self._media_tasks[call.call_connection_id] = self._spawn(self._run_media(call, self.media, connect),
                                                                 f"acs-peer-media-{call.call_connection_id}")

    def _add(self, call: PeerCall) -> None:
        self.calls[call.call_connection_id] = call
        self._disconnected[call.call_connection_id] = asyncio.Event()

    async def disconnected(self, call_connection_id: str) -> None:
        """Return once the call is ``disconnected`` (its ``CallDisconnected`` queued)."""
        await self._disconnected[call_connection_id].wait()

    # --- lookups ------------------------------------------------------------------------------

    def live(self, call_connection_id: str) -> PeerCall:
        """A call that has not ended; raises 404 otherwise."""
        call = self.calls.get(call_connection_id)
        if call is None or call.ended:
            raise not_found(f"call {call_connection_id}")
        return call

    def get(self, call_connection_id: str) -> PeerCall:
        """A call the service still knows (not ``disconnected``); raises 404 otherwise."""
        call = self.calls.get(call_connection_id)
        if call is None or call.state is CallState.DISCONNECTED:
            raise not_found(f"call {call_connection_id}")
        return call

    # --- ending calls -------------------------------------------------------------------------

    def hang_up(self, call_connection_id: str) -> None:
        """The bot hangs up (for everyone, or leaves: in a two-party call either ends it)."""
        call = self.live(call_connection_id)
        call.set_state(CallState.DISCONNECTING)
        self._spawn(self._end(call, by_caller=False), f"acs-peer-hangup-{call_connection_id}")

    async def hang_up_from_caller(self, call_connection_id: str) -> None:
        """The far end hangs up; returns once ``CallDisconnected`` is queued."""
        call = self.live(call_connection_id)
        call.set_state(CallState.DISCONNECTING)
        await self._end(call, by_caller=True)

    def transfer(self, call_connection_id: str, *, target: str, operation_context: str | None,
                 operation_callback_uri: str | None) -> None:
        """Transfer the far end to raw id ``target``; the bot then leaves the call."""
        call = self.live(call_connection_id)
        if call.state is not CallState.CONNECTED:
            raise AcsError(400, "BadRequest", f"call {call_connection_id} is {call.state}, not connected")
        call.set_state(CallState.TRANSFERRING)
        self._spawn(self._transfer(call, target, operation_context, operation_callback_uri or call.callback_uri),
                    f"acs-peer-transfer-{call_connection_id}")

    async def _transfer(self, call: PeerCall, target: str, operation_context: str | None, url: str) -> None:
        if call.state is not CallState.TRANSFERRING:
            return  # hung up before the transfer went through
        call.set_state(CallState.TRANSFER_ACCEPTED)
        self._post(call, call.event("CallTransferAccepted", operation_context=operation_context,
                                    transferTarget=identifier(target), transferee=identifier(call.far_end)), url)
        call.set_state(CallState.DISCONNECTING)
        await self._end(call, by_caller=False)

    async def _end(self, call: PeerCall, *, by_caller: bool) -> None:
        cid = call.call_connection_id
        task, connect = self._media_tasks.get(cid), self._connects.get(cid)
        # The media socket closes first (as the far end leaves), then the events go out.
        if task is not None and connect is not None and task is not asyncio.current_task():
            connect.hung_up.set()
            done, _ = await asyncio.wait({task}, timeout=self.grace_s)
            if not done:
                logger.warning("call %s: the media hook did not close within %g s; cancelling it", cid, self.grace_s)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if by_caller:
            self._post(call, call.event("ParticipantsUpdated", sequenceNumber=call.next_sequence(), participants=[
                {"identifier": identifier(self.bot_id), "isMuted": False, "isOnHold": False}]))
        for recording in self.recordings.values():
            if recording.call is call and recording.state == "active":
                self._set_recording(recording, "inactive")
        if cid in self._started:
            self._post(call, call.event("MediaStreamingStopped", mediaStreamingUpdate={
                "contentType": "Audio", "mediaStreamingStatus": "mediaStreamingStopped",
                "mediaStreamingStatusDetails": "subscriptionStopped"}))
        self._post(call, call.event("CallDisconnected"))
        call.set_state(CallState.DISCONNECTED)
        self._disconnected[cid].set()
        self._connects.pop(cid, None)
        self._media_tasks.pop(cid, None)
        self._started.discard(cid)

    # --- media --------------------------------------------------------------------------------

    async def _run_media(self, call: PeerCall, hook: MediaHook, connect: MediaConnect) -> None:
        try:
            await hook(connect)
        except Exception as exc:  # the caller's failure ends its call, never the peer
            logger.warning("call %s: the media hook failed: %s: %s", call.call_connection_id, type(exc).__name__, exc)
        if call.call_connection_id not in self._started:  # the socket never opened
            self._post(call, call.event("MediaStreamingFailed", mediaStreamingUpdate={
                "contentType": "Audio", "mediaStreamingStatus": "mediaStreamingFailed",
                "mediaStreamingStatusDetails": "streamConnectionUnsuccessful"}))
        if not call.ended:  # the caller hung up
            call.set_state(CallState.DISCONNECTING)
            await self._end(call, by_caller=True)

    def _media_connected(self, call: PeerCall) -> None:
        if call.call_connection_id in self._started or call.ended:
            return
        self._started.add(call.call_connection_id)
        self._post(call, call.event("MediaStreamingStarted", mediaStreamingUpdate={
            "contentType": "Audio", "mediaStreamingStatus": "mediaStreamingStarted",
            "mediaStreamingStatusDetails": "subscriptionStarted"}))

    # --- recordings ---------------------------------------------------------------------------

    def start_recording(self, call_connection_id: str, *, callback_uri: str | None, paused: bool) -> Recording:
        """Start recording a connected call."""
        call = self.live(call_connection_id)
        recording = Recording(str(uuid.uuid4()), call, callback_uri or call.callback_uri, "inactive")
        self.recordings[recording.recording_id] = recording
        if not paused:
            self._set_recording(recording, "active")
        return recording

    def recording(self, recording_id: str) -> Recording:
        """A recording of a call that has not ended; raises 404 otherwise."""
        recording = self.recordings.get(recording_id)
        if recording is None or recording.call.ended:
            raise not_found(f"recording {recording_id}")
        return recording

    def stop_recording(self, recording_id: str) -> None:
        """Stop a recording (it is forgotten: a second stop is a 404)."""
        recording = self.recording(recording_id)
        if recording.state == "active":
            self._set_recording(recording, "inactive")
        del self.recordings[recording_id]

    def pause_recording(self, recording_id: str, *, pause: bool) -> None:
        """Pause (``pause``) or resume a recording."""
        recording = self.recording(recording_id)
        state = "inactive" if pause else "active"
        if recording.state != state:
            self._set_recording(recording, state)

    def _set_recording(self, recording: Recording, state: str) -> None:
        recording.state = state
        self._post(recording.call, recording.call.event("RecordingStateChanged", recordingId=recording.recording_id,
                                                        state=state, recordingKind="azureCommunicationServices"),
                   recording.callback_uri)

    # --- plumbing -----------------------------------------------------------------------------

    def _post(self, call: PeerCall, event: dict[str, Any], url: str | None = None) -> None:
        self.poster.post(call.call_connection_id, url or call.callback_uri, event)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self) -> None:
        """Wait until the peer is idle: its call tasks done (media hooks of live calls
        excepted: they run until the call ends), its callbacks delivered or given up."""
        while busy := self._tasks - set(self._media_tasks.values()):
            await asyncio.gather(*busy, return_exceptions=True)
        await self.poster.drain()

    async def aclose(self) -> None:
        """End every task (media hooks included) and close the callback sender."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.poster.aclose()
