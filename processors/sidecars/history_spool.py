"""The history journal: operations the store could not take, kept on disk until it can.

A :class:`Spool` is a JSON-lines file. Each line is one operation with its number and a
CRC-32 of its JSON (``{"n": 7, "crc": 123, "op": {...}}``), so a line cut short by a
crash, or damaged on disk, is recognised, skipped, counted and logged instead of
stopping the replay. A second small file (``<journal>.offset``) holds how far the
journal has been replayed: a replay picks up there, and when all of it is in the store
the journal is emptied. A crash between writing to the store and moving the offset
replays a few operations twice, which is harmless: every operation is idempotent
(:mod:`processors.sidecars.history_record`).

Blocking file I/O: the writer calls these methods in a thread, never on the event loop.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .history_record import Op

__all__ = ["Spool", "SpoolChunk"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SpoolChunk:
    """Operations read from the journal, and the offset just past them."""

    ops: list[Op]
    end: int
    corrupt: int  # lines skipped in this chunk


def _line(n: int, op: Op) -> bytes:
    body = json.dumps(op, separators=(",", ":"), ensure_ascii=False)
    return json.dumps({"n": n, "crc": zlib.crc32(body.encode()), "op": op}, separators=(",", ":"),
                      ensure_ascii=False).encode() + b"\n"


class Spool:
    """An append-only journal of history operations with a replay offset (see module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset_path = path.with_name(path.name + ".offset")
        self._n = 0
        self.corrupt = 0  # lines skipped over the spool's life

    def pending(self) -> bool:
        """Whether operations wait in the journal."""
        try:
            return self.path.stat().st_size > self._offset()
        except OSError:  # missing, or a folder on its path is not one: nothing can be waiting there
            return False

    def append(self, ops: Sequence[Op]) -> None:
        """Add ``ops`` at the end, on disk (flushed and fsynced) before returning."""
        if not ops:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = bytearray()
        for op in ops:
            self._n += 1
            data += _line(self._n, op)
        with self.path.open("a+b") as file:
            if file.seek(0, os.SEEK_END) > 0:
                file.seek(-1, os.SEEK_END)
                if file.read(1) != b"\n":  # a line cut short by a crash: keep it apart from the new ones
                    data[:0] = b"\n"
            file.write(data)
            file.flush()
            os.fsync(file.fileno())

    def read(self, max_ops: int) -> SpoolChunk:
        """Up to ``max_ops`` operations from the replay offset on, in the order they were spooled."""
        ops: list[Op] = []
        corrupt = 0
        start = self._offset()
        end = start
        try:
            file = self.path.open("rb")
        except OSError:
            return SpoolChunk([], start, 0)
        with file:
            file.seek(start)
            for raw, after in _lines(file, start):
                if len(ops) >= max_ops:
                    break
                end = after
                op = self._parse(raw, after)
                if op is None:
                    corrupt += 1
                else:
                    ops.append(op)
        self.corrupt += corrupt
        return SpoolChunk(ops, end, corrupt)

    def commit(self, end: int) -> None:
        """Everything before ``end`` is in the store: move the offset, or empty the journal at its end."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return  # no journal: nothing to move past
        if end >= size:
            self.path.unlink(missing_ok=True)
            self._offset_path.unlink(missing_ok=True)
            return
        tmp = self._offset_path.with_name(self._offset_path.name + ".tmp")
        tmp.write_text(str(end))
        os.replace(tmp, self._offset_path)

    def _offset(self) -> int:
        try:
            return int(self._offset_path.read_text().strip() or 0)
        except OSError:
            return 0
        except ValueError:
            logger.error("history journal: unreadable offset file %s; replaying %s from the start "
                         "(operations are idempotent)", self._offset_path, self.path)
            return 0

    def _parse(self, raw: bytes, after: int) -> Op | None:
        try:
            line = json.loads(raw)
            op = line["op"]
            body = json.dumps(op, separators=(",", ":"), ensure_ascii=False)
            if not isinstance(op, dict) or zlib.crc32(body.encode()) != line["crc"]:
                raise ValueError("checksum mismatch")
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("history journal %s: corrupt line ending at byte %d skipped (%s): %.80r", self.path, after,
                         exc, raw)
            return None
        return op


def _lines(file: BinaryIO, start: int) -> Iterator[tuple[bytes, int]]:
    """Each complete line of ``file`` from ``start`` (newline stripped) and the offset after it.

    A last line with no newline is an append cut short: it is yielded too (it fails its
    checksum and is counted), so the journal never stalls on it.
    """
    position = start
    for raw in file:
        position += len(raw)
        yield raw.rstrip(b"\n"), position
