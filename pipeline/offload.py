"""Running CPU-heavy work off the event loop, in short steps shared fairly between calls.

Many calls share one loop; a 200 ms model call on it would make every other call miss
its 20 ms audio deadline. So decoding and synthesis run on the threads of one
``FairExecutor`` per process (``blocking_executor()``), one thread per core: more
would only make the CPU thrash, and decoders that hold the GIL slower still.

Four rules keep one call from starving the others:

* **Short steps.** A job is one step: one STT feed (a batch of audio, 100 ms or what
  collected while the previous batch decoded), one TTS chunk (a sentence).
  ``iterate_blocking`` runs a generator one step per job, never a whole answer as one
  job.
* **Round-robin between keys.** Every job carries a key, the call id
  (``Processor.run_blocking`` passes ``ctx.call_id``). Each key has its own FIFO and a
  free thread serves the keys in turn, one step each. A call's step therefore waits
  behind at most one step of each other busy call, never behind another call's backlog.
  The steps of one key run in order, but not one at a time: a call's STT and TTS may
  run on two threads at once when the cores are free.
* **Work ahead of need leaves a thread free.** Steps that prepare output ahead of
  when it is needed (a TTS answer's second and later sentences, made while the first
  plays) are submitted with ``submit_ahead`` and may occupy all threads but one. Steps
  are not preemptible, so without this a few answers synthesised flat out would hold
  every thread, and each short recognition step would wait for a whole sentence to
  finish. (With one thread there is nothing to keep free.)
* **A bounded queue.** At most ``queue_per_worker`` steps per thread wait in all. A
  stream keeps one step queued at a time, so the bound is only reached when more
  streams want CPU than the cores can serve. Then ``submit`` raises ``ServiceError`` at
  once: that one step fails visibly (its node logs it and the call goes on) instead of
  the wait of every call growing without limit, which is what backpressure would do.
  Clean-up steps (closing a stream) are exempt, so they are never lost.

The queue wait of each step (submit to start, ``time.perf_counter_ns``) is kept per key:
``wait_stats(call_id)`` tells how long a call waited for CPU.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from .errors import ServiceError

__all__ = ["FairExecutor", "WaitStats", "blocking_executor", "iterate_blocking"]

T = TypeVar("T")

_STATS_KEYS = 4096
"""Keys whose wait statistics are kept (the most recently active ones): a worker serves
hundreds of calls at once and millions in its life, and nothing tells it when a call ended."""


@dataclass(slots=True)
class WaitStats:
    """How long one key's steps waited for a thread (submit to start).

    Attributes:
        steps: Steps started.
        total_ns: Sum of their waits, in nanoseconds.
        max_ns: The longest wait, in nanoseconds.
    """

    steps: int = 0
    total_ns: int = 0
    max_ns: int = 0


class _Kind(enum.Enum):
    NOW = "now"  # someone waits for it
    AHEAD = "ahead"  # prepares output before it is needed: never on the last free thread
    CLEANUP = "cleanup"  # releases resources: never refused


class _Job:
    __slots__ = ("args", "fn", "future", "key", "kind", "submitted_ns")

    def __init__(self, key: Hashable, fn: Callable[..., Any], args: tuple[Any, ...], kind: _Kind) -> None:
        self.key = key
        self.fn = fn
        self.args = args
        self.kind = kind
        self.future: Future[Any] = Future()
        self.submitted_ns = time.perf_counter_ns()


class FairExecutor:
    """Worker threads serving per-key FIFOs round-robin (see the module docstring).

    Args:
        workers: Threads; default one per core this process may run on.
        queue_per_worker: Steps that may wait per thread before ``submit`` refuses more.
            The default, 32, is 32 streams per core all waiting at once: at 10-30 ms per
            step, up to a second of wait, past which an answer is too late to be useful.
        name: Prefix of the threads' names.
    """

    def __init__(self, workers: int | None = None, *, queue_per_worker: int = 32, name: str = "vg-blocking") -> None:
        self.workers = workers or _cores()
        if self.workers < 1 or queue_per_worker < 1:
            raise ValueError(f"need at least one worker and one queued step, got {workers} and {queue_per_worker}")
        self.max_queued = self.workers * queue_per_worker
        self._ahead_limit = max(1, self.workers - 1)
        # Keys with queued steps, in the order they are served; a served key that still
        # has steps moves to the end.
        self._queues: collections.OrderedDict[Hashable, collections.deque[_Job]] = collections.OrderedDict()
        self._queued = 0  # steps waiting, clean-up steps not counted
        self._unfinished = 0  # steps submitted and not yet done (waiting or running), all kinds
        self._ahead_running = 0
        self._stats: collections.OrderedDict[Hashable, WaitStats] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._closed = False
        # Daemon threads: a worker process must be able to exit while a step still runs.
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True) for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(*args)`` as one step of ``key``; thread-safe.

        Raises:
            ServiceError: ``max_queued`` steps are already waiting (the step is refused).
            RuntimeError: the executor was shut down.
        """
        return self._submit(key, fn, args, _Kind.NOW)

    def submit_ahead(self, key: Hashable, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Like ``submit``, for a step that prepares output before it is needed: it never
        takes the last free thread, which stays for steps someone is waiting for."""
        return self._submit(key, fn, args, _Kind.AHEAD)

    def submit_cleanup(self, key: Hashable, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue a clean-up step (closing a stream): like ``submit``, but never refused as full."""
        return self._submit(key, fn, args, _Kind.CLEANUP)

    async def run(self, key: Hashable, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` as one step of ``key`` and return its result.

        Cancelling the awaiting task withdraws the step if it has not started; a step
        already running finishes on its thread and its result is dropped.
        """
        return await asyncio.wrap_future(self.submit(key, fn, *args))

    @property
    def queued(self) -> int:
        """Steps waiting for a thread (clean-up steps not counted)."""
        with self._lock:
            return self._queued

    @property
    def unfinished(self) -> int:
        """Steps submitted and not yet done: waiting or running, clean-up steps included.

        A test driving a call on a ``VirtualClock`` holds virtual time still while this is
        not zero, so speech work takes no virtual time, whatever it takes on the CPU. A
        step stops counting only after its result was set, so by then the loop awaiting
        it has its wake-up queued.
        """
        with self._lock:
            return self._unfinished

    def wait_stats(self, key: Hashable) -> WaitStats:
        """A copy of ``key``'s queue-wait statistics (zeros for an unknown key)."""
        with self._lock:
            stats = self._stats.get(key)
            return WaitStats(stats.steps, stats.total_ns, stats.max_ns) if stats else WaitStats()

    def shutdown(self, *, wait: bool = True) -> None:
        """Refuse new steps; the threads finish the queued ones, then exit."""
        with self._lock:
            self._closed = True
            self._work.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()

    def _submit(self, key: Hashable, fn: Callable[..., T], args: tuple[Any, ...], kind: _Kind) -> Future[T]:
        job = _Job(key, fn, args, kind)
        with self._lock:
            if self._closed:
                raise RuntimeError("the executor is shut down")
            if kind is not _Kind.CLEANUP:
                if self._queued >= self.max_queued:
                    raise ServiceError(
                        f"{self._queued} CPU steps already wait for {self.workers} threads (limit "
                        f"{self.max_queued}): this worker has more speech work than cores; step for {key!r} refused"
                    )
                self._queued += 1
            self._unfinished += 1
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = collections.deque()
            queue.append(job)
            self._work.notify()
        job.future.add_done_callback(lambda _: self._withdraw(job))
        return job.future

    def _withdraw(self, job: _Job) -> None:
        """Take a cancelled step out of its queue, so it neither runs nor counts."""
        if not job.future.cancelled():
            return
        with self._lock:
            queue = self._queues.get(job.key)
            if queue is None or job not in queue:
                return  # a thread took it already; it sees the cancellation and skips it
            self._unfinished -= 1
            queue.remove(job)
            if not queue:
                del self._queues[job.key]
            if job.kind is not _Kind.CLEANUP:
                self._queued -= 1

    def _next(self) -> _Job | None:
        """The next step to run, round-robin over keys; None when shut down and drained."""
        with self._lock:
            while (job := self._pick()) is None:
                if self._closed and not self._queues:
                    return None
                self._work.wait()
            if job.kind is not _Kind.CLEANUP:
                self._queued -= 1
            if not job.future.set_running_or_notify_cancel():
                self._unfinished -= 1  # cancelled before it ran: nothing more will happen
                return _SKIP
            if job.kind is _Kind.AHEAD:
                self._ahead_running += 1
            self._count_wait(job.key, time.perf_counter_ns() - job.submitted_ns)
            return job

    def _pick(self) -> _Job | None:
        """Pop the first eligible step in key order (call with the lock held)."""
        ahead_allowed = self._ahead_running < self._ahead_limit
        for key, queue in self._queues.items():
            if queue[0].kind is _Kind.AHEAD and not ahead_allowed:
                continue  # this key waits; the next one may have a step someone waits for
            job = queue.popleft()
            if queue:
                self._queues.move_to_end(key)
            else:
                del self._queues[key]
            return job
        return None

    def _count_wait(self, key: Hashable, wait_ns: int) -> None:
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = WaitStats()
            if len(self._stats) > _STATS_KEYS:
                self._stats.popitem(last=False)
        else:
            self._stats.move_to_end(key)
        stats.steps += 1
        stats.total_ns += wait_ns
        stats.max_ns = max(stats.max_ns, wait_ns)

    def _serve(self) -> None:
        while (job := self._next()) is not None:
            if job is _SKIP:
                continue
            try:
                result = job.fn(*job.args)
            except BaseException as exc:  # handed to whoever awaits the step
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            # Counted done only now: setting the result has run its callbacks, so whoever
            # awaits it on a loop has been handed the wake-up (see ``unfinished``).
            with self._lock:
                self._unfinished -= 1
            if job.kind is _Kind.AHEAD:
                with self._lock:
                    self._ahead_running -= 1
                    self._work.notify()  # a step held back for the limit may go now
            del job  # drop the result before waiting for the next step


_SKIP = _Job("", lambda: None, (), _Kind.NOW)  # a cancelled step a thread took before it was withdrawn

_executor: FairExecutor | None = None
_executor_lock = threading.Lock()


def blocking_executor() -> FairExecutor:
    """The process-wide executor for CPU-heavy work (decoding, synthesis)."""
    global _executor
    if _executor is not None:
        return _executor
    with _executor_lock:
        if _executor is None:
            _executor = FairExecutor()
        return _executor


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_DONE: Any = object()


class _Steps(Generic[T]):
    """A blocking iterator advanced one step per job; only ever touched by one job at a time."""

    def __init__(self, factory: Callable[[], Iterator[T]]) -> None:
        self._factory = factory
        self._iterator: Iterator[T] | None = None
        self._finished = False
        self.stopped = threading.Event()

    @property
    def open(self) -> bool:
        """True while an iterator was made and is neither exhausted nor closed."""
        return self._iterator is not None and not self._finished

    def step(self) -> T:
        """The next item, or ``_DONE`` (also when stopped: then no work is done)."""
        if self.stopped.is_set() or self._finished:
            self.close()
            return cast(T, _DONE)
        if self._iterator is None:
            self._iterator = iter(self._factory())  # even making it may be heavy: here, off the loop
        try:
            return next(self._iterator)
        except StopIteration:
            self._finished = True
            return cast(T, _DONE)
        except BaseException:
            self._finished = True  # a generator that raised is finished
            raise

    def close(self) -> None:
        """Close the iterator (a generator runs its ``finally`` blocks here)."""
        self._finished = True
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()


async def iterate_blocking(
    key: Hashable, factory: Callable[[], Iterator[T]], *, executor: FairExecutor | None = None
) -> AsyncIterator[T]:
    """Yield the items of the blocking iterator ``factory()``, one executor step per item.

    ``factory`` runs in the first step, off the loop. While an item is being consumed the
    next one is already being made (one step ahead, no more, submitted with
    ``submit_ahead``), so a TTS engine's next sentence is ready when the current one has
    been pushed, without taking the thread other calls' waiting steps need. Closing this
    async iterator (a barge-in) stops at the next step boundary: a step not started yet
    never advances the iterator, a running one finishes, and then the iterator is closed
    on a worker thread. An exception raised by the iterator is raised here.
    """
    pool = executor or blocking_executor()
    steps = _Steps(factory)
    pending = pool.submit(key, steps.step)
    try:
        while True:
            item = await asyncio.wrap_future(pending)
            if item is _DONE:
                return
            pending = pool.submit_ahead(key, steps.step)
            yield item
    finally:
        steps.stopped.set()

        def close_after(_: Future[T]) -> None:
            # The iterator must not be closed while a step runs it: only once that step ended.
            if steps.open:
                pool.submit_cleanup(key, steps.close)

        pending.add_done_callback(close_after)
