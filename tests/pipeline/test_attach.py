"""A tap attached to a running call: sticky frames replayed first, then the live stream."""

import asyncio

import pytest

from pipeline import Graph, Processor
from pipeline.errors import StateError
from pipeline.frames import AudioFormat, EndOfStream, InputAudio
from pipeline.runner import CallRunner
from pipeline.testing import Collector, until


class Line(Processor):
    """A source that says its format, then sends one audio frame each time it is told to."""

    produces = (InputAudio,)

    def __init__(self) -> None:
        super().__init__(name="line")
        self.go: asyncio.Queue[int] = asyncio.Queue()

    async def run(self) -> None:
        await self.push(AudioFormat(8000))
        while (n := await self.go.get()) >= 0:
            await self.push(InputAudio(bytes([n]) * 2))


class Listener(Collector):
    """A tap: the io_bound queue is what the graph gives a tap node."""


async def test_a_late_tap_gets_the_format_first_then_only_new_frames() -> None:
    line, sink = Line(), Collector()
    graph = Graph("live")
    graph.chain(line, sink)
    runner = CallRunner(graph)
    call = asyncio.create_task(runner.run(timeout=30))
    for n in (1, 2):
        line.go.put_nowait(n)
    await until(lambda: len(sink.frames) == 2)
    listener = Listener(name="listener")
    await runner.attach("line", listener, maxsize=8)
    for n in (3, 4):
        line.go.put_nowait(n)
    line.go.put_nowait(-1)
    result = await call
    assert result.reason == "eos"
    assert [type(f) for f in listener.seen] == [AudioFormat, InputAudio, InputAudio, EndOfStream]
    assert listener.seen[0] == AudioFormat(8000)
    assert [f.pcm for f in listener.frames] == [b"\x03\x03", b"\x04\x04"]  # type: ignore[attr-defined]
    assert [f.pcm for f in sink.frames] == [bytes([n]) * 2 for n in (1, 2, 3, 4)]  # type: ignore[attr-defined]
    assert listener.state.value == "stopped"


async def test_a_detached_tap_stops_and_the_call_goes_on() -> None:
    line, sink = Line(), Collector()
    graph = Graph("live")
    graph.chain(line, sink)
    runner = CallRunner(graph)
    call = asyncio.create_task(runner.run(timeout=30))
    await until(lambda: line.state.value == "running")
    listener = Listener(name="listener")
    await runner.attach("line", listener)
    line.go.put_nowait(1)
    await until(lambda: len(listener.frames) == 1)
    await runner.detach(listener)
    line.go.put_nowait(2)
    line.go.put_nowait(-1)
    assert (await call).reason == "eos"
    assert len(listener.frames) == 1 and len(sink.frames) == 2
    assert "listener" not in graph.nodes and listener.state.value == "stopped"


async def test_attach_needs_a_running_call() -> None:
    graph = Graph("idle")
    graph.chain(Line(), Collector())
    with pytest.raises(StateError, match="not running"):
        await CallRunner(graph).attach("line", Listener(name="x"))


async def test_a_tap_attached_from_outside_the_call_stamps_its_frames_on_the_calls_clock() -> None:
    from pipeline.clock import VirtualClock
    from pipeline.context import CallContext
    from pipeline.frames import TTSText

    class Stamper(Processor):
        """A tap that makes a frame of its own for each one it gets."""

        consumes = (InputAudio,)

        def __init__(self) -> None:
            super().__init__(name="stamper")
            self.made: list[int] = []

        async def process(self, frame: InputAudio) -> None:
            self.made.append(TTSText("seen").ts)

    clock = VirtualClock(start_ns=7_000_000_000)
    line, sink = Line(), Collector()
    graph = Graph("live")
    graph.chain(line, sink)
    runner = CallRunner(graph, CallContext(clock=clock))
    call = asyncio.create_task(runner.run(timeout=30))
    await until(lambda: line.state.value == "running")
    stamper = Stamper()
    await runner.attach("line", stamper)  # from this test task: not one of the call's
    line.go.put_nowait(1)
    line.go.put_nowait(-1)
    assert (await call).reason == "eos"
    assert stamper.made == [7_000_000_000]  # virtual time, not the monotonic clock
