"""Live state in Redis: a write-behind writer that survives outages, and the reads.

:class:`RedisWriter` takes lists of :class:`~processors.sidecars.live_kv.Cmd` (one list per
fact or saved state: an *entry*) with :meth:`~RedisWriter.push`, which only appends to a
bounded queue; one task sends the queue to Redis in order, as many entries as are waiting
(up to ``batch``) in one pipeline: one round trip. So a turn costs a round trip or two,
however many fields it touches, and the call only ever pays for the append. ``batch``
(64 entries, about 250 commands) bounds how long the writer holds the event loop while it
builds a pipeline and parses its replies: about 2 ms when a backlog drains after an outage
(perf/sidecars_live.py; 256 entries held it 7 ms).

**Outages.** When Redis cannot be reached, refuses our credentials or permissions, times
out (``op_timeout_s``), or answers that it is loading, read-only or out of memory, the entries
stay queued in order and the writer retries with a backoff (``retry_min_s`` doubling up to
``retry_max_s``); one warning when Redis goes away, one info line when it is back with how
much waited. Writes are safe to send twice (hash fields and TTLs are set, stream entries
carry explicit ids that Redis refuses when not newer: counted as ``duplicates``).

**Loss past the bound.** At most ``max_pending`` entries wait; past that, the *oldest*
waiting entry is dropped and counted (``lost``; a warning per outage): the newest state of
a call is what a worker taking it over needs. The calls whose writes were lost are marked
(:attr:`RedisWriter.lost_calls`) so that the store can re-send their state whole once Redis
is back; what is lost for good is transcript lines and live-view messages.

Errors Redis gives a single command (a wrong type, a bad argument) are logged, counted as
``rejected`` and skipped: the rest of the batch is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as rexc

from .live_kv import END_SCRIPT, Cmd

__all__ = ["RedisWriter", "WriterStats"]

logger = logging.getLogger(__name__)

# Redis answers that mean "not now" rather than "never": the batch waits and is retried.
# redis-py maps the error codes to these classes and strips the code from the message.
_TRANSIENT = (rexc.ConnectionError, rexc.TimeoutError, rexc.OutOfMemoryError, rexc.ReadOnlyError,
              rexc.TryAgainError, rexc.ClusterDownError, rexc.NoPermissionError)
_NOT_NEWER = "equal or smaller than the target stream top item"


@dataclass(frozen=True, slots=True)
class WriterStats:
    """What the writer did so far: entries ``written``, ``round_trips``, ``commands`` sent,
    failed attempts (``errors``), entries ``lost`` past the bound, ``duplicates`` and
    ``rejected`` commands; ``pending`` entries now, and whether Redis is ``down``."""

    written: int
    round_trips: int
    commands: int
    errors: int
    lost: int
    duplicates: int
    rejected: int
    pending: int
    down: bool


class _Pending:
    __slots__ = ("call_id", "cmds", "number")

    def __init__(self, number: int, call_id: str, cmds: Sequence[Cmd]) -> None:
        self.number = number
        self.call_id = call_id
        self.cmds = cmds


class RedisWriter:
    """The write-behind queue and its writer task (see module docstring)."""

    def __init__(self, client: Any, *, max_pending: int = 10_000, batch: int = 64, op_timeout_s: float = 2.0,
                 retry_min_s: float = 0.05, retry_max_s: float = 2.0, cluster: bool = False) -> None:
        if max_pending < 1 or batch < 1:
            raise ValueError(f"max_pending and batch must be >= 1, got {max_pending}, {batch}")
        self.client = client
        self.cluster = cluster
        self.max_pending = max_pending
        self.batch = batch
        self.op_timeout_s = op_timeout_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.lost_calls: set[str] = set()
        #: Called after a write succeeds while writes were lost (the store re-sends those calls' state).
        self.on_back: Callable[[], None] | None = None
        self._queue: deque[_Pending] = deque()
        self._last = 0  # the number of the last entry pushed
        self._settled = 0  # the number of the last entry written or lost (entries settle in order)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._down = False
        self._written = self._round_trips = self._commands = self._errors = 0
        self._lost = self._duplicates = self._rejected = 0
        self._lost_this_outage = 0

    # -- the audio path's side: never waits -------------------------------------------------

    def push(self, call_id: str, cmds: Sequence[Cmd]) -> None:
        """Queue one entry (O(1); past the bound the oldest waiting entry is lost, counted)."""
        self._last += 1
        self._queue.append(_Pending(self._last, call_id, cmds))
        self._trim()
        self._wake.set()

    def stats(self) -> WriterStats:
        return WriterStats(written=self._written, round_trips=self._round_trips, commands=self._commands,
                           errors=self._errors, lost=self._lost, duplicates=self._duplicates,
                           rejected=self._rejected, pending=len(self._queue), down=self._down)

    @property
    def down(self) -> bool:
        """Whether the last attempt to write failed (Redis unreachable, refusing, full)."""
        return self._down

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task (on the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-state-writer")

    async def flush(self, timeout_s: float) -> bool:
        """Wait until everything pushed so far is written (or lost); False after ``timeout_s``."""
        target = self._last
        if self._settled >= target:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_s)
            return True
        except TimeoutError:
            return False

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Flush (bounded by ``timeout_s``; what is left is counted lost), stop the task."""
        if self._task is not None and self._queue and not await self.flush(timeout_s):
            left = len(self._queue)
            self._lost += left
            logger.warning("live state: closing with %d writes Redis never took (counted lost)", left)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # -- the writer -------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.retry_min_s
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            entries = [self._queue[i] for i in range(min(self.batch, len(self._queue)))]
            try:
                await self._send(entries)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._errors += 1
                if not self._down:
                    self._down = True
                    self._lost_this_outage = 0
                    logger.warning("live state: Redis unavailable (%s: %s); %d writes wait, the calls go on",
                                   type(exc).__name__, exc, len(self._queue))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            delay = self.retry_min_s
            if self._down:
                self._down = False
                logger.info("live state: Redis is back; writing %d waiting entries (%d lost meanwhile)",
                            len(self._queue), self._lost_this_outage)
            if self.lost_calls and self.on_back is not None:
                self.on_back()
            last = entries[-1].number
            while self._queue and self._queue[0].number <= last:
                self._queue.popleft()
                self._written += 1
            self._settle(last)

    async def _send(self, entries: Sequence[_Pending]) -> None:
        pipe = self.client.pipeline(transaction=False)
        cmds = [cmd for entry in entries for cmd in entry.cmds]
        publish: list[Cmd] = []
        if self.cluster:  # a Cluster pipeline refuses PUBLISH: sent beside it, in order, after it
            publish = [cmd for cmd in cmds if cmd.op == "PUBLISH"]
            cmds = [cmd for cmd in cmds if cmd.op != "PUBLISH"]
        # Each write is followed by the EXPIRE of its key, so the last EXPIRE of a key in the
        # batch comes after all its writes: the earlier identical ones are left out.
        last = {cmd: i for i, cmd in enumerate(cmds) if cmd.op == "EXPIRE"}
        count = 0
        for i, cmd in enumerate(cmds):
            if cmd.op == "EXPIRE" and last[cmd] != i:
                continue
            _queue_command(pipe, cmd)
            count += 1
        async with asyncio.timeout(self.op_timeout_s):
            results = await pipe.execute(raise_on_error=False) if count else []
            for cmd in publish:
                await self.client.publish(cmd.key, cmd.args)
        self._round_trips += (1 if count else 0) + len(publish)
        self._commands += count + len(publish)
        for result in results:
            if not isinstance(result, Exception):
                continue
            text = str(result)
            if isinstance(result, _TRANSIENT) or text.startswith("BUSY"):
                raise result
            if _NOT_NEWER in text:
                self._duplicates += 1
            else:
                self._rejected += 1
                logger.error("live state: Redis refused a write: %s", text)

    def _trim(self) -> None:
        while len(self._queue) > self.max_pending:
            dropped = self._queue.popleft()
            self._lost += 1
            self._lost_this_outage += 1
            self.lost_calls.add(dropped.call_id)
            if self._lost_this_outage == 1:
                logger.warning("live state: more than %d writes waiting for Redis; dropping the oldest (counted)",
                               self.max_pending)
            self._settle(dropped.number)

    def _settle(self, number: int) -> None:
        self._settled = max(self._settled, number)
        ready = [w for w in self._waiters if w[0] <= self._settled]
        if ready:
            self._waiters = [w for w in self._waiters if w[0] > self._settled]
            for _, future in ready:
                if not future.done():
                    future.set_result(None)


def _queue_command(pipe: Any, cmd: Cmd) -> None:
    op, key, args = cmd
    if op == "HSET":
        pipe.hset(key, mapping=args)
    elif op == "HDEL":
        pipe.hdel(key, *args)
    elif op == "XADD":
        entry_id, fields, maxlen = args
        pipe.xadd(key, fields, id=str(entry_id), maxlen=maxlen or None, approximate=True)
    elif op == "EXPIRE":
        pipe.expire(key, int(args))
    elif op == "ZADD":
        pipe.zadd(key, args)
    elif op == "ZREMRANGEBYSCORE":
        pipe.zremrangebyscore(key, "-inf", args)
    elif op == "PUBLISH":
        pipe.publish(key, args)
    elif op == "DEL":
        pipe.delete(key)
    elif op == "END":
        worker, ended_at, reason, seconds, *others = args
        pipe.eval(END_SCRIPT, 1 + len(others), key, *others, worker, ended_at, reason, seconds)
    else:
        raise ValueError(f"live state: unknown command {op}")
