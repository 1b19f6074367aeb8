"""FairExecutor and iterate_blocking: short steps, round-robin between calls, bounded.

Order is made deterministic with one worker thread held by a "blocker" step that waits
on a threading.Event; the test queues steps behind it and then releases it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest

from pipeline.context import CallContext
from pipeline.errors import ServiceError
from pipeline.offload import FairExecutor, blocking_executor, iterate_blocking
from pipeline.processor import Processor

TIMEOUT = 10  # seconds; only a bound on a hang, never a measurement


@pytest.fixture
def one_worker() -> Iterator[FairExecutor]:
    executor = FairExecutor(1, queue_per_worker=16, name="test-offload")
    yield executor
    executor.shutdown()


def hold(executor: FairExecutor, key: str = "blocker") -> threading.Event:
    """Occupy the executor's thread until the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        release.wait(TIMEOUT)

    executor.submit(key, blocker)
    assert started.wait(TIMEOUT)
    return release


def test_a_call_with_one_step_is_not_queued_behind_another_calls_backlog(one_worker: FairExecutor) -> None:
    ran: list[str] = []
    release = hold(one_worker)
    futures = [one_worker.submit("call-a", ran.append, f"a{i}") for i in range(10)]
    futures.append(one_worker.submit("call-b", ran.append, "b0"))
    release.set()
    for future in futures:
        future.result(TIMEOUT)
    # A FIFO would run b0 eleventh; round-robin runs it second.
    assert ran == ["a0", "b0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"]


def test_keys_are_served_in_turn(one_worker: FairExecutor) -> None:
    ran: list[str] = []
    release = hold(one_worker)
    futures = [one_worker.submit(key, ran.append, f"{key}{i}") for key in "abc" for i in range(3)]
    release.set()
    for future in futures:
        future.result(TIMEOUT)
    assert ran == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]


def test_wait_statistics_are_kept_per_key(one_worker: FairExecutor) -> None:
    release = hold(one_worker)
    futures = [one_worker.submit("call-a", int) for _ in range(3)] + [one_worker.submit("call-b", int)]
    release.set()
    for future in futures:
        future.result(TIMEOUT)
    a, b = one_worker.wait_stats("call-a"), one_worker.wait_stats("call-b")
    assert (a.steps, b.steps) == (3, 1)
    assert a.total_ns >= a.max_ns > 0 and b.max_ns > 0
    assert one_worker.wait_stats("never-seen").steps == 0


def test_the_queue_is_bounded_with_a_clear_error(one_worker: FairExecutor) -> None:
    release = hold(one_worker)
    futures = [one_worker.submit(f"call-{i}", int) for i in range(one_worker.max_queued)]
    assert one_worker.queued == 16
    # A ServiceError: the node logs it as a failed service and the call goes on.
    with pytest.raises(ServiceError, match=r"16 CPU steps already wait for 1 threads \(limit 16\).*'call-x' refused"):
        one_worker.submit("call-x", int)
    cleanup = one_worker.submit_cleanup("call-x", int)  # closing a stream is never refused
    release.set()
    for future in [*futures, cleanup]:
        future.result(TIMEOUT)
    assert one_worker.queued == 0


async def test_run_returns_the_result_from_a_worker_thread(one_worker: FairExecutor) -> None:
    loop_thread = threading.current_thread()
    thread = await one_worker.run("call", threading.current_thread)
    assert thread is not loop_thread and thread.name == "test-offload-0"


async def test_an_exception_reaches_the_awaiting_coroutine_and_the_executor_goes_on(one_worker: FairExecutor) -> None:
    def fail() -> None:
        raise ValueError("decoder exploded")

    with pytest.raises(ValueError, match="decoder exploded"):
        await one_worker.run("call", fail)
    assert await one_worker.run("call", len, "abc") == 3


async def test_cancelling_a_waiting_coroutine_withdraws_its_step(one_worker: FairExecutor) -> None:
    ran: list[str] = []
    release = hold(one_worker)
    submitting = asyncio.Event()

    async def wait_for_step() -> None:
        submitting.set()  # run() submits before it first suspends
        await one_worker.run("call-a", ran.append, "withdrawn")

    waiting = asyncio.ensure_future(wait_for_step())
    await submitting.wait()
    assert one_worker.queued == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert one_worker.queued == 0
    release.set()
    assert await one_worker.run("call-b", ran.append, "next") is None
    assert ran == ["next"]


async def test_cancelling_while_the_step_runs_does_not_wedge_the_executor(one_worker: FairExecutor) -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def long_step() -> None:
        started.set()
        release.wait(TIMEOUT)
        finished.append(True)

    waiting = asyncio.ensure_future(one_worker.run("call-a", long_step))
    await asyncio.to_thread(started.wait, TIMEOUT)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()  # the running step finishes on its thread; its result is dropped
    assert await one_worker.run("call-b", len, "ab") == 2
    assert finished == [True] and one_worker.queued == 0


def test_work_ahead_of_need_leaves_a_thread_for_waiting_steps() -> None:
    executor = FairExecutor(2, name="test-ahead")
    started = [threading.Event(), threading.Event()]
    release = threading.Event()

    def synthesise(i: int) -> int:
        started[i].set()
        release.wait(TIMEOUT)
        return i

    try:
        first = executor.submit_ahead("answer-a", synthesise, 0)
        assert started[0].wait(TIMEOUT)
        second = executor.submit_ahead("answer-b", synthesise, 1)  # a thread is free, but it is the last one
        # A step someone waits for takes the free thread at once, while both answers hold.
        assert executor.submit("stt", len, "abc").result(TIMEOUT) == 3
        assert not started[1].is_set() and executor.queued == 1
        release.set()
        assert (first.result(TIMEOUT), second.result(TIMEOUT)) == (0, 1)
    finally:
        release.set()
        executor.shutdown()


def test_with_one_thread_work_ahead_still_runs(one_worker: FairExecutor) -> None:
    assert one_worker.submit_ahead("answer", len, "ab").result(TIMEOUT) == 2


def test_bad_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least one worker and one queued step, got 1 and 0"):
        FairExecutor(1, queue_per_worker=0)


# --- iterate_blocking --------------------------------------------------------------


class Counted:
    """A blocking generator that records which thread advanced it and how far."""

    def __init__(self, items: int, gates: list[threading.Event] | None = None) -> None:
        self.items = items
        self.gates = gates
        self.made_on: threading.Thread | None = None
        self.produced = 0
        self.advanced = threading.Event()  # set at each item
        self.reached = [threading.Event() for _ in range(items)]  # set when work on item i begins
        self.closed = False

    def __call__(self) -> Iterator[int]:
        self.made_on = threading.current_thread()
        return self._run()

    def _run(self) -> Iterator[int]:
        try:
            for i in range(self.items):
                self.reached[i].set()
                if self.gates is not None:
                    assert self.gates[i].wait(TIMEOUT)
                self.produced += 1
                self.advanced.set()
                yield i
        finally:
            self.closed = True


async def test_items_come_one_step_each_and_the_factory_runs_off_the_loop(one_worker: FairExecutor) -> None:
    source = Counted(4)
    items = [item async for item in iterate_blocking("call", source, executor=one_worker)]
    assert items == [0, 1, 2, 3]
    assert source.made_on is not None and source.made_on.name == "test-offload-0"
    assert one_worker.wait_stats("call").steps == 5  # four items and the step that found the end
    assert source.closed


async def test_another_call_waits_for_one_step_of_a_long_answer_not_all_of_it(one_worker: FairExecutor) -> None:
    ran: list[str] = []

    def answer() -> Iterator[str]:
        for i in range(20):
            ran.append(f"tts{i}")
            yield f"tts{i}"

    chunks = iterate_blocking("call-a", answer, executor=one_worker)
    assert await anext(chunks) == "tts0"
    # tts1 is already queued or running (one step ahead); tts2 is queued only once tts1
    # is consumed, so the other call's step comes before it.
    assert await one_worker.run("call-b", ran.append, "stt") is None
    rest = [chunk async for chunk in chunks]
    assert len(rest) == 19
    assert ran.index("stt") <= 2


async def test_closing_stops_at_the_step_boundary_running_step(one_worker: FairExecutor) -> None:
    gates = [threading.Event() for _ in range(10)]
    source = Counted(10, gates)
    chunks = iterate_blocking("call", source, executor=one_worker)
    gates[0].set()
    assert await anext(chunks) == 0
    assert await asyncio.to_thread(source.reached[1].wait, TIMEOUT)  # the next step runs, held at gates[1]
    await chunks.aclose()  # a barge-in
    for gate in gates:
        gate.set()
    await one_worker.run("barrier", int)  # everything queued before it has run
    await one_worker.run("barrier", int)  # including the close queued after the running step
    # The step that was running finished; no step began after the close, and the
    # generator was closed (its finally ran) on a worker thread.
    assert source.produced == 2 and source.closed


async def test_closing_while_the_next_step_is_queued_never_advances_the_generator(one_worker: FairExecutor) -> None:
    blocking, release = threading.Event(), threading.Event()
    produced: list[int] = []
    closed: list[bool] = []

    def blocker() -> None:
        blocking.set()
        release.wait(TIMEOUT)

    def source() -> Iterator[int]:
        try:
            for i in range(10):
                if i == 0:
                    # Occupy the thread right after this step, so the next one stays queued.
                    one_worker.submit("blocker", blocker)
                produced.append(i)
                yield i
        finally:
            closed.append(True)

    chunks = iterate_blocking("call", source, executor=one_worker)
    assert await anext(chunks) == 0
    assert await asyncio.to_thread(blocking.wait, TIMEOUT)
    assert one_worker.queued == 1  # the next step, behind the blocker
    await chunks.aclose()
    release.set()
    await one_worker.run("barrier", int)
    await one_worker.run("barrier", int)
    assert produced == [0] and closed == [True]


async def test_an_exception_in_the_generator_reaches_the_consumer(one_worker: FairExecutor) -> None:
    def broken() -> Iterator[str]:
        yield "first"
        raise RuntimeError("voice model failed")

    got: list[str] = []
    with pytest.raises(RuntimeError, match="voice model failed"):
        async for chunk in iterate_blocking("call", broken, executor=one_worker):
            got.append(chunk)
    assert got == ["first"]
    assert await one_worker.run("call", len, "ok") == 2


async def test_cancelling_the_consumer_closes_the_generator(one_worker: FairExecutor) -> None:
    gates = [threading.Event() for _ in range(3)]
    source = Counted(3, gates)
    gates[0].set()

    async def consume(chunks: Callable[[], Iterator[int]]) -> list[int]:
        return [item async for item in iterate_blocking("call", chunks, executor=one_worker)]

    task = asyncio.ensure_future(consume(source))
    assert await asyncio.to_thread(source.advanced.wait, TIMEOUT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for gate in gates:
        gate.set()
    await one_worker.run("barrier", int)
    await one_worker.run("barrier", int)
    assert source.closed and source.produced <= 2 and one_worker.queued == 0


async def test_a_processors_blocking_steps_are_queued_under_its_call_id() -> None:
    node = Processor(name="stt")
    node.ctx = CallContext("call-offload-key")
    assert await node.run_blocking(sum, [1, 2, 3]) == 6
    assert blocking_executor().wait_stats("call-offload-key").steps == 1


async def test_unfinished_counts_waiting_and_running_steps_until_their_result_is_set(one_worker: FairExecutor) -> None:
    release = hold(one_worker)
    assert one_worker.unfinished == 1  # the blocker runs
    queued = one_worker.submit("call-a", lambda: "a")
    withdrawn = one_worker.submit("call-b", lambda: "b")
    assert one_worker.unfinished == 3
    withdrawn.cancel()  # never runs
    assert one_worker.unfinished == 2
    seen: list[int] = []
    # When the result is handed over (callbacks run), the step still counts: a driver
    # that sees zero knows every awaiting loop has its wake-up queued.
    queued.add_done_callback(lambda _: seen.append(one_worker.unfinished))
    release.set()
    assert await asyncio.wrap_future(queued) == "a"
    assert seen == [1]
    one_worker.shutdown()  # the threads finish what they hold, and exit
    assert one_worker.unfinished == 0
