"""The Speech service's WebSocket message framing (the "USP" subprotocol), both directions,
sans I/O: strings and bytes in, :class:`Message` out, and back.

What the Python SDK 1.53 sends (logged against a bare WebSocket server) and what the
JavaScript SDK's ``WebsocketMessageFormatter`` documents agree:

- A text message is header lines ``Name:Value`` each ended by CRLF, one more CRLF, then
  the body (JSON, or SSML for synthesis)::

      X-Timestamp:2026-11-26T19:15:42.555Z\\r\\nPath:speech.context\\r\\n
      X-RequestId:4288...\\r\\n\\r\\n{"phraseDetection": ...}

- A binary message is a 2-byte big-endian length of the header block, the header block
  (same ``Name:Value\\r\\n`` lines, no blank line), then the payload. Audio from the SDK is
  ``Path:audio`` with ``X-StreamId``; its first message carries a RIFF/WAVE header, and an
  empty payload ends the stream.

Header names are matched case-insensitively; a value may be preceded by spaces (the
service's own messages use ``Name:Value``, other writers ``Name: Value``). Every message
must have a ``Path``. Anything else is a :class:`~pipeline.errors.ProtocolError` whose
message says what was wrong, for the peer to close that connection with.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.errors import ProtocolError

__all__ = [
    "MAX_HEADER_BYTES",
    "Headers",
    "Message",
    "binary_message",
    "new_request_id",
    "parse_binary",
    "parse_text",
    "text_message",
    "timestamp",
]

MAX_HEADER_BYTES = 8 * 1024  # the SDK's headers are ~140 bytes; anything near 64 kB is garbage
CRLF = "\r\n"


class Headers(Mapping[str, str]):
    """Message headers in their order, looked up case-insensitively."""

    __slots__ = ("_index", "_items")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._index = {name.lower(): value for name, value in items}

    def __getitem__(self, name: str) -> str:
        return self._index[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True, slots=True)
class Message:
    """One parsed message. ``body`` is ``str`` for text messages, ``bytes`` for binary."""

    path: str
    headers: Headers
    body: str | bytes

    @property
    def request_id(self) -> str | None:
        """``X-RequestId``, the turn this message belongs to (absent on ``speech.config``)."""
        return self.headers.get("X-RequestId")

    @property
    def binary(self) -> bool:
        """True for a binary message (audio)."""
        return isinstance(self.body, bytes)


def _parse_headers(block: str, kind: str) -> Headers:
    items: list[tuple[str, str]] = []
    for number, line in enumerate(block.split(CRLF), start=1):
        if not line:
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or any(c in name for c in " \t"):
            raise ProtocolError(f"{kind} message: header line {number} {line[:60]!r} is not 'Name:Value'")
        items.append((name, value.strip()))
    headers = Headers(items)
    if not headers.get("Path"):
        raise ProtocolError(f"{kind} message has no Path header")
    return headers


def parse_text(data: str) -> Message:
    """Parse a text message: headers, a blank line, the body.

    Raises:
        ProtocolError: no blank line after the headers, a malformed header, no ``Path``.
    """
    block, sep, body = data.partition(CRLF + CRLF)
    if not sep:
        raise ProtocolError("text message: no blank line (CRLF CRLF) after the headers")
    if len(block) > MAX_HEADER_BYTES:
        raise ProtocolError(f"text message: headers longer than {MAX_HEADER_BYTES} bytes")
    headers = _parse_headers(block, "text")
    return Message(headers["Path"], headers, body)


def parse_binary(data: bytes) -> Message:
    """Parse a binary message: 2-byte big-endian header length, headers, payload.

    Raises:
        ProtocolError: too short, a header length past the end, headers that are not
            ASCII, a malformed header, no ``Path``.
    """
    if len(data) < 2:
        raise ProtocolError(f"binary message of {len(data)} bytes: shorter than its 2-byte header length")
    size = int.from_bytes(data[:2], "big")
    if size > MAX_HEADER_BYTES or 2 + size > len(data):
        raise ProtocolError(f"binary message: header length {size} does not fit in {len(data)} bytes")
    try:
        block = data[2 : 2 + size].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"binary message: headers are not ASCII (byte {exc.start})") from None
    headers = _parse_headers(block, "binary")
    return Message(headers["Path"], headers, data[2 + size :])


def timestamp(when: datetime | None = None) -> str:
    """``X-Timestamp``'s form: ISO 8601 UTC with milliseconds and a ``Z``."""
    when = when or datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def new_request_id() -> str:
    """A request id as the SDKs make them: 32 lowercase hex digits, no dashes."""
    return uuid.uuid4().hex


def _header_block(path: str, request_id: str | None, content_type: str | None,
                  extra: Mapping[str, str] | None, when: datetime | None) -> str:
    lines = [f"Path:{path}", f"X-Timestamp:{timestamp(when)}"]
    if request_id is not None:
        lines.append(f"X-RequestId:{request_id}")
    if content_type is not None:
        lines.append(f"Content-Type:{content_type}")
    for name, value in (extra or {}).items():
        if any(c in name + value for c in "\r\n") or ":" in name:
            raise ValueError(f"header {name!r} has a line break or colon")
        lines.append(f"{name}:{value}")
    return "".join(line + CRLF for line in lines)


def text_message(
    path: str,
    body: str,
    *,
    request_id: str | None,
    content_type: str | None = "application/json; charset=utf-8",
    headers: Mapping[str, str] | None = None,
    when: datetime | None = None,
) -> str:
    """Frame a text message (``Path``, ``X-Timestamp``, ``X-RequestId``, ``Content-Type``,
    then ``headers``)."""
    return _header_block(path, request_id, content_type, headers, when) + CRLF + body


def binary_message(
    path: str,
    payload: bytes,
    *,
    request_id: str | None,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
    when: datetime | None = None,
) -> bytes:
    """Frame a binary message (audio: ``path="audio"``, ``headers={"X-StreamId": ...}``)."""
    block = _header_block(path, request_id, content_type, headers, when).encode("ascii")
    if len(block) > MAX_HEADER_BYTES:
        raise ValueError(f"headers of {len(block)} bytes are longer than {MAX_HEADER_BYTES}")
    return len(block).to_bytes(2, "big") + block + payload
