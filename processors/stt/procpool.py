"""Speech recognition in worker processes, so that a decode never stops the event loop.

pocketsphinx holds the GIL while it decodes (see ``pocketsphinx_engine.py``). On the
executor's threads each 100 ms batch therefore stops the event loop, which carries every
call's audio, for 10-20 ms; with 4-8 callers speaking at once the loop lag p99 reached
66-121 ms and single stalls 0.65 s (perf/acs_density.py). ``ProcessPoolEngine`` hosts the
engine in worker processes instead: the executor thread that runs a stream's ``feed``
sends the audio down a pipe and blocks reading the reply, and a pipe read releases the
GIL, so the loop runs while another process decodes.

- **Start.** Workers are started with the "spawn" method: forking a process that has
  threads and an event loop would copy locks in whatever state other threads held them.
  Each worker builds its own engine once, when it starts (0.3-1.5 s for pocketsphinx); the
  constructor waits until every worker is ready, so a broken model fails there, and it is
  blocking: build the engine off the loop, as every engine. As with any multiprocessing
  program, a script that builds one keeps its top level behind ``if __name__ == "__main__"``
  (a spawned worker imports the main module).
- **Streams.** A stream is pinned, when it opens, to the worker with the fewest open
  streams. Its ``feed``/``finish``/``reset``/``close`` are small messages on that worker's
  pipe (operation, stream id, the PCM bytes); the worker opens its own stream on the first
  one. A lock per worker makes a request and its reply one exchange: the worker is single
  threaded, so requests from several executor threads would queue there anyway. A stream
  dropped without ``close`` is closed in the worker with the next request to it.
- **A worker that dies** (killed, out of memory, a crash in native code) shows as EOF or a
  broken pipe to the next request. That request fails with ``WorkerDied`` (a
  ``ServiceError``, which the STT node reports without ending the call) naming the engine,
  the process and the cause; the dead process is reaped and a new one started in its slot.
  The utterance a failed stream was in is lost: its remaining audio is dropped and its
  ``finish`` raises the same error (a transcript of half a turn would be wrong), ``reset``
  completes. The stream's next utterance goes to a live worker. A stream that was between
  utterances lost nothing: it moves to a live worker without an error. Streams of other
  workers never notice.
- **Shutdown.** ``close()`` closes the pipes (a worker exits when it reads EOF), waits for
  the workers, and terminates one that does not exit. It also runs when the engine is
  garbage-collected and at interpreter exit (the model cache, ``pipeline/models.py``,
  keeps engines for the life of the process). A worker whose parent died reads EOF too.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import threading
import weakref
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

from pipeline.errors import ServiceError

from .engine import Hypothesis, RecognizerStream, STTEngine, check_pcm16

__all__ = ["ProcessPoolEngine", "ProcessStream", "WorkerDied"]

logger = logging.getLogger(__name__)

_READY_TIMEOUT_S = 120.0
"""How long a new worker may take to load its engine (a pocketsphinx pool takes 1-3 s,
much more on a host whose cores are busy) before it is taken for hung and killed."""
_EXIT_TIMEOUT_S = 5.0
"""How long shutdown waits for a request in flight to end and for a worker to exit."""


_NICE = 5
"""How much lower than the caller's the workers' CPU priority is: where they share cores
with the event loop, the loop (every call's audio) gets the core first when it wakes."""


class WorkerDied(ServiceError):
    """The worker process hosting a stream died; what it was decoding is lost."""


def default_processes() -> int:
    """Worker processes when none are asked for: two, or one on a single-core host."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(2, cores)


class _Worker:
    """One worker process, its end of the pipe and the lock that serialises requests."""

    def __init__(self, context: SpawnContext, factory: Callable[[], STTEngine], name: str) -> None:
        self.name = name  # the engine's, for messages; the worker confirms it when ready
        self.sample_rate = 0  # 0 until the worker reported that its engine is loaded
        self.failure: str | None = None  # why this worker is unusable, once it is
        self.streams = 0  # open streams pinned here (the pool's lock guards it)
        self.orphans: deque[int] = deque()  # streams collected unclosed: closed with the next request
        self.lock = threading.Lock()
        conn, child = context.Pipe()
        self.conn: Connection = conn
        self.process: SpawnProcess = context.Process(
            target=_serve, args=(child, factory), name="vg-stt", daemon=True
        )
        self.process.start()
        child.close()  # only the worker holds its end: its death is EOF here

    @property
    def pid(self) -> int:
        pid = self.process.pid
        assert pid is not None  # started in __init__
        return pid

    def wait_ready(self) -> None:
        """Block until the worker has loaded its engine (raises ``WorkerDied`` if it could not)."""
        with self.lock:
            self._check()

    def request(self, op: str, stream_id: int, arg: bytes | None) -> Any:
        """Send one operation for ``stream_id`` and wait for its result.

        Raises:
            WorkerDied: the worker is dead (now or before) or was stopped.
            ValueError: the engine refused the input as a ValueError.
            ServiceError: the engine raised anything else.
        """
        with self.lock:
            self._check()
            orphans = []
            while self.orphans:
                orphans.append(self.orphans.popleft())
            try:
                self.conn.send((op, stream_id, arg, orphans))
                status, value = self.conn.recv()
            except (EOFError, OSError) as exc:
                raise WorkerDied(self._died(exc)) from None
        if status == "ok":
            return value
        is_value_error, message = value
        if is_value_error:
            raise ValueError(message)
        raise ServiceError(f"{self.name} (worker process {self.pid}): {message}")

    def stop(self) -> None:
        """End the worker: EOF on its pipe, then terminate and kill if it lingers; reaps it."""
        idle = self.lock.acquire(timeout=_EXIT_TIMEOUT_S)
        try:
            if self.failure is None:
                self.failure = f"{self.name} worker process {self.pid} was stopped (the engine was closed)"
            if idle:
                self.conn.close()  # not under another thread's pending read: it holds the lock
            self._reap()
        finally:
            if idle:
                self.lock.release()

    def _check(self) -> None:
        """Raise if unusable; finish the start-up handshake if not done (lock held)."""
        if self.failure is not None:
            raise WorkerDied(self.failure)
        if self.sample_rate:
            return
        try:
            if not self.conn.poll(_READY_TIMEOUT_S):
                self.failure = (
                    f"{self.name} worker process {self.pid} did not load its engine in {_READY_TIMEOUT_S:.0f} s"
                )
                self.conn.close()
                self._reap()
                raise WorkerDied(self.failure)
            message = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise WorkerDied(self._died(exc)) from None
        if message[0] == "failed":
            self.failure = f"{self.name} worker process {self.pid} could not load its engine: {message[1]}"
            self.conn.close()
            self._reap()
            raise WorkerDied(self.failure)
        _, self.name, self.sample_rate = message

    def _died(self, exc: BaseException) -> str:
        """Record and log the worker's death (lock held); the message for the failed request."""
        self.conn.close()
        cause = self._reap()
        self.failure = f"{self.name} worker process {self.pid} died ({cause}); what it was decoding is lost"
        logger.error("%s (%s)", self.failure, type(exc).__name__)
        return self.failure

    def _reap(self) -> str:
        """Wait for the process to end, forcing it if it lingers; say how it ended."""
        process = self.process
        process.join(_EXIT_TIMEOUT_S)
        if process.exitcode is None:
            process.terminate()
            process.join(_EXIT_TIMEOUT_S)
        if process.exitcode is None:
            process.kill()
            process.join()
        code = process.exitcode
        assert code is not None
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"


def _stop_all(workers: list[_Worker]) -> None:
    for worker in list(workers):
        worker.stop()


class ProcessPoolEngine:
    """An ``STTEngine`` whose streams decode in worker processes (see module docstring).

    Args:
        factory: Builds the hosted engine in each worker; it is pickled to the workers, so
            a module-level function or class, or a ``functools.partial`` of one.
        processes: Worker processes; default :func:`default_processes`.
    """

    name: str
    """The hosted engine's name, for example ``"pocketsphinx"``."""
    sample_rate: int

    def __init__(self, factory: Callable[[], STTEngine], *, processes: int | None = None) -> None:
        count = default_processes() if processes is None else processes
        if count < 1:
            raise ValueError(f"a process pool needs at least one process, got {count}")
        self._factory = factory
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()  # guards the slots and the stream counts
        self._closed = False
        self._ids = itertools.count(1)
        self._workers = [_Worker(self._context, factory, "STT") for _ in range(count)]
        # Holds the list, not the engine: the list's members change as workers are replaced.
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)
        try:
            for worker in self._workers:
                worker.wait_ready()
        except BaseException:
            self._finalizer()
            raise
        self.name = self._workers[0].name
        self.sample_rate = self._workers[0].sample_rate

    def open_stream(self) -> ProcessStream:
        """Open a stream on the least-loaded worker (no message: the worker opens its own
        stream at the first request)."""
        return ProcessStream(self, next(self._ids))

    @property
    def processes(self) -> int:
        """Worker processes (dead ones are replaced, so always the number asked for)."""
        return len(self._workers)

    @property
    def pids(self) -> list[int]:
        """The workers' process ids, slot by slot."""
        with self._lock:
            return [worker.pid for worker in self._workers]

    def close(self) -> None:
        """Stop every worker and wait for them; streams fail with ``WorkerDied`` afterwards."""
        with self._lock:
            self._closed = True
        self._finalizer()

    def _pin(self) -> _Worker:
        """The live worker with the fewest open streams, counting one more for the caller."""
        with self._lock:
            if self._closed:
                raise WorkerDied(f"the {self.name} process pool is closed")
            self._replace_dead()
            worker = min(self._workers, key=lambda w: w.streams)
            worker.streams += 1
            return worker

    def _unpin(self, worker: _Worker) -> None:
        with self._lock:
            worker.streams -= 1

    def restart_dead(self) -> None:
        """Start a new worker in the slot of each dead one (it loads while calls go on)."""
        with self._lock:
            if not self._closed:
                self._replace_dead()

    def _replace_dead(self) -> None:
        for slot, worker in enumerate(self._workers):  # the pool's lock is held
            if worker.failure is not None:
                self._workers[slot] = _Worker(self._context, self._factory, self.name)


class _Pin:
    """The worker a stream is pinned to, apart from the stream so that its finaliser can
    give the pin back without holding the stream."""

    __slots__ = ("engine", "stream_id", "worker")

    def __init__(self, engine: ProcessPoolEngine, stream_id: int) -> None:
        self.engine = engine
        self.stream_id = stream_id
        self.worker: _Worker | None = None

    def get(self) -> _Worker:
        if self.worker is None:
            self.worker = self.engine._pin()
        return self.worker

    def release(self, *, orphaned: bool = False) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            if orphaned:
                worker.orphans.append(self.stream_id)  # never a request here: this may run on the loop
            self.engine._unpin(worker)


class ProcessStream:
    """A stream decoded in a worker process; see :class:`processors.stt.engine.RecognizerStream`.

    Not thread-safe, like every stream: one operation at a time. Each operation blocks
    its thread until the worker answers (the GIL is free meanwhile).
    """

    def __init__(self, engine: ProcessPoolEngine, stream_id: int) -> None:
        self.sample_rate = engine.sample_rate
        self._pin = _Pin(engine, stream_id)
        self._pin.get()
        self._finalizer = weakref.finalize(self, self._pin.release, orphaned=True)
        self._finalizer.atexit = False
        self._lost: str | None = None  # the worker died in this utterance: why
        self._speaking = False  # audio of an open utterance is in the worker

    def feed(self, pcm: bytes) -> Hypothesis | None:
        """Decode more audio in the worker; the rest of a lost utterance is dropped."""
        check_pcm16(pcm)
        self._check_open()
        if self._lost is not None:
            return None
        result: Hypothesis | None = self._request("feed", pcm)
        return result

    def finish(self) -> Hypothesis:
        """The utterance's final hypothesis.

        Raises:
            WorkerDied: the worker died during the utterance (now or earlier).
        """
        self._check_open()
        if self._lost is not None:
            lost, self._lost = self._lost, None
            raise WorkerDied(lost)
        result: Hypothesis = self._request("finish", None, ends_utterance=True)
        return result

    def reset(self) -> None:
        """Drop the utterance; never fails for a dead worker (the utterance is gone anyway)."""
        self._check_open()
        if self._lost is not None:
            self._lost = None
            return
        try:
            self._request("reset", None, ends_utterance=True)
        except WorkerDied:
            pass  # already logged where it was found

    def close(self) -> None:
        """Close the worker's stream; the stream is unusable afterwards."""
        if not self._finalizer.detach():
            return
        worker = self._pin.worker
        try:
            if worker is not None:
                worker.request("close", self._pin.stream_id, None)
        except WorkerDied:
            pass  # its streams died with it
        finally:
            self._pin.release()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return not self._finalizer.alive

    @property
    def pid(self) -> int | None:
        """The worker process this stream is pinned to (None after it died, until the next
        operation pins a live one)."""
        worker = self._pin.worker
        return None if worker is None else worker.pid

    def __enter__(self) -> ProcessStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise RuntimeError("stream is closed")

    def _request(self, op: str, arg: bytes | None, *, ends_utterance: bool = False) -> Any:
        speaking, self._speaking = self._speaking, not ends_utterance
        try:
            try:
                return self._send(op, arg)
            except WorkerDied:
                if speaking:
                    raise
                # Between utterances nothing of this stream was in the dead worker: go on
                # on a live one, without an error.
                return self._send(op, arg)
        except WorkerDied as exc:
            self._speaking = False
            if not ends_utterance:
                self._lost = str(exc)
            raise

    def _send(self, op: str, arg: bytes | None) -> Any:
        try:
            return self._pin.get().request(op, self._pin.stream_id, arg)
        except WorkerDied:
            self._pin.release()  # the next attempt or utterance pins a live worker
            self._pin.engine.restart_dead()
            raise


def _serve(conn: Connection, factory: Callable[[], STTEngine]) -> None:
    """A worker process's main: load the engine, then answer requests until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which ends us
    os.nice(_NICE)
    try:
        engine = factory()
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", engine.name, engine.sample_rate))
    streams: dict[int, RecognizerStream] = {}
    while True:
        try:
            op, stream_id, arg, orphans = conn.recv()
        except EOFError:
            break
        for orphan in orphans:
            _close(streams.pop(orphan, None))
        reply: tuple[str, object]
        try:
            reply = ("ok", _apply(engine, streams, op, stream_id, arg))
        except Exception as exc:  # handed to the caller, like an exception on a thread
            reply = ("error", (isinstance(exc, ValueError), f"{type(exc).__name__}: {exc}"))
        conn.send(reply)
    for stream in streams.values():
        _close(stream)


def _apply(
    engine: STTEngine, streams: dict[int, RecognizerStream], op: str, stream_id: int, arg: bytes | None
) -> Hypothesis | None:
    if op == "close":
        _close(streams.pop(stream_id, None))
        return None
    stream = streams.get(stream_id)
    if stream is None:
        stream = streams[stream_id] = engine.open_stream()
    if op == "feed":
        assert arg is not None
        return stream.feed(arg)
    if op == "finish":
        return stream.finish()
    if op == "reset":
        stream.reset()
        return None
    raise RuntimeError(f"unknown operation {op!r}")


def _close(stream: RecognizerStream | None) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()
