"""Azure Communication Services: phone calls. ``messages`` and ``codec`` are the media
plane's sans-I/O protocol (ACS bidirectional media streaming over a WebSocket);
``media.AcsMediaTransport`` is the transport that owns one call's socket (imported from
its module, so the codec stays free of the engine). ``route`` serves the socket at
``/acs/media`` with tokens from ``sessions.CallSessions``; ``events`` answers Event Grid's
IncomingCall at ``/acs/events``; ``peer`` is the local ACS for tests."""

from transports.acs.codec import Casing, MediaDecoder, MediaEncoder
from transports.acs.messages import (
    AUDIO_FORMATS,
    MAX_CHUNK_MS,
    MAX_MESSAGE_CHARS,
    SUPPORTED_RATES,
    AudioChunk,
    AudioMetadata,
    Dtmf,
    FormatChanged,
    MediaEvent,
    UnknownKind,
    max_chunk_bytes,
)

__all__ = [
    "MediaDecoder",
    "MediaEncoder",
    "Casing",
    "MediaEvent",
    "AudioMetadata",
    "AudioChunk",
    "Dtmf",
    "FormatChanged",
    "UnknownKind",
    "SUPPORTED_RATES",
    "AUDIO_FORMATS",
    "MAX_CHUNK_MS",
    "MAX_MESSAGE_CHARS",
    "max_chunk_bytes",
]
