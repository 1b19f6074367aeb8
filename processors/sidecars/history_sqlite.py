"""SQLite history store: the embedded default, one file in WAL mode, on a thread of its own.

Each container of :data:`~processors.sidecars.history_record.CONTAINERS` is a table of
``(pk, id, doc, etag)`` with the document as JSON and ``(pk, id)`` its primary key, so an
upsert is ``INSERT ... ON CONFLICT DO UPDATE`` and a partition read is an index range.
``etag`` is a new random version at every write; :meth:`SqliteHistory.replace` writes only
over the version it is given, in one ``BEGIN IMMEDIATE`` transaction (workers in several
processes may share the file).
Retention is the Cosmos DB store's business; a SQLite file is the developer's and keeps
everything (``expires`` is stored per row from the container's TTL, for a clean-up job).

sqlite3 blocks, so every statement runs on one worker thread that owns the connection
(one writer per file is what SQLite wants anyway); the event loop only awaits it. WAL
lets ``voicegraph history`` read while a worker writes. A locked or unwritable database
raises :class:`~processors.sidecars.history_store.HistoryUnavailable`: the writer journals and
retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import ConfigError

from .history_record import CONTAINERS
from .history_store import HistoryRejected, HistoryUnavailable

__all__ = ["SqliteHistory"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SqliteHistory:
    """The history in one SQLite file (see module docstring)."""

    name = "SQLite"

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-sqlite")

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except sqlite3.DatabaseError as exc:  # locked, busy, disk full, read-only, not a database
            raise HistoryUnavailable(f"SQLite {self.path}: {exc}") from exc

    async def open(self) -> None:
        """Create the file, its folder and its tables if missing; WAL mode."""
        await self._call(self._open)

    def _open(self) -> None:
        if self._db is not None:
            return
        if self.path.is_dir():
            raise ConfigError(f"VOICEGRAPH_HISTORY_PATH must name a file (the SQLite database), "
                              f"got the folder {str(self.path)!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, check_same_thread=False,
                             isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                logger.warning("history: %s is not in WAL mode (%s); readers may wait on the writer", self.path, mode)
            db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints, no fsync per batch
            for container in CONTAINERS:
                db.execute(f"CREATE TABLE IF NOT EXISTS {container} (pk TEXT NOT NULL, id TEXT NOT NULL, "
                           "doc TEXT NOT NULL, etag TEXT NOT NULL, updated REAL NOT NULL, expires REAL, "
                           "PRIMARY KEY (pk, id))")
        except BaseException:
            db.close()
            raise
        self._db = db

    async def upsert(self, container: str, docs: Sequence[dict[str, Any]]) -> int:
        """Write ``docs`` in one transaction; the number refused (not JSON-serialisable)."""
        return await self._call(self._upsert, container, list(docs))

    def _upsert(self, container: str, docs: list[dict[str, Any]]) -> int:
        db = self._connection()
        spec = CONTAINERS[container]
        now = time.time()
        expires = now + spec.ttl_s if spec.ttl_s is not None else None
        rows = []
        refused = 0
        for doc in docs:
            try:
                rows.append((str(doc[spec.partition_key]), str(doc["id"]), json.dumps(doc, ensure_ascii=False),
                             uuid.uuid4().hex, now, expires))
            except (KeyError, TypeError, ValueError) as exc:
                refused += 1
                logger.error("history: %s document refused (%s): %.200r", container, exc, doc)
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(f"INSERT INTO {container} (pk, id, doc, etag, updated, expires) VALUES (?, ?, ?, ?, ?, ?) "
                           "ON CONFLICT (pk, id) DO UPDATE SET doc = excluded.doc, etag = excluded.etag, "
                           "updated = excluded.updated, expires = excluded.expires", rows)
        return refused

    async def replace(self, container: str, doc: dict[str, Any], etag: str | None) -> bool:
        """Write ``doc`` only over the stored version ``etag`` (None: only if absent)."""
        return await self._call(self._replace, container, doc, etag)

    def _replace(self, container: str, doc: dict[str, Any], etag: str | None) -> bool:
        db = self._connection()
        spec = CONTAINERS[container]
        try:
            key, ident, body = str(doc[spec.partition_key]), str(doc["id"]), json.dumps(doc, ensure_ascii=False)
        except (KeyError, TypeError, ValueError) as exc:
            raise HistoryRejected(f"{container} document refused ({exc})") from exc
        now = time.time()
        with db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(f"SELECT etag FROM {container} WHERE pk = ? AND id = ?", (key, ident)).fetchone()
            if (row[0] if row else None) != etag:
                return False
            db.execute(f"INSERT OR REPLACE INTO {container} (pk, id, doc, etag, updated, expires) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (key, ident, body, uuid.uuid4().hex, now,
                                                     now + spec.ttl_s if spec.ttl_s is not None else None))
        return True

    async def partition(self, container: str, key: str) -> list[dict[str, Any]]:
        """Every document of ``container`` with partition key ``key``."""
        return await self._call(self._partition, container, key)

    def _partition(self, container: str, key: str) -> list[dict[str, Any]]:
        db = self._connection()
        CONTAINERS[container]  # a known container: its name is safe in the statement
        rows = db.execute(f"SELECT doc, etag FROM {container} WHERE pk = ? ORDER BY rowid", (key,)).fetchall()
        return [{**json.loads(doc), "_etag": etag} for doc, etag in rows]

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._open()
        assert self._db is not None
        return self._db

    async def aclose(self) -> None:
        """Close the connection and stop the thread."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        finally:
            self._thread.shutdown(wait=False)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
