"""History: every call's record, agent performance and caller profiles, written behind the call.

One :class:`History` per worker. Each call gets a :class:`HistorySink` (a
:class:`~processors.sidecars.facts.FactSink`) whose ``offer`` only appends the fact to the
worker's bounded queue; the writer task folds facts into documents
(:mod:`~processors.sidecars.history_record`), collects them for ``batch_ms`` (or up to
``batch_max`` operations) and writes each batch to the store. ``History`` is also the
agents' :class:`~agents.memory.LongTermMemory`: ``profile``/``past_calls`` read the store,
``remember`` is queued like the facts.

Stores (:class:`HistoryBackend`) keep JSON documents in four containers and are chosen by
:func:`history_from_env`:

* SQLite (the default, :mod:`~processors.sidecars.history_sqlite`): one file, WAL mode,
  its own thread. ``VOICEGRAPH_HISTORY_PATH`` names the file; the default is
  ``./.voicegraph/history.db`` under the working folder (like ``./config``: a project
  keeps its data next to it; a container mounts a volume there).
* Cosmos DB NoSQL (:mod:`~processors.sidecars.history_cosmos`) when ``COSMOS_ENDPOINT`` is
  set: ``COSMOS_KEY`` (else ``DefaultAzureCredential``: managed identity, workload
  identity, the Azure CLI...), database ``COSMOS_DATABASE`` (default ``voicegraph``).

When the store is down (unreachable, timing out, throttled past its retries, auth
refused, locked) the batch goes to a local journal (:class:`~processors.sidecars.
history_spool.Spool`, ``VOICEGRAPH_HISTORY_JOURNAL``; default next to the SQLite file, or
``./.voicegraph/history-journal.jsonl``) and so does everything after it, so order is
kept; the writer retries with a doubling back-off (the server's retry-after when it gave
one) and replays the journal in order. Operations are idempotent, so a replay that runs
twice duplicates nothing. Counters (:class:`HistoryCounters`) say what happened; the
calls never wait for any of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import ConfigError

from .facts import CallEnded, Fact
from .history_record import CONTAINERS, CallRecordBuilder, Op, doc_id, merge_profile
from .history_spool import Spool
from .history_store import HistoryBackend, HistoryRejected, HistoryUnavailable

__all__ = ["DEFAULT_PATH", "History", "HistoryBackend", "HistoryCounters", "HistoryRejected", "HistorySink",
           "HistoryUnavailable", "history_from_env"]

logger = logging.getLogger(__name__)

DEFAULT_PATH = Path(".voicegraph") / "history.db"
_SYSTEM_FIELDS = ("_rid", "_self", "_etag", "_ts", "_attachments", "_lsn")
_STOP_S = 0.1  # how long aclose waits for the writer to stop before cancelling it
_MERGE_ATTEMPTS = 5  # a profile merge that loses this many races in a row is retried later, from the journal


@dataclass(slots=True)
class HistoryCounters:
    """What the writer did since the worker started."""

    accepted: int = 0  # facts and remember() calls taken into the queue
    dropped: int = 0  # refused because the queue was full (logged)
    written: int = 0  # operations applied to the store (replays included)
    batches: int = 0
    spooled: int = 0  # operations written to the journal
    replayed: int = 0  # operations replayed from the journal
    rejected: int = 0  # documents the store refused for good
    corrupt: int = 0  # journal lines skipped
    lost: int = 0  # operations neither the store nor the journal could take (logged)
    truncated: int = 0  # texts cut to MAX_TEXT
    failures: int = 0  # store errors (each batch or replay attempt that failed)
    read_errors: int = 0  # profile/past_calls/call_record reads that failed (answered empty)
    conflicts: int = 0  # profile merges that lost a race with another writer (and were merged again)

    def as_dict(self) -> dict[str, int]:
        """The counters as a dict (for /metrics and logs)."""
        return asdict(self)


class _Closed:
    """Queue marker: a call's sink closed (its builder can go)."""

    __slots__ = ("call_id",)

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id


class HistorySink:
    """One call's :class:`~processors.sidecars.facts.FactSink` into the worker's :class:`History`."""

    __slots__ = ("_history", "call_id")

    def __init__(self, history: History, call_id: str) -> None:
        self._history = history
        self.call_id = call_id

    def offer(self, fact: Fact) -> None:
        """Queue ``fact`` for the writer (never blocks, never raises)."""
        self._history.offer(fact)

    async def aclose(self) -> None:
        """Let the writer forget the call. It does not wait for the writes: the worker's
        ``History`` outlives the call and flushes (or journals) them in ``aclose``."""
        self._history.offer(_Closed(self.call_id))


class History:
    """The worker's history writer and long-term memory (see module docstring)."""

    def __init__(self, backend: HistoryBackend, *, journal: Path, queue_max: int = 50_000, batch_max: int = 200,
                 batch_ms: float = 50.0, retry_s: float = 0.5, retry_max_s: float = 30.0,
                 read_timeout_s: float = 2.0) -> None:
        self.backend = backend
        self.spool = Spool(journal)
        self.counters = HistoryCounters()
        self.queue_max = queue_max
        self.batch_max = batch_max
        self.batch_ms = batch_ms
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.read_timeout_s = read_timeout_s
        self._queue: deque[tuple[float, Fact | Op | _Closed]] = deque()  # (time.monotonic() when offered, item)
        self.lag_ms: deque[float] = deque(maxlen=100_000)  # offer -> in the store, per item written directly
        self._progress = asyncio.Condition()
        self._builders: dict[str, CallRecordBuilder] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._journaling = False  # operations wait in the journal: new ones go behind them
        self._writing = False  # a batch taken from the queue is being written or journalled
        self._closing = False
        self._inflight: list[Op] = []  # that batch, until it is in the store or the journal
        self._down = False
        self._backoff = retry_s
        self._retry_at = 0.0

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store (a store that is down is retried later) and start the writer."""
        self._journaling = await asyncio.to_thread(self.spool.pending)
        try:
            await self.backend.open()
        except HistoryUnavailable as exc:
            self._failed(exc, "opening")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="history-writer")

    def sink(self, call_id: str) -> HistorySink:
        """The fact sink of call ``call_id``."""
        return HistorySink(self, call_id)

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything accepted is in the store (not merely journalled); False on timeout."""
        if self._task is None:
            return not self._queue
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def until(self, predicate: Callable[[History], bool], timeout_s: float = 10.0) -> bool:
        """Wait until ``predicate(self)`` holds, checked after each step of the writer (a batch
        written or journalled, a replay, a failure); False on timeout. For tests and benchmarks."""
        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(lambda: predicate(self)), timeout_s)
            except TimeoutError:
                return False
        return True

    async def _stepped(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Write what is queued within ``timeout_s`` (to the store, or to the journal when it is
        down: the journal is replayed at the next start); what is still queued then goes to
        the journal. Closes the store."""
        task = self._task
        if task is not None:
            await self.until(lambda h: not h._queue and not h._writing, timeout_s)
            self._closing = True
            self._wake.set()
            await asyncio.wait({task}, timeout=_STOP_S)
            while not task.done():  # a batch still on its way to a store that does not answer
                task.cancel()  # again if need be: wait_for (3.11) can swallow a cancel
                await asyncio.wait({task}, timeout=_STOP_S)
            self._task = None
            # a batch cut short by the cancel may be partly written: journalled whole (idempotent)
            left = self._inflight + self._fold([item for _, item in self._queue])
            self._inflight = []
            self._queue.clear()
            if left and await self._to_journal(left):
                logger.warning("history: %d operations still queued at shutdown were journalled in %s",
                               len(left), self.spool.path)
            elif left:
                self.counters.lost += len(left)
        await self.backend.aclose()

    # -- writes -----------------------------------------------------------------------------

    def offer(self, item: Fact | Op | _Closed) -> None:
        """Queue a fact (or an operation); counted and dropped when the queue is full."""
        if len(self._queue) >= self.queue_max:
            self.counters.dropped += 1
            if self.counters.dropped == 1 or self.counters.dropped % 1000 == 0:
                logger.error("history: queue full (%d); %d items dropped so far (the store is slower than the "
                             "calls)", self.queue_max, self.counters.dropped)
            return
        if not isinstance(item, _Closed):
            self.counters.accepted += 1
        self._queue.append((time.monotonic(), item))
        self._idle.clear()
        self._wake.set()

    async def remember(self, caller_id: str, profile: dict[str, Any], call: dict[str, Any]) -> None:
        """Merge ``profile`` into the caller's and put ``call`` in their past calls (by its call_id), behind."""
        self.offer({"op": "remember", "caller_id": caller_id, "profile": dict(profile), "call": dict(call),
                    "wall": time.time()})

    # -- reads ------------------------------------------------------------------------------

    async def profile(self, caller_id: str) -> dict[str, Any]:
        """The caller's stored profile (empty if unknown or the store cannot answer)."""
        doc = await self._profile_doc(caller_id)
        return dict(doc.get("profile") or {}) if doc else {}

    async def past_calls(self, caller_id: str) -> list[dict[str, Any]]:
        """Summaries of the caller's past calls, oldest first (empty if unknown or the store cannot answer)."""
        doc = await self._profile_doc(caller_id)
        return list(doc.get("calls") or []) if doc else []

    async def call_record(self, call_id: str) -> dict[str, Any] | None:
        """The stored call: its document plus ``transcript`` (in order); None if nothing is stored.

        Raises :class:`HistoryUnavailable` when the store cannot answer (the CLI says so).
        """
        calls = await self.backend.partition("calls", call_id)
        lines = await self.backend.partition("transcripts", call_id)
        wanted = doc_id(call_id)
        call = next((_clean(d) for d in calls if d.get("id") == wanted), None)
        if call is None and not lines:
            return None
        record = call or {"id": wanted, "call_id": call_id, "status": "unknown"}
        record["transcript"] = sorted((_clean(d) for d in lines), key=lambda d: int(d.get("seq", 0)))
        return record

    async def _profile_doc(self, caller_id: str) -> dict[str, Any] | None:
        try:
            docs = await asyncio.wait_for(self.backend.partition("profiles", caller_id), self.read_timeout_s)
        except (HistoryUnavailable, TimeoutError) as exc:
            self.counters.read_errors += 1
            logger.warning("history: could not read the profile of caller %r (%s); going on without it", caller_id,
                           exc or "timed out")
            return None
        wanted = doc_id(caller_id)
        return next((d for d in docs if d.get("id") == wanted), None)

    # -- the writer -------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._step()
            except Exception:  # a bug of ours must not end the history of every call after it
                self.counters.failures += 1
                logger.exception("history: the writer failed; going on in %.3g s", self.retry_s)
                await asyncio.sleep(self.retry_s)

    async def _step(self) -> None:
        """One turn of the writer: wait for work, or write (or journal) one batch, or replay."""
        loop = asyncio.get_running_loop()
        if not self._queue:
            if not self._journaling:
                self._idle.set()
                await self._wake.wait()
            else:
                await self._replay()
                await self._stepped()
                if self._journaling and not self._queue:
                    try:
                        await asyncio.wait_for(self._wake.wait(), max(0.0, self._retry_at - loop.time()))
                    except TimeoutError:
                        pass
            self._wake.clear()
            return
        if len(self._queue) < self.batch_max and self.batch_ms > 0:
            await asyncio.sleep(self.batch_ms / 1000)  # the batching window: more facts join the batch
        taken = [self._queue.popleft() for _ in range(min(self.batch_max, len(self._queue)))]
        self._writing = True
        try:
            ops = self._inflight = self._fold([item for _, item in taken])
            if ops and (self._journaling or (self._down and loop.time() < self._retry_at)):
                # behind what waits in the journal, or while backing off; a journal that cannot
                # be written leaves the store as the only place (order matters less than loss)
                if await self._to_journal(ops):
                    await self._replay()
                else:
                    await self._write(ops, taken, journal=False)
            elif ops:
                await self._write(ops, taken, journal=True)
        finally:
            self._writing = False
        self._inflight = []
        await self._stepped()

    async def _write(self, ops: list[Op], taken: Sequence[tuple[float, object]], *, journal: bool) -> None:
        """Write ``ops`` to the store; if it fails, journal them (when ``journal``), else count them lost."""
        try:
            if self._down and not await self._reopen():
                raise HistoryUnavailable("still down")
            await self._apply(ops)
        except HistoryUnavailable as exc:
            self._failed(exc, "writing")
            if not (journal and await self._to_journal(ops)):
                self.counters.lost += len(ops)
                logger.error("history: %d operations could be neither written nor journalled; they are lost "
                             "(%d so far)", len(ops), self.counters.lost)
            return
        now = time.monotonic()
        self.lag_ms.extend((now - offered) * 1000 for offered, item in taken if not isinstance(item, _Closed))

    def _fold(self, items: Sequence[Fact | Op | _Closed]) -> list[Op]:
        ops: list[Op] = []
        for item in items:
            if isinstance(item, _Closed):
                builder = self._builders.pop(item.call_id, None)
                if builder is not None:
                    logger.warning("history: call %s closed without CallEnded; its record stays incomplete",
                                   item.call_id)
                    ops.extend(builder.abandon())
            elif isinstance(item, Fact):
                builder = self._builders.get(item.call_id)
                if builder is None:
                    builder = self._builders[item.call_id] = CallRecordBuilder(item.call_id)
                before = builder.truncated
                ops.extend(builder.feed(item))
                if builder.truncated > before:
                    self.counters.truncated += builder.truncated - before
                    logger.warning("history: call %s: a text over the size limit was cut (%s)", item.call_id,
                                   type(item).__name__)
                if isinstance(item, CallEnded):
                    del self._builders[item.call_id]
            else:
                ops.append(item)
        return ops

    async def _apply(self, ops: Sequence[Op]) -> None:
        """Apply ``ops``: the upserts together (the last version of each document), each
        ``remember`` as a read-merge-write of the caller's profile."""
        try:
            await self._apply_ops(ops)
        except HistoryUnavailable:
            raise
        except Exception as exc:  # a store's bug must not end the writer: journal, retry, shout
            logger.exception("history: unexpected error from the %s store", self.backend.name)
            raise HistoryUnavailable(f"unexpected error: {exc!r}") from exc
        self.counters.written += len(ops)
        self.counters.batches += 1
        if self._down:
            self._down = False
            self._backoff = self.retry_s
            logger.info("history: the %s store answers again", self.backend.name)

    async def _apply_ops(self, ops: Sequence[Op]) -> None:
        # Upserts never touch profiles and merges touch only profiles, so the two go side by
        # side; each caller's merges stay in order, different callers' run at once.
        run: dict[tuple[str, str], dict[str, Any]] = {}
        merges: dict[str, list[Op]] = {}
        for op in ops:
            if (op.get("op") == "upsert" and op.get("container") in CONTAINERS and op.get("container") != "profiles"
                    and isinstance(op.get("doc"), dict)):
                run[(op["container"], str(op["doc"].get("id")))] = op["doc"]
            elif op.get("op") == "remember" and isinstance(op.get("caller_id"), str):
                merges.setdefault(op["caller_id"], []).append(op)
            else:
                self.counters.rejected += 1
                logger.error("history: unknown operation skipped: %.200r", op)

        async def merge_in_order(caller_ops: list[Op]) -> None:
            for op in caller_ops:
                await self._remember_now(op)

        results = await asyncio.gather(self._upsert_run(run), *(merge_in_order(m) for m in merges.values()),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _upsert_run(self, run: Mapping[tuple[str, str], dict[str, Any]]) -> None:
        by_container: dict[str, list[dict[str, Any]]] = {}
        for (container, _), doc in run.items():
            by_container.setdefault(container, []).append(doc)
        for container, docs in by_container.items():
            self.counters.rejected += await self.backend.upsert(container, docs)

    async def _remember_now(self, op: Op) -> None:
        """Merge into the caller's profile, optimistically: another worker may be merging into
        the same profile, so the write only lands on the version it read, else it reads again."""
        caller_id: str = op["caller_id"]
        wanted = doc_id(caller_id)
        for _ in range(_MERGE_ATTEMPTS):
            docs = await self.backend.partition("profiles", caller_id)
            stored = next((d for d in docs if d.get("id") == wanted), None)
            merged = merge_profile(_clean(stored) if stored else None, caller_id, dict(op.get("profile") or {}),
                                   dict(op.get("call") or {}), float(op.get("wall") or 0.0))
            try:
                if await self.backend.replace("profiles", merged, stored.get("_etag") if stored else None):
                    return
            except HistoryRejected as exc:  # for good: retrying would not help
                self.counters.rejected += 1
                logger.error("history: the profile of %r was refused: %s", caller_id, exc)
                return
            self.counters.conflicts += 1
        raise HistoryUnavailable(f"the profile of {caller_id!r} changed under {_MERGE_ATTEMPTS} merges in a row")

    async def _to_journal(self, ops: Sequence[Op]) -> bool:
        """Append ``ops`` to the journal; False (logged) when the disk refuses."""
        try:
            await asyncio.to_thread(self.spool.append, ops)
        except OSError as exc:
            logger.error("history: could not journal %d operations to %s (%s)", len(ops), self.spool.path, exc)
            return False
        self._journaling = True
        self.counters.spooled += len(ops)
        return True

    async def _replay(self) -> None:
        """Replay the journal in order, from its offset, when the retry time has come."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            return
        if self._down and not await self._reopen():
            return
        while True:
            chunk = await asyncio.to_thread(self.spool.read, self.batch_max)
            self.counters.corrupt += chunk.corrupt
            if chunk.ops:
                try:
                    await self._apply(chunk.ops)
                except HistoryUnavailable as exc:
                    self._failed(exc, "replaying the journal to")
                    return
                self.counters.replayed += len(chunk.ops)
            await asyncio.to_thread(self.spool.commit, chunk.end)
            if not chunk.ops and not chunk.corrupt:
                break
        self._journaling = False
        if self._down:
            self._down = False
            logger.info("history: the %s store answers again", self.backend.name)
        logger.info("history: journal %s replayed (%d operations so far, %d corrupt lines skipped)",
                    self.spool.path, self.counters.replayed, self.counters.corrupt)

    async def _reopen(self) -> bool:
        """Open the store again after a failure (a container may be gone); False if it failed."""
        try:
            await self.backend.open()
        except HistoryUnavailable as exc:
            self._failed(exc, "reopening")
            return False
        except Exception as exc:  # a bad configuration found late: shout, keep journalling
            logger.exception("history: reopening the %s store failed", self.backend.name)
            self._failed(HistoryUnavailable(repr(exc)), "reopening")
            return False
        return True

    def _failed(self, exc: HistoryUnavailable, doing: str) -> None:
        self.counters.failures += 1
        wait = exc.retry_after_s if exc.retry_after_s is not None else self._backoff
        self._retry_at = asyncio.get_running_loop().time() + wait
        level = logging.DEBUG if self._down else logging.WARNING
        logger.log(level, "history: %s the %s store failed (%s); journalling to %s, retry in %.3g s", doing,
                   self.backend.name, exc, self.spool.path, wait)
        self._down = True
        self._backoff = min(self._backoff * 2, self.retry_max_s)


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _SYSTEM_FIELDS}


def history_from_env(environ: Mapping[str, str] | None = None) -> History:
    """The worker's :class:`History` as the environment configures it (see module docstring).

    Builds objects only (no I/O): call ``await history.start()`` on the loop. Bad values
    raise :class:`~pipeline.errors.ConfigError` naming the variable.
    """
    env = os.environ if environ is None else environ
    endpoint = env.get("COSMOS_ENDPOINT", "").strip()
    journal_env = env.get("VOICEGRAPH_HISTORY_JOURNAL", "").strip()
    backend: HistoryBackend
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"COSMOS_ENDPOINT must be an http(s) URL of a Cosmos DB account, got {endpoint!r}")
        database = env.get("COSMOS_DATABASE", "voicegraph").strip()
        if not database or any(c in database for c in "/\\?#"):
            raise ConfigError(f"COSMOS_DATABASE must be a database name without / \\ ? #, got {database!r}")
        from .history_cosmos import CosmosHistory

        backend = CosmosHistory(endpoint, key=env.get("COSMOS_KEY", "").strip() or None, database=database)
        journal = Path(journal_env) if journal_env else DEFAULT_PATH.with_name("history-journal.jsonl")
    else:
        raw = env.get("VOICEGRAPH_HISTORY_PATH", "").strip()
        path = Path(raw).expanduser() if raw else DEFAULT_PATH
        if raw.endswith(("/", os.sep)):
            raise ConfigError(f"VOICEGRAPH_HISTORY_PATH must name a file (the SQLite database), got the folder {raw!r}")
        from .history_sqlite import SqliteHistory

        backend = SqliteHistory(path)
        journal = Path(journal_env) if journal_env else path.with_name(path.name + ".journal")
    return History(backend, journal=journal)
