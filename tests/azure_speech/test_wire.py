"""The USP framing: what the Python SDK sends parses; what we frame, parses back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.errors import ProtocolError
from processors.azure_speech.peer.wire import (
    binary_message,
    new_request_id,
    parse_binary,
    parse_text,
    text_message,
    timestamp,
)

# Logged from azure-cognitiveservices-speech 1.53 (Python) against a bare WebSocket server.
SDK_CONTEXT = (
    "X-Timestamp:2026-11-26T19:15:42.555Z\r\nPath:speech.context\r\n"
    "X-RequestId:42886f7d9c8a402eb45f3f25aed4d491\r\n\r\n"
    '{"phraseDetection":{"language":"en-us"},"audio":{"streams":{"1":null}}}'
)
SDK_AUDIO_HEADERS = (
    b"X-Timestamp:2026-11-26T19:15:42.555Z\r\nPath:audio\r\nContent-Type:audio/x-wav\r\n"
    b"X-RequestId:42886f7d9c8a402eb45f3f25aed4d491\r\nX-StreamId:1\r\n"
)


def test_sdk_text_message() -> None:
    m = parse_text(SDK_CONTEXT)
    assert m.path == "speech.context"
    assert m.request_id == "42886f7d9c8a402eb45f3f25aed4d491"
    assert m.headers["x-requestid"] == m.request_id  # case-insensitive
    assert m.body == '{"phraseDetection":{"language":"en-us"},"audio":{"streams":{"1":null}}}'
    assert not m.binary


def test_sdk_audio_message() -> None:
    riff = b"RIFF\x00\x00\x00\x00WAVEfmt "
    m = parse_binary(len(SDK_AUDIO_HEADERS).to_bytes(2, "big") + SDK_AUDIO_HEADERS + riff)
    assert (m.path, m.headers["X-StreamId"], m.headers["Content-Type"]) == ("audio", "1", "audio/x-wav")
    assert m.body == riff and m.binary


def test_round_trip_both_kinds() -> None:
    when = datetime(2026, 11, 26, 19, 0, 1, 234567, tzinfo=UTC)
    text = text_message("turn.start", '{"context":{}}', request_id="abc", when=when)
    assert text == (
        "Path:turn.start\r\nX-Timestamp:2026-11-26T19:00:01.234Z\r\nX-RequestId:abc\r\n"
        'Content-Type:application/json; charset=utf-8\r\n\r\n{"context":{}}'
    )
    assert parse_text(text).body == '{"context":{}}'
    frame = binary_message("audio", b"\x01\x02\x03", request_id="abc", headers={"X-StreamId": "7"}, when=when)
    assert int.from_bytes(frame[:2], "big") == len(frame) - 2 - 3
    m = parse_binary(frame)
    assert (m.path, m.request_id, m.headers["X-StreamId"], m.body) == ("audio", "abc", "7", b"\x01\x02\x03")


def test_spaces_after_colon_are_accepted() -> None:
    assert parse_text("Path: turn.end\r\nX-RequestId: r\r\n\r\n{}").path == "turn.end"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("Path:x\r\n{}", "no blank line"),
        ("X-RequestId:r\r\n\r\n{}", "no Path"),
        ("Path:x\r\ngarbage line\r\n\r\n{}", "header line 2 'garbage line'"),
        ("Bad Name:x\r\nPath:p\r\n\r\n", "header line 1"),
    ],
)
def test_bad_text(data: str, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle):
        parse_text(data)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\x00", "shorter than its 2-byte"),
        (b"\x00\x10Path:a", "header length 16 does not fit in 8 bytes"),
        (b"\xff\xff" + b"x" * 70000, "header length 65535"),
        (b"\x00\x06Path:\xe9", "not ASCII"),
        (b"\x00\x09Stream:1\n", "no Path"),
    ],
)
def test_bad_binary(data: bytes, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle):
        parse_binary(data)


def test_ids_and_timestamps() -> None:
    rid = new_request_id()
    assert len(rid) == 32 and int(rid, 16) >= 0
    assert timestamp(datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)) == "2026-01-02T03:04:05.006Z"


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        text_message("x", "", request_id=None, headers={"X-A": "b\r\nPath:evil"})
