"""One call as the local ACS sees it: its state, its identities and the JSON ACS shows of it.

Pure (no I/O): :class:`PeerCall` holds a call's ids, callback URI, parties and media
streaming options; :meth:`PeerCall.set_state` moves it through the states the service
reports (``CallConnectionState`` in the SDK's ``_generated/models/_enums.py``) and
records each move; :meth:`PeerCall.properties` is the ``CallConnectionProperties`` body
the REST endpoint returns; :meth:`PeerCall.event` builds one callback CloudEvent.

The CloudEvent shape and the ``data`` field names follow the contract
(/work/wt/brief/contract.md) and were checked against the installed SDK's generated
event models (``CallConnected``, ``CallDisconnected``, ``CallTransferAccepted``,
``ParticipantsUpdated``, ``RecordingStateChanged``, ``MediaStreamingStarted`` with
``MediaStreamingUpdate``, ``ResultInformation``) and the JS/.NET SDK reference pages for
``CallConnected`` (callConnectionId, serverCallId, correlationId, operationContext,
resultInformation).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from transports.acs.messages import AUDIO_FORMATS

__all__ = [
    "EVENT_PREFIX",
    "CallState",
    "MediaOptions",
    "PeerCall",
    "bad_request",
    "identifier",
    "phone_number",
]

logger = logging.getLogger(__name__)

EVENT_PREFIX = "Microsoft.Communication."
#: ACS streams 16 kHz unless the request names another format.
DEFAULT_AUDIO_FORMAT = "pcm16KMono"
_RATE_OF_FORMAT = {fmt: rate for rate, fmt in AUDIO_FORMATS.items()}
#: Events whose models have no ``operationContext`` (they answer no operation of ours).
_NO_OPERATION_CONTEXT = frozenset({"ParticipantsUpdated", "RecordingStateChanged"})


class CallState(StrEnum):
    """``callConnectionState`` values, as the service spells them."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    TRANSFERRING = "transferring"
    TRANSFER_ACCEPTED = "transferAccepted"
    DISCONNECTING = "disconnecting"
    DISCONNECTED = "disconnected"


#: Allowed moves; anything else is a bug in the peer, not bad input.
_MOVES: dict[CallState, frozenset[CallState]] = {
    CallState.CONNECTING: frozenset({CallState.CONNECTED, CallState.DISCONNECTING}),
    CallState.CONNECTED: frozenset({CallState.TRANSFERRING, CallState.DISCONNECTING}),
    CallState.TRANSFERRING: frozenset({CallState.TRANSFER_ACCEPTED, CallState.DISCONNECTING}),
    CallState.TRANSFER_ACCEPTED: frozenset({CallState.DISCONNECTING}),
    CallState.DISCONNECTING: frozenset({CallState.DISCONNECTED}),
    CallState.DISCONNECTED: frozenset(),
}


def bad_request(message: str) -> ValueError:
    """The error a malformed request body raises (the REST layer answers 400 with it)."""
    return ValueError(message)


def phone_number(number: str) -> dict[str, Any]:
    """The ``CommunicationIdentifierModel`` JSON of a phone number (``rawId`` ``4:<number>``)."""
    return {"kind": "phoneNumber", "rawId": f"4:{number}", "phoneNumber": {"value": number}}


def identifier(raw_id: str) -> dict[str, Any]:
    """The ``CommunicationIdentifierModel`` JSON of a raw id (phone numbers or ACS users)."""
    if raw_id.startswith("4:"):
        return phone_number(raw_id[2:])
    return {"kind": "communicationUser", "rawId": raw_id, "communicationUser": {"id": raw_id}}


def raw_id_of(model: Any, where: str) -> str:
    """The raw id of a ``CommunicationIdentifierModel`` from a request (the SDK sends rawId and
    the kind's sub-object, not always ``kind``); raises :func:`bad_request`."""
    if not isinstance(model, dict):
        raise bad_request(f"{where} must be a CommunicationIdentifierModel object")
    raw = model.get("rawId")
    phone = model.get("phoneNumber")
    if isinstance(phone, dict) and isinstance(phone.get("value"), str) and phone["value"]:
        return raw if isinstance(raw, str) and raw else f"4:{phone['value']}"
    if isinstance(raw, str) and raw:
        return raw
    user = model.get("communicationUser")
    if isinstance(user, dict) and isinstance(user.get("id"), str) and user["id"]:
        return str(user["id"])
    raise bad_request(f"{where} has neither rawId nor a phoneNumber/communicationUser id")


@dataclass(frozen=True, slots=True)
class MediaOptions:
    """The ``mediaStreamingOptions`` of an answer or create request."""

    transport_url: str
    audio_format: str
    content_type: str
    audio_channel_type: str
    start: bool
    bidirectional: bool

    @property
    def sample_rate(self) -> int:
        """Hz of the PCM the socket carries."""
        return _RATE_OF_FORMAT[self.audio_format]

    @classmethod
    def parse(cls, body: Any) -> MediaOptions | None:
        """The options of a request body's ``mediaStreamingOptions`` (``None`` if absent);
        raises :func:`bad_request` naming the bad field."""
        if body is None:
            return None
        if not isinstance(body, dict):
            raise bad_request("mediaStreamingOptions must be an object")
        transport = body.get("transportType")
        if not isinstance(transport, str) or transport.lower() != "websocket":
            raise bad_request(f"mediaStreamingOptions.transportType must be websocket, got {transport!r:.40}")
        url = body.get("transportUrl")
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise bad_request(f"mediaStreamingOptions.transportUrl must be a ws:// or wss:// URL, got {url!r:.80}")
        channel = body.get("audioChannelType")
        if channel not in ("mixed", "unmixed"):
            raise bad_request(f"mediaStreamingOptions.audioChannelType must be mixed or unmixed, got {channel!r}")
        fmt = body.get("audioFormat", DEFAULT_AUDIO_FORMAT)
        if fmt not in _RATE_OF_FORMAT:
            raise bad_request(f"mediaStreamingOptions.audioFormat must be one of {sorted(_RATE_OF_FORMAT)}, "
                              f"got {fmt!r:.40}")
        return cls(transport_url=url, audio_format=fmt, content_type=str(body.get("contentType", "audio")),
                   audio_channel_type=channel, start=body.get("startMediaStreaming") is True,
                   bidirectional=body.get("enableBidirectional") is True)


class PeerCall:
    """One call connection (see module docstring). ``source`` and ``target`` are raw ids:
    for an answered (``inbound``) call the caller and the number it rang; for a created one
    ``bot_id`` (our application's identity) and the callee."""

    def __init__(self, *, inbound: bool, bot_id: str, callback_uri: str, source: str, target: str,
                 media: MediaOptions | None,
                 operation_context: str | None = None, server_call_id: str | None = None,
                 correlation_id: str | None = None, source_caller_id: str | None = None) -> None:
        self.inbound = inbound
        self.bot_id = bot_id
        self.call_connection_id = str(uuid.uuid4())
        self.server_call_id = server_call_id or f"aHR0cHM6Ly9wZWVyLmxvY2FsL2NhbGxz/{uuid.uuid4()}"
        self.correlation_id = correlation_id or str(uuid.uuid4())
        self.callback_uri = callback_uri
        self.source = source
        self.target = target
        self.source_caller_id = source_caller_id
        self.media = media
        self.operation_context = operation_context
        self.state = CallState.CONNECTING
        #: Every state the call was in, in order.
        self.states: list[CallState] = [CallState.CONNECTING]
        self._sequence = 0

    def set_state(self, new: CallState) -> None:
        """Move to ``new`` (an illegal move is a peer bug: AssertionError)."""
        if new not in _MOVES[self.state]:
            raise AssertionError(f"call {self.call_connection_id}: {self.state} -> {new} is not a legal move")
        logger.info("call %s: %s -> %s", self.call_connection_id, self.state, new)
        self.state = new
        self.states.append(new)

    @property
    def ended(self) -> bool:
        """Disconnecting or disconnected: no more actions are accepted."""
        return self.state in (CallState.DISCONNECTING, CallState.DISCONNECTED)

    def properties(self) -> dict[str, Any]:
        """The ``CallConnectionProperties`` JSON of the call as it is now."""
        props: dict[str, Any] = {
            "callConnectionId": self.call_connection_id,
            "serverCallId": self.server_call_id,
            "targets": [identifier(self.target)],
            "callConnectionState": str(self.state),
            "callbackUri": self.callback_uri,
            "source": identifier(self.source),
            "correlationId": self.correlation_id,
        }
        if self.source_caller_id:
            props["sourceCallerIdNumber"] = phone_number(self.source_caller_id)["phoneNumber"]
        if self.media is not None:
            props["mediaStreamingSubscription"] = {
                "id": f"media-{self.call_connection_id}", "state": "active" if self.media.start else "inactive",
                "subscribedContentTypes": [self.media.content_type]}
        return props

    @property
    def far_end(self) -> str:
        """The raw id of the other party: the caller, or the callee of a created call."""
        return self.source if self.inbound else self.target

    def participants(self) -> list[dict[str, Any]]:
        """The ``CallParticipant`` JSON of everyone in the call: the far end and the bot."""
        return [{"identifier": identifier(raw), "isMuted": False, "isOnHold": False}
                for raw in (self.far_end, self.bot_id)]

    def next_sequence(self) -> int:
        """The next ``ParticipantsUpdated.sequenceNumber`` of this call (1, 2, ...)."""
        self._sequence += 1
        return self._sequence

    def event(self, kind: str, *, operation_context: str | None = None, **data: Any) -> dict[str, Any]:
        """One callback CloudEvent of type ``Microsoft.Communication.<kind>``; ``data`` adds
        event fields. (No ``resultInformation``: its codes are the service's own; we leave
        them out rather than invent them.)"""
        source = f"calling/callConnections/{self.call_connection_id}"
        body: dict[str, Any] = {"callConnectionId": self.call_connection_id, "serverCallId": self.server_call_id,
                                "correlationId": self.correlation_id}
        context = operation_context if operation_context is not None else self.operation_context
        if context is not None and kind not in _NO_OPERATION_CONTEXT:
            body["operationContext"] = context
        body.update(data)
        return {"id": str(uuid.uuid4()), "source": source, "type": EVENT_PREFIX + kind, "specversion": "1.0",
                "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "datacontenttype": "application/json", "subject": source, "data": body}
