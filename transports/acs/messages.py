"""The messages of ACS bidirectional media streaming, as typed events, and their bounds.

What ACS sends over the media WebSocket (text frames, one JSON object each) becomes one of
these frozen events; ``codec.MediaDecoder`` makes them, ``codec.MediaEncoder`` writes the
other direction. Field names were checked against the public protocol documentation
(``audio-streaming-quickstart``, Python and C# tabs) and the official SDKs' streaming
parsers (.NET ``StreamingDataParser`` and the ``*Internal`` models, JS ``StreamingData``);
the Python SDK (``azure-communication-callautomation`` 1.6.0, also 1.3.0b2, 1.4.0b1 and
1.6.0b1) has no streaming models at all, only the control-plane enums used here
(``AudioFormat``: ``pcm16KMono``/``pcm24KMono``; ``DtmfTone``: ``zero`` .. ``pound``).

Inbound, as documented (the payload sits under the camelCase of its kind)::

    {"kind": "AudioMetadata", "audioMetadata": {"subscriptionId": "...", "encoding": "PCM",
                                                "sampleRate": 16000, "channels": 1, "length": 640}}
    {"kind": "AudioData", "audioData": {"timestamp": "2024-11-15T19:16:12.925Z",
                                        "participantRawID": "8:acs:...", "data": "<b64>", "silent": false}}
    {"kind": "DtmfData", "dtmfData": {"data": "3"}}

Field names are matched without regard to case: the documents and SDKs spell the same
fields ``kind``/``Kind``, ``audioData``/``AudioData``, ``participantRawID``/``participantRawId``,
and a name given twice in two casings is an error rather than a guess.

Which fields are required, and why: a message is refused only when what it carries
cannot be used. ``AudioMetadata`` needs ``encoding``, ``sampleRate`` and ``channels`` (the
audio cannot be read without them); ``subscriptionId`` and ``length`` are descriptive
(the JS SDK no longer reads ``length``). ``AudioData`` needs ``data``; ``timestamp``,
``participantRawID`` and ``silent`` are optional, as in every SDK's model, so a caller's
audio is never dropped over a descriptive field. ``DtmfData`` needs ``data`` (the docs'
example has nothing else). A descriptive field that is present must still have the right
type (a string ``sampleRate``, a string ``silent`` or a timestamp that is not ISO 8601
are errors); an empty string there counts as absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "SUPPORTED_RATES",
    "AUDIO_FORMATS",
    "MAX_CHUNK_MS",
    "MAX_MESSAGE_CHARS",
    "AudioMetadata",
    "AudioChunk",
    "Dtmf",
    "FormatChanged",
    "UnknownKind",
    "MediaEvent",
    "BotAudio",
    "StopAudio",
    "OutboundEvent",
    "max_chunk_bytes",
]

#: The line rates ACS streams, exactly the SDK's ``AudioFormat`` (``pcm16KMono``, ``pcm24KMono``).
SUPPORTED_RATES: tuple[int, ...] = (16_000, 24_000)

#: Each line rate's name in Call Automation's ``MediaStreamingOptions.audio_format``
#: (the SDK's ``AudioFormat`` values), for answering a call at the rate we decode.
AUDIO_FORMATS: dict[int, str] = {16_000: "pcm16KMono", 24_000: "pcm24KMono"}

#: The longest audio one message may carry, either way. ACS sends 20 ms frames; a second
#: is fifty of them, ample for a bot that sends larger chunks, and it keeps a message
#: (base64 plus envelope) under ``MAX_MESSAGE_CHARS`` at 24 kHz.
MAX_CHUNK_MS = 1_000

#: The longest text message read at all (characters, checked before JSON parsing). One
#: second at 24 kHz is 48,000 bytes, 64,000 characters of base64; the bound doubles that,
#: so anything larger is hostile or broken and is refused without being parsed.
MAX_MESSAGE_CHARS = 128 * 1024


def max_chunk_bytes(sample_rate: int) -> int:
    """The most PCM16 mono bytes one message may carry at ``sample_rate`` (``MAX_CHUNK_MS``)."""
    return sample_rate * MAX_CHUNK_MS // 1000 * 2


@dataclass(frozen=True, slots=True)
class AudioMetadata:
    """The stream's format, sent by ACS before any audio (and possibly again later).

    ``length`` is ACS's frame size in bytes (640 for 20 ms at 16 kHz), as announced;
    ``subscription_id`` identifies the media subscription. Both may be absent.
    """

    sample_rate: int
    channels: int = 1
    encoding: str = "PCM"
    subscription_id: str | None = None
    length: int | None = None


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """One chunk of caller audio: PCM16 little-endian mono at ``sample_rate``.

    ``silent`` is ACS's own flag that the chunk holds only silence; the chunk still
    carries its samples, and it still reaches VAD and endpointing (silence is what ends
    a turn). ``timestamp`` is when ACS sourced the audio; ``participant`` the speaker's
    raw id, when ACS names one.
    """

    pcm: bytes
    sample_rate: int
    timestamp: datetime | None = None
    participant: str | None = None
    silent: bool = False

    @property
    def duration_ms(self) -> float:
        """How much audio the chunk holds."""
        return len(self.pcm) / 2 / self.sample_rate * 1000


@dataclass(frozen=True, slots=True)
class Dtmf:
    """Keypad digits the caller pressed, as characters from ``0-9 * # A-D``."""

    digits: str
    timestamp: datetime | None = None
    participant: str | None = None


@dataclass(frozen=True, slots=True)
class FormatChanged:
    """ACS announced a different sample rate mid-call; audio from now on is at ``new``'s.

    The consumer must reconfigure whatever depends on the rate (the resampler) before
    the next chunk; the decoder already reads chunks at the new rate.
    """

    old: AudioMetadata
    new: AudioMetadata


@dataclass(frozen=True, slots=True)
class UnknownKind:
    """A well-formed message of a kind this codec does not know (ACS adds kinds over time;
    transcription kinds arrive when transcription is on). Ignore it; it is not an error."""

    kind: str


MediaEvent = AudioMetadata | AudioChunk | Dtmf | FormatChanged | UnknownKind


@dataclass(frozen=True, slots=True)
class BotAudio:
    """One chunk of the bot's audio as we send it to ACS (read back by the local ACS peer's
    caller): PCM16 mono at the call's line rate."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class StopAudio:
    """We asked ACS to drop the bot audio it has queued for playing (a barge-in)."""


OutboundEvent = BotAudio | StopAudio | UnknownKind
