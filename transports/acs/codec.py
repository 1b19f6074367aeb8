"""The sans-I/O codec of ACS bidirectional media streaming.

Nothing here touches a socket (STYLE.md, after python-websockets): the adapter that owns
the WebSocket hands each received message to ``MediaDecoder.decode`` and sends what
``MediaEncoder`` returns. Message shapes, and which fields are required, are in
``messages``.

Errors. ``decode`` raises ``pipeline.errors.ProtocolError`` (a ``ValueError``) for a
message it cannot use; the message names what was wrong and where. The adapter logs it
and reads the next message: one bad message never ends a call, and a refused message
leaves the decoder's state as it was, except that a refused ``AudioMetadata`` withdraws
the format (audio after it cannot be read safely at the old rate, so it is refused too,
each time naming the metadata error). Unknown kinds are not errors: ``decode`` returns
``UnknownKind`` and logs a warning the first time it sees each. The encoder raises
``FrameError`` for audio of ours that is not whole samples or is too long: that is a bug
upstream, not the caller's doing.

What we send. Two spellings are documented, and ACS accepts both:

* PascalCase, the default: the Python tab of the audio streaming quickstart sends
  exactly ``{"Kind": "AudioData", "AudioData": {"Data": "<b64>"}, "StopAudio": null}`` and
  ``{"Kind": "StopAudio", "AudioData": null, "StopAudio": {}}``, and the .NET SDK's
  ``OutStreamingData`` serialises its PascalCase properties the same way. It is the
  protocol as the Python documentation states it, so a Python server sends it.
* camelCase (``casing="camel"``): what the JS SDK's ``OutStreamingData`` sends,
  ``{"kind": "audioData", "audioData": {"data": "<b64>", "isSilent": false}, "stopAudio": {}}``
  and ``{"kind": "stopAudio", "stopAudio": {}}`` (its kind values are camelCase too, and
  it sets ``stopAudio`` to ``{}`` even on audio; we mirror it exactly rather than invent a
  third form).

Base64 never needs JSON escaping, so messages are assembled from fixed text around it.

The other side. ACS's own half of the protocol is here too, for the local ACS peer's media
caller (``transports.acs.peer.caller``): ``InboundEncoder`` writes what ACS sends, in the
documented camelCase, and ``OutboundDecoder`` reads what a server sends ACS, in either
spelling above (and any other casing of the same names), by ``kind``: the JS form carries
``stopAudio: {}`` on audio messages too, so the presence of a field decides nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

from pipeline.errors import ConfigError, FrameError, ProtocolError
from transports.acs.messages import (
    MAX_MESSAGE_CHARS,
    SUPPORTED_RATES,
    AudioChunk,
    AudioMetadata,
    BotAudio,
    Dtmf,
    FormatChanged,
    MediaEvent,
    OutboundEvent,
    StopAudio,
    UnknownKind,
    max_chunk_bytes,
)

__all__ = ["Casing", "InboundEncoder", "MediaDecoder", "MediaEncoder", "OutboundDecoder"]

logger = logging.getLogger(__name__)

Casing = Literal["pascal", "camel"]

_MISSING: Any = object()

# Keypad characters, and the tone names of the SDK's ``DtmfTone`` enum (checked in the
# tests against the installed SDK), accepted in case ACS names a tone rather than its key.
_DTMF_KEYS = frozenset("0123456789*#ABCD")
# The fields of an inbound AudioData as ACS spells them (the decoder's fast path).
_AUDIO_AS_SENT = frozenset({"data", "timestamp", "participantRawID", "silent"})
_DTMF_NAMES = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "a": "A", "b": "B", "c": "C", "d": "D",
    "pound": "#", "asterisk": "*",
}  # fmt: skip


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class _Fields:
    """A JSON object read by field name without regard to case, with typed getters whose
    errors name the field's path (``audioMetadata.sampleRate``)."""

    __slots__ = ("_fields", "_where")

    def __init__(self, obj: dict[str, Any], where: str) -> None:
        self._where = where
        self._fields: dict[str, tuple[str, Any]] = {}
        for key, value in obj.items():
            low = key.lower()
            if low in self._fields:
                raise ProtocolError(f"{self._path(key)}: given twice, as {self._fields[low][0]!r} and {key!r}")
            self._fields[low] = (key, value)

    def _path(self, name: str) -> str:
        return f"{self._where}.{name}" if self._where else name

    def raw(self, name: str) -> Any:
        """The value, or ``_MISSING``; JSON null counts as missing."""
        value = self._fields.get(name.lower(), (name, _MISSING))[1]
        return _MISSING if value is None else value

    def text(self, name: str) -> str | None:
        """A string field, or ``None`` when absent or empty."""
        value = self.raw(name)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            raise ProtocolError(f"{self._path(name)}: expected a string, got {_type_name(value)} {value!r:.40}")
        return value or None

    def need_text(self, name: str) -> str:
        """A string field that must be present and not empty."""
        value = self.text(name)
        if value is None:
            raise ProtocolError(f"{self._path(name)}: {'missing' if self.raw(name) is _MISSING else 'empty'}")
        return value

    def integer(self, name: str) -> int | None:
        """An integer field, or ``None`` when absent."""
        value = self.raw(name)
        if value is _MISSING:
            return None
        # bool is an int in Python, not in JSON
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProtocolError(f"{self._path(name)}: expected an integer, got {_type_name(value)} {value!r:.40}")
        return value

    def need_integer(self, name: str) -> int:
        """An integer field that must be present."""
        value = self.integer(name)
        if value is None:
            raise ProtocolError(f"{self._path(name)}: missing")
        return value

    def flag(self, name: str) -> bool:
        value = self.raw(name)
        if value is _MISSING:
            return False
        if not isinstance(value, bool):
            raise ProtocolError(f"{self._path(name)}: expected true or false, got {_type_name(value)} {value!r:.40}")
        return value

    def timestamp(self, name: str) -> datetime | None:
        text = self.text(name)
        if text is None:
            return None
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise ProtocolError(f"{self._path(name)}: not an ISO 8601 timestamp: {text!r:.60}") from None
        if when.tzinfo is None:
            raise ProtocolError(f"{self._path(name)}: timestamp has no time zone: {text!r:.60}")
        return when

    def child(self, name: str) -> _Fields:
        value = self.raw(name)
        if value is _MISSING:
            raise ProtocolError(f"{self._path(name)}: missing")
        if not isinstance(value, dict):
            raise ProtocolError(f"{self._path(name)}: expected an object, got {_type_name(value)}")
        return _Fields(value, self._path(name))


def _parse(message: str | bytes) -> dict[str, Any]:
    """One text message as a JSON object, refusing binary frames and oversized messages
    before any parsing."""
    if isinstance(message, bytes | bytearray | memoryview):
        raise ProtocolError(
            f"binary frame of {len(message)} bytes: ACS media messages are JSON text frames"
        )
    if len(message) > MAX_MESSAGE_CHARS:
        raise ProtocolError(f"message of {len(message)} characters is over the {MAX_MESSAGE_CHARS}-character bound")
    try:
        obj = json.loads(message)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ProtocolError("not JSON we can read: nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a JSON object, got {_type_name(obj)}")
    return obj


class MediaDecoder:
    """Turns the messages ACS sends on one call's media WebSocket into ``MediaEvent``s.

    It holds the stream's format: ``AudioData`` is read at the rate the last accepted
    ``AudioMetadata`` announced, and is refused before any. A later ``AudioMetadata`` with
    the same rate is returned as is (ACS may repeat it); with another rate it becomes
    ``FormatChanged``. Only PCM mono at 16 or 24 kHz is accepted (what ACS streams).
    """

    __slots__ = ("_format", "_metadata_error", "_unknown_seen")

    def __init__(self) -> None:
        self._format: AudioMetadata | None = None
        self._metadata_error: str | None = None
        self._unknown_seen: set[str] = set()

    @property
    def format(self) -> AudioMetadata | None:
        """The format audio is read in, or ``None`` before a usable ``AudioMetadata``."""
        return self._format

    def decode(self, message: str | bytes) -> MediaEvent:
        """Decode one WebSocket message; raises ``ProtocolError`` naming what was wrong."""
        obj = _parse(message)
        fast = self._audio_as_sent(obj)
        if fast is not None:
            return fast
        fields = _Fields(obj, "")
        kind = fields.need_text("kind")
        # Kind values are matched without regard to case too: the JS SDK writes "audioData".
        match kind.lower():
            case "audiometadata":
                return self._metadata(fields.child("audioMetadata"))
            case "audiodata":
                return self._audio(fields.child("audioData"))
            case "dtmfdata":
                return self._dtmf(fields.child("dtmfData"))
            case _:
                if kind not in self._unknown_seen:
                    self._unknown_seen.add(kind)
                    logger.warning("ACS media: ignoring messages of unknown kind %r", kind)
                return UnknownKind(kind)

    def _audio_as_sent(self, obj: dict[str, Any]) -> AudioChunk | None:
        """``AudioData`` spelled exactly as ACS sends it, read without the general path.

        Fifty of these arrive per call per second, so they skip the case-insensitive field
        table; the checks and the result are the same. Anything else (other kinds, other
        spellings, extra fields, a bad value) returns ``None`` and takes the general path,
        which names the problem.
        """
        fmt = self._format
        if fmt is None or obj.get("kind") != "AudioData" or len(obj) != 2:
            return None
        audio = obj.get("audioData")
        if type(audio) is not dict or not audio.keys() <= _AUDIO_AS_SENT:
            return None
        data, stamp = audio.get("data"), audio.get("timestamp")
        participant, silent = audio.get("participantRawID"), audio.get("silent", False)
        if (type(data) is not str or not (stamp is None or type(stamp) is str)
                or not (participant is None or type(participant) is str) or type(silent) is not bool):
            return None
        bound = max_chunk_bytes(fmt.sample_rate)
        if len(data) // 4 * 3 > bound + 2:
            return None
        try:
            pcm = base64.b64decode(data, validate=True)
            when = datetime.fromisoformat(stamp) if stamp else None
        except (binascii.Error, ValueError):
            return None
        if not pcm or len(pcm) % 2 or len(pcm) > bound or (when is not None and when.tzinfo is None):
            return None
        return AudioChunk(pcm=pcm, sample_rate=fmt.sample_rate, timestamp=when, participant=participant or None,
                          silent=silent)

    def _metadata(self, fields: _Fields) -> AudioMetadata | FormatChanged:
        try:
            meta = self._read_metadata(fields)
        except ProtocolError as exc:
            self._format, self._metadata_error = None, str(exc)
            raise
        old, self._format, self._metadata_error = self._format, meta, None
        if old is not None and old.sample_rate != meta.sample_rate:
            return FormatChanged(old=old, new=meta)
        return meta

    @staticmethod
    def _read_metadata(fields: _Fields) -> AudioMetadata:
        encoding = fields.need_text("encoding")
        rate = fields.need_integer("sampleRate")
        channels = fields.need_integer("channels")
        length = fields.integer("length")
        subscription = fields.text("subscriptionId")
        if encoding.upper() != "PCM":
            raise ProtocolError(f"audioMetadata.encoding: {encoding!r} is not supported (ACS streams 'PCM')")
        if rate not in SUPPORTED_RATES:
            raise ProtocolError(f"audioMetadata.sampleRate: {rate} Hz is not supported (16000 or 24000)")
        if channels != 1:
            raise ProtocolError(f"audioMetadata.channels: {channels} is not supported (mono only)")
        if length is not None and (length <= 0 or length % 2):
            raise ProtocolError(f"audioMetadata.length: {length} is not a positive whole number of samples")
        return AudioMetadata(
            sample_rate=rate, channels=channels, encoding=encoding, subscription_id=subscription, length=length
        )

    def _audio(self, fields: _Fields) -> AudioChunk:
        if self._format is None:
            why = (
                f"the last AudioMetadata was refused ({self._metadata_error})"
                if self._metadata_error
                else "no AudioMetadata has been received yet"
            )
            raise ProtocolError(f"AudioData before a usable AudioMetadata: {why}")
        data = fields.need_text("data")
        rate = self._format.sample_rate
        bound = max_chunk_bytes(rate)
        # Refuse before decoding: base64 is 4 characters per 3 bytes.
        if len(data) // 4 * 3 > bound + 2:
            raise ProtocolError(f"audioData.data: about {len(data) // 4 * 3} bytes, over the {bound}-byte bound")
        try:
            pcm = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"audioData.data: not valid base64 ({exc})") from None
        if len(pcm) % 2:
            raise ProtocolError(f"audioData.data: {len(pcm)} bytes is not whole 16-bit samples")
        if not pcm or len(pcm) > bound:
            raise ProtocolError(f"audioData.data: {len(pcm)} bytes; expected 2 to {bound} at {rate} Hz")
        return AudioChunk(
            pcm=pcm,
            sample_rate=rate,
            timestamp=fields.timestamp("timestamp"),
            participant=fields.text("participantRawID"),
            silent=fields.flag("silent"),
        )

    @staticmethod
    def _dtmf(fields: _Fields) -> Dtmf:
        data = fields.need_text("data")
        named = _DTMF_NAMES.get(data.strip().lower())
        digits = named if named is not None else data.upper()
        bad = "".join(sorted(set(digits) - _DTMF_KEYS))
        if bad:
            raise ProtocolError(f"dtmfData.data: {data!r:.40} is not keypad digits (0-9 * # A-D): {bad!r:.20}")
        return Dtmf(
            digits=digits,
            timestamp=fields.timestamp("timestamp"),
            participant=fields.text("participantRawID"),
        )


class MediaEncoder:
    """Writes the messages we send ACS: the bot's audio, and ``StopAudio`` on barge-in.

    ``sample_rate`` is the line rate the call was answered with (16000 or 24000); audio
    handed to ``audio`` must already be PCM16 mono at that rate, whole samples, at most
    ``MAX_CHUNK_MS`` long (the playout sends 20 ms frames: 640 bytes at 16 kHz, 960 at 24).
    """

    __slots__ = ("_audio_head", "_audio_tail", "_max_bytes", "_stop", "sample_rate")

    def __init__(self, sample_rate: int, *, casing: Casing = "pascal") -> None:
        if sample_rate not in SUPPORTED_RATES:
            raise ConfigError(f"ACS media sample rate {sample_rate} Hz is not supported (16000 or 24000)")
        self.sample_rate = sample_rate
        self._max_bytes = max_chunk_bytes(sample_rate)
        if casing == "pascal":
            self._audio_head = '{"Kind":"AudioData","AudioData":{"Data":"'
            self._audio_tail = '"},"StopAudio":null}'
            self._stop = '{"Kind":"StopAudio","AudioData":null,"StopAudio":{}}'
        elif casing == "camel":
            self._audio_head = '{"kind":"audioData","audioData":{"data":"'
            self._audio_tail = '","isSilent":false},"stopAudio":{}}'
            self._stop = '{"kind":"stopAudio","stopAudio":{}}'
        else:
            raise ConfigError(f"ACS media casing {casing!r} is not one of 'pascal', 'camel'")

    def audio(self, pcm: bytes) -> str:
        """One ``AudioData`` message carrying ``pcm``; ``FrameError`` if it is not whole
        samples, empty, or longer than the bound."""
        if len(pcm) % 2:
            raise FrameError(f"ACS outbound audio: {len(pcm)} bytes is not whole 16-bit samples")
        if not pcm or len(pcm) > self._max_bytes:
            raise FrameError(
                f"ACS outbound audio: {len(pcm)} bytes; expected 2 to {self._max_bytes} at {self.sample_rate} Hz"
            )
        return self._audio_head + base64.b64encode(pcm).decode("ascii") + self._audio_tail

    def stop_audio(self) -> str:
        """The ``StopAudio`` message: ACS drops the audio it has queued for playing."""
        return self._stop


def _acs_time(when: datetime) -> str:
    """A timestamp as ACS writes it: UTC, milliseconds, ``Z`` (``2024-11-15T19:16:12.925Z``)."""
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


class InboundEncoder:
    """Writes what ACS sends on a call's media socket (for the local ACS peer's caller).

    Messages are the documented camelCase (``messages`` shows them): ``AudioMetadata``
    first, then ``AudioData`` with the audio's ``timestamp``, the speaker's
    ``participantRawID`` and ``silent``, and ``DtmfData``. ``sample_rate`` is the line
    rate the call was answered with; audio must be whole samples, at most ``MAX_CHUNK_MS``.
    """

    __slots__ = ("_max_bytes", "_participant", "_subscription", "sample_rate")

    def __init__(self, sample_rate: int, *, participant: str | None = None, subscription_id: str = "") -> None:
        if sample_rate not in SUPPORTED_RATES:
            raise ConfigError(f"ACS media sample rate {sample_rate} Hz is not supported (16000 or 24000)")
        self.sample_rate = sample_rate
        self._max_bytes = max_chunk_bytes(sample_rate)
        # Ids are the only free text: JSON-escaped once here.
        self._participant = "" if participant is None else f'"participantRawID":{json.dumps(participant)},'
        self._subscription = json.dumps(subscription_id)

    def metadata(self, *, frame_bytes: int) -> str:
        """The ``AudioMetadata`` message that opens the stream (``length``: bytes per frame)."""
        return ('{"kind":"AudioMetadata","audioMetadata":{"subscriptionId":' + self._subscription
                + f',"encoding":"PCM","sampleRate":{self.sample_rate},"channels":1,"length":{frame_bytes}}}}}')

    def audio(self, pcm: bytes, *, timestamp: datetime, silent: bool) -> str:
        """One ``AudioData`` message; ``FrameError`` if ``pcm`` is not whole samples or too long."""
        if len(pcm) % 2 or not pcm or len(pcm) > self._max_bytes:
            raise FrameError(f"ACS inbound audio: {len(pcm)} bytes; expected whole 16-bit samples, "
                             f"2 to {self._max_bytes} at {self.sample_rate} Hz")
        return (f'{{"kind":"AudioData","audioData":{{"timestamp":"{_acs_time(timestamp)}",{self._participant}'
                f'"data":"{base64.b64encode(pcm).decode("ascii")}","silent":{"true" if silent else "false"}}}}}')

    def dtmf(self, digits: str, *, timestamp: datetime) -> str:
        """One ``DtmfData`` message with keypad ``digits`` (``0-9 * # A-D``)."""
        bad = "".join(sorted(set(digits.upper()) - _DTMF_KEYS))
        if not digits or bad:
            raise FrameError(f"ACS DTMF: {digits!r:.40} is not keypad digits (0-9 * # A-D)")
        return (f'{{"kind":"DtmfData","dtmfData":{{"timestamp":"{_acs_time(timestamp)}",{self._participant}'
                f'"data":"{digits.upper()}"}}}}')


class OutboundDecoder:
    """Reads what a server sends ACS (for the local ACS peer's caller): the bot's audio and
    ``StopAudio``, in PascalCase or camelCase (see the module docstring).

    ``sample_rate`` is the call's line rate: audio must be whole samples and at most
    ``MAX_CHUNK_MS`` at it. Errors are ``ProtocolError`` naming what was wrong, as in
    ``MediaDecoder``; unknown kinds come back as ``UnknownKind``.
    """

    __slots__ = ("_max_bytes", "sample_rate")

    def __init__(self, sample_rate: int) -> None:
        if sample_rate not in SUPPORTED_RATES:
            raise ConfigError(f"ACS media sample rate {sample_rate} Hz is not supported (16000 or 24000)")
        self.sample_rate = sample_rate
        self._max_bytes = max_chunk_bytes(sample_rate)

    def decode(self, message: str | bytes) -> OutboundEvent:
        """Decode one message from the server; raises ``ProtocolError`` naming what was wrong."""
        fields = _Fields(_parse(message), "")
        kind = fields.need_text("kind")
        match kind.lower():
            case "audiodata":
                return self._audio(fields.child("audioData"))
            case "stopaudio":
                return StopAudio()
            case _:
                return UnknownKind(kind)

    def _audio(self, fields: _Fields) -> BotAudio:
        data = fields.need_text("data")
        if len(data) // 4 * 3 > self._max_bytes + 2:
            raise ProtocolError(f"audioData.data: about {len(data) // 4 * 3} bytes, over the "
                                f"{self._max_bytes}-byte bound")
        try:
            pcm = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"audioData.data: not valid base64 ({exc})") from None
        if len(pcm) % 2 or not pcm or len(pcm) > self._max_bytes:
            raise ProtocolError(f"audioData.data: {len(pcm)} bytes; expected whole 16-bit samples, "
                                f"2 to {self._max_bytes} at {self.sample_rate} Hz")
        return BotAudio(pcm)
