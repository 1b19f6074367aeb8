"""The history store interface: a document store with the history's containers, and its errors.

Two implementations: :class:`~processors.sidecars.history_sqlite.SqliteHistory` and
:class:`~processors.sidecars.history_cosmos.CosmosHistory`; the writer
(:class:`~processors.sidecars.history.History`) sees only this. Errors: a store that
cannot answer now raises :class:`HistoryUnavailable` (the writer journals and retries);
a document refused for good raises :class:`HistoryRejected` (counted, logged, skipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pipeline.errors import ServiceError

__all__ = ["HistoryBackend", "HistoryRejected", "HistoryUnavailable"]


class HistoryUnavailable(ServiceError):
    """The store cannot take or give documents now; the writer journals and retries."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class HistoryRejected(ServiceError):
    """The store refuses a document for good (malformed, too large): counted, logged, skipped."""


class HistoryBackend(Protocol):
    """A document store with the containers of :data:`~processors.sidecars.history_record.CONTAINERS`."""

    name: str

    async def open(self) -> None:
        """Connect, and create the database and containers if missing (raise HistoryUnavailable if down)."""
        ...

    async def upsert(self, container: str, docs: Sequence[dict[str, Any]]) -> int:
        """Write ``docs`` whole (by id and partition key); the number refused for good (each logged)."""
        ...

    async def partition(self, container: str, key: str) -> list[dict[str, Any]]:
        """Every document of ``container`` whose partition key field equals ``key``, each with its
        version in ``_etag``."""
        ...

    async def replace(self, container: str, doc: dict[str, Any], etag: str | None) -> bool:
        """Write ``doc`` only if its stored version is still ``etag`` (None: only if there is none);
        False when another writer got there first."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...
