"""Barge-in flush semantics: FlushStart drops stale turns everywhere; FlushStop is in-band."""

import asyncio
from collections.abc import AsyncIterator

from pipeline import CallContext, Graph, Processor, State, run_call
from pipeline.frames import (
    EndOfStream,
    FinalTranscript,
    FlushStart,
    FlushStop,
    InputAudio,
    LLMToken,
    ResponseEnd,
)
from pipeline.testing import Collector, Feeder


class Held(Processor):
    """I/O-bound: blocks on the first frame until released, so later frames queue up."""

    consumes = (LLMToken, InputAudio)
    produces = (LLMToken, InputAudio)
    io_bound = True

    def __init__(self) -> None:
        super().__init__(name="held")
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def process(self, frame: LLMToken | InputAudio) -> None:
        self.entered.set()
        await self.release.wait()
        await self.push(frame)


async def test_flush_start_purges_queued_data_of_stale_turns_only() -> None:
    held = Held()
    sink = Collector()
    frames = [
        LLMToken("first", turn=1),  # in process() when the flush comes: pushed late, must be dropped
        LLMToken("queued-1", turn=1),
        InputAudio(b"\x01\x00", turn=0),  # caller audio is not bound to a turn: kept
        ResponseEnd(turn=1),  # control: kept, in order
        LLMToken("queued-2", turn=2),  # a newer turn: kept
    ]
    graph = Graph()
    graph.chain(Feeder(frames), held, sink)
    task = asyncio.create_task(run_call(graph, CallContext(), timeout=10))
    await held.entered.wait()
    assert held._queue is not None and len(held._queue) == 5  # 4 frames + EndOfStream
    graph.broadcast(FlushStart(turn=1))
    assert len(held._queue) == 4
    held.release.set()
    result = await task
    assert result.reason == "eos"
    assert [getattr(f, "text", None) for f in sink.frames] == [None, "queued-2"]
    assert [type(f) for f in sink.controls] == [ResponseEnd, EndOfStream]
    assert held.stale_dropped == 1 and sink.stale_dropped == 1  # one purged, one dropped on arrival


class Streamer(Processor):
    """Streams tokens from a generator that stalls forever after two tokens."""

    consumes = (FinalTranscript,)
    produces = (LLMToken,)
    io_bound = True

    def __init__(self) -> None:
        super().__init__(name="llm")
        self.stalled = asyncio.Event()
        self.closed: list[int] = []
        self.finished: list[int] = []

    async def tokens(self, turn: int) -> AsyncIterator[str]:
        try:
            yield "one"
            yield "two"
            if turn == 1:
                self.stalled.set()
                await asyncio.Event().wait()  # a stream that never sends its next token
            yield "three"
        finally:
            self.closed.append(turn)

    async def process(self, frame: FinalTranscript) -> None:
        async for token in self.interruptible(self.tokens(frame.turn), frame.turn):
            await self.push(LLMToken(token, turn=frame.turn))
        self.finished.append(frame.turn)


async def test_in_flight_stream_is_cancelled_cooperatively_and_the_node_keeps_working() -> None:
    llm = Streamer()
    sink = Collector()
    turn2 = asyncio.Event()

    class Caller(Feeder):
        async def run(self) -> None:
            await self.push(FinalTranscript("hi", turn=1))
            await turn2.wait()
            await self.push(FinalTranscript("again", turn=2))

    graph = Graph()
    graph.chain(Caller(), llm, sink)
    task = asyncio.create_task(run_call(graph, CallContext(), timeout=10))
    await llm.stalled.wait()
    worker_before = [t for t in asyncio.all_tasks() if t.get_name().endswith("llm:worker")]
    graph.broadcast(FlushStart(turn=1))
    await asyncio.sleep(0)
    for _ in range(10):
        if 1 in llm.finished:
            break
        await asyncio.sleep(0)
    assert llm.finished == [1] and llm.closed == [1]  # the stalled stream was closed, process() returned
    turn2.set()
    result = await task
    assert result.reason == "eos"
    assert [(f.turn, f.text) for f in sink.frames] == [(1, "one"), (1, "two"), (2, "one"), (2, "two"), (2, "three")]
    assert llm.finished == [1, 2]
    assert llm.state is State.STOPPED
    assert len(worker_before) == 1  # one worker for the whole call: never cancelled and recreated


async def test_no_stale_frame_reaches_a_sink_after_flush_start() -> None:
    """A node that keeps pushing a flushed turn (ignoring is_stale) is stopped at the next hop."""

    class Stubborn(Processor):
        consumes = (FinalTranscript,)
        produces = (LLMToken,)

        async def process(self, frame: FinalTranscript) -> None:
            for i in range(50):
                if i == 10:
                    self.emit(FlushStart(turn=frame.turn))
                await self.push(LLMToken(str(i), turn=frame.turn))
            await self.push(FlushStop(turn=frame.turn))
            await self.push(LLMToken("next", turn=frame.turn + 1))

    class Flushes(Collector):
        def on_event(self, event) -> None:  # type: ignore[no-untyped-def]
            super().on_event(event)
            if isinstance(event, FlushStart):
                self.flushed_at = len(self.frames)

    sink = Flushes()
    graph = Graph()
    graph.chain(Feeder([FinalTranscript("go", turn=1)]), Stubborn(name="stubborn"), sink)
    result = await run_call(graph, timeout=5)
    assert result.reason == "eos"
    assert sink.flushed_at == 10
    assert [f.text for f in sink.frames] == [str(i) for i in range(10)] + ["next"]
    assert sink.stale_dropped == 40
    assert [type(c).__name__ for c in sink.controls] == ["FlushStop", "EndOfStream"]


async def test_flush_stop_travels_in_band_after_the_data_before_it() -> None:
    class Resetter(Processor):
        consumes = (LLMToken,)
        produces = (LLMToken,)

        def __init__(self) -> None:
            super().__init__(name="r")
            self.buffer: list[str] = []
            self.reset_with: list[list[str]] = []

        async def process(self, frame: LLMToken) -> None:
            self.buffer.append(frame.text)
            await self.push(frame)

        async def on_control(self, frame) -> None:  # type: ignore[no-untyped-def]
            if isinstance(frame, FlushStop):
                self.reset_with.append(list(self.buffer))
                self.buffer.clear()

    node = Resetter()
    graph = Graph()
    graph.chain(
        Feeder([LLMToken("a", turn=2), LLMToken("b", turn=2), FlushStop(turn=1), LLMToken("c", turn=2)]),
        node,
        Collector(),
    )
    await run_call(graph, timeout=5)
    assert node.reset_with == [["a", "b"]] and node.buffer == ["c"]
