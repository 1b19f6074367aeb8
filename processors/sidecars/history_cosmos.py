"""Cosmos DB history store: the NoSQL API through azure-cosmos's async client.

:meth:`CosmosHistory.open` creates the database and the containers of
:data:`~processors.sidecars.history_record.CONTAINERS` if missing, each with its
partition key path (``/call_id``, ``/agent``, ``/caller_id``) and default TTL (call
records and transcripts 7 years, agent performance 2 years, profiles none). The client
uses session consistency (a worker reads its own writes) and a key (``COSMOS_KEY``) or,
without one, ``DefaultAzureCredential``.

Documents are upserted one request each, a bounded number at a time (transactional
batches would tie a batch to one partition key, and a batch of history spans many).
Reads are partition-scoped queries (``WHERE c.<pk> = @key`` with the partition key
given), one request per partition.

Errors, mapped for the writer (:class:`~processors.sidecars.history.History`):

* 429: the SDK itself waits the server's ``x-ms-retry-after-ms`` up to
  ``throttle_retries`` times; past that, :class:`HistoryUnavailable` carries the
  server's retry-after and the writer journals and waits that long.
* 401/403 (key or identity refused), 404 (database or container gone: re-created at the
  next open), 408, 449, 5xx, connection errors, and no answer within ``timeout_s`` (each
  request, bounded by the SDK and again here): :class:`HistoryUnavailable`.
* 400/413 for one document (malformed, too large): that document is refused, counted
  and logged; the others are written.

Profile merges are optimistic (:meth:`CosmosHistory.replace`): ``If-Match`` on the
``_etag`` read, or a create for a new profile; 412/409 means another worker merged first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError

from .history_record import CONTAINERS
from .history_store import HistoryRejected, HistoryUnavailable

__all__ = ["CosmosHistory"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_REFUSED = (400, 413)  # this document, for good


class CosmosHistory:
    """The history in a Cosmos DB account (see module docstring).

    ``client_options`` go to ``azure.cosmos.aio.CosmosClient`` as they are (tests pass
    ``enable_endpoint_discovery=False`` for a local server).
    """

    name = "Cosmos DB"

    def __init__(self, endpoint: str, *, key: str | None = None, database: str = "voicegraph",
                 concurrency: int = 16, throttle_retries: int = 3, timeout_s: float = 10.0,
                 **client_options: Any) -> None:
        self.endpoint = endpoint
        self.database = database
        self._key = key
        self._concurrency = concurrency
        self._options: dict[str, Any] = {
            "consistency_level": "Session", "retry_throttle_total": throttle_retries, "timeout": timeout_s,
            "connection_timeout": timeout_s, "read_timeout": timeout_s, "retry_connect": 1, "retry_read": 1,
            **client_options}
        self._timeout_s = timeout_s
        self._client: CosmosClient | None = None
        self._credential: Any = None
        self._containers: dict[str, ContainerProxy] = {}

    async def open(self) -> None:
        """Connect; create the database and the containers if missing."""
        if self._client is None:
            if self._key is not None:
                credential: Any = self._key
            else:
                from azure.identity.aio import DefaultAzureCredential

                credential = self._credential = DefaultAzureCredential()
            self._client = CosmosClient(self.endpoint, credential=credential, **self._options)
        client = self._client
        self._containers = {}
        database = await self._guard("creating the database", lambda: client.create_database_if_not_exists(
            self.database))
        containers: dict[str, ContainerProxy] = {}
        for spec in CONTAINERS.values():
            extra: dict[str, Any] = {} if spec.ttl_s is None else {"default_ttl": spec.ttl_s}
            create = partial(database.create_container_if_not_exists, spec.name,
                             partition_key=PartitionKey(path=f"/{spec.partition_key}"), **extra)
            containers[spec.name] = await self._guard(f"creating container {spec.name}", create)
        self._containers = containers

    async def upsert(self, container: str, docs: Sequence[dict[str, Any]]) -> int:
        """Upsert ``docs``, ``concurrency`` at a time; the number refused for good."""
        proxy = self._container(container)
        gate = asyncio.Semaphore(self._concurrency)

        async def one(doc: dict[str, Any]) -> int:
            async with gate:
                try:
                    await self._guard(f"writing to {container}", lambda: proxy.upsert_item(doc))
                except _Refused as exc:
                    logger.error("history: Cosmos DB refused a %s document for good (%s): id %.100r", container,
                                 exc, doc.get("id"))
                    return 1
                return 0

        results = await asyncio.gather(*(one(doc) for doc in docs), return_exceptions=True)
        for result in results:  # the first outage wins; the rest of the batch is journalled with it
            if isinstance(result, BaseException):
                raise result
        return sum(r for r in results if isinstance(r, int))

    async def partition(self, container: str, key: str) -> list[dict[str, Any]]:
        """Every document of ``container`` whose partition key is ``key`` (one partition-scoped query)."""
        proxy = self._container(container)
        field = CONTAINERS[container].partition_key

        async def query() -> list[dict[str, Any]]:
            items = proxy.query_items(f"SELECT * FROM c WHERE c.{field} = @key",
                                      parameters=[{"name": "@key", "value": key}], partition_key=key)
            return [item async for item in items]

        return await self._guard(f"reading {container}", query)

    async def replace(self, container: str, doc: dict[str, Any], etag: str | None) -> bool:
        """Write ``doc`` only over the stored version ``etag`` (``If-Match``), or only if absent
        (a create) when ``etag`` is None; False on 412 or 409 (another writer got there first)."""
        proxy = self._container(container)

        async def write() -> Any:
            if etag is None:
                return await proxy.create_item(doc)
            return await proxy.replace_item(doc["id"], doc, etag=etag, match_condition=MatchConditions.IfNotModified)

        try:
            await self._guard(f"writing to {container}", write)
        except _Refused as exc:
            raise HistoryRejected(f"Cosmos DB refused a {container} document for good ({exc})") from exc
        except HistoryUnavailable as exc:
            if isinstance(exc.__cause__, CosmosHttpResponseError) and exc.__cause__.status_code in (409, 412):
                return False
            raise
        return True

    async def aclose(self) -> None:
        """Close the client (and the credential it made)."""
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._credential is not None:
            await self._credential.close()
            self._credential = None

    def _container(self, name: str) -> ContainerProxy:
        try:
            return self._containers[name]
        except KeyError:
            raise HistoryUnavailable(f"Cosmos DB {self.endpoint}: not open (container {name})") from None

    async def _guard(self, doing: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, its failures mapped to :class:`HistoryUnavailable` or :class:`_Refused`."""
        try:
            # bounded here too: the SDK's own timeouts do not cover every wait (its throttling
            # retries add the server's retry-after on top)
            return await asyncio.wait_for(call(), self._timeout_s)
        except CosmosHttpResponseError as exc:
            status = exc.status_code or 0
            if status in _REFUSED:
                raise _Refused(f"{status} {_message(exc)}") from exc
            if status == 404:
                self._containers = {}  # gone: the writer reopens (and re-creates) before its next try
            retry_after = None
            if status == 429:
                header = (exc.headers or {}).get("x-ms-retry-after-ms") if exc.response is not None else None
                retry_after = float(header) / 1000 if header else None
            what = {401: "the key was refused", 403: "access refused (key or identity)",
                    429: "throttled (request rate too large)"}.get(status, f"HTTP {status}")
            raise HistoryUnavailable(f"Cosmos DB {self.endpoint}: {doing}: {what}: {_message(exc)}",
                                     retry_after_s=retry_after) from exc
        except TimeoutError as exc:
            raise HistoryUnavailable(f"Cosmos DB {self.endpoint}: {doing}: no answer within {self._timeout_s:g} s"
                                     ) from exc
        except (ServiceRequestError, ServiceResponseError, OSError) as exc:
            raise HistoryUnavailable(f"Cosmos DB {self.endpoint}: {doing}: unreachable ({exc})") from exc
        except AzureError as exc:  # credential errors (no identity found), other SDK failures
            raise HistoryUnavailable(f"Cosmos DB {self.endpoint}: {doing}: {exc}") from exc


class _Refused(Exception):
    """A document the store refuses for good."""


def _message(exc: CosmosHttpResponseError) -> str:
    text = str(exc.message or exc).strip().splitlines()
    return text[0][:200] if text else ""
