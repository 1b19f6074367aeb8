"""Processor base: routing, ordering of in-band vs out-of-band frames, errors, lifecycle."""

import asyncio

import pytest

from pipeline import CallContext, FatalError, Graph, MessageType, Processor, State, run_call
from pipeline.frames import (
    AudioFormat,
    BotStartedSpeaking,
    EndOfStream,
    FinalTranscript,
    FrameClass,
    InputAudio,
    LLMToken,
    ResponseEnd,
    ResponseStart,
    UserStartedSpeaking,
)
from pipeline.testing import Collector, Feeder, run_processor


class Upper(Processor):
    consumes = (FinalTranscript,)
    produces = (FinalTranscript,)

    async def process(self, frame: FinalTranscript) -> None:
        await self.push(FinalTranscript(frame.text.upper(), turn=frame.turn))


async def test_consumed_frames_are_processed_others_pass_through_in_order() -> None:
    frames = [
        AudioFormat(16000),
        InputAudio(b"\x00\x00" * 160),
        FinalTranscript("hello", turn=1),
        LLMToken("tok", turn=1),
        FinalTranscript("again", turn=2),
    ]
    out, result = await run_processor(Upper(), frames)
    assert result.reason == "eos"
    assert [type(f).__name__ for f in out.frames] == ["InputAudio", "FinalTranscript", "LLMToken", "FinalTranscript"]
    assert [f.text for f in out.of_type(FinalTranscript)] == ["HELLO", "AGAIN"]
    assert out.controls[0] == AudioFormat(16000)
    assert isinstance(out.controls[-1], EndOfStream)


class Gate(Processor):
    """An I/O-bound node that holds every frame until the test opens the gate."""

    consumes = (LLMToken,)
    produces = (LLMToken,)
    io_bound = True

    def __init__(self) -> None:
        super().__init__(name="gate")
        self.open = asyncio.Event()
        self.entered = asyncio.Event()

    async def process(self, frame: LLMToken) -> None:
        self.entered.set()
        await self.open.wait()
        await self.push(frame)


async def _drive(graph: Graph, ctx: CallContext) -> asyncio.Task:
    return asyncio.create_task(run_call(graph, ctx, timeout=10))


async def test_out_of_band_event_jumps_queued_data_in_band_control_keeps_order() -> None:
    gate = Gate()
    sink = Collector()
    feeder = Feeder([LLMToken("a", turn=1), ResponseEnd(turn=1), LLMToken("b", turn=2)])
    graph = Graph()
    graph.chain(feeder, gate, sink)
    ctx = CallContext()
    task = await _drive(graph, ctx)
    await gate.entered.wait()  # "a" is in process(); ResponseEnd and "b" are queued
    graph.broadcast(BotStartedSpeaking(turn=1))
    assert [type(f).__name__ for f in sink.seen] == ["Start", "BotStartedSpeaking"]  # before any data
    gate.open.set()
    result = await task
    assert result.reason == "eos"
    names = [type(f).__name__ for f in sink.seen if f.kind is not FrameClass.EVENT]
    assert names[:4] == ["LLMToken", "ResponseEnd", "LLMToken", "EndOfStream"]
    assert [f.text for f in sink.frames] == ["a", "b"]


class Boom(Processor):
    consumes = (FinalTranscript,)
    produces = (FinalTranscript,)

    async def process(self, frame: FinalTranscript) -> None:
        if frame.text == "boom":
            raise ValueError("cannot handle boom")
        if frame.text == "fatal":
            raise FatalError("the line dropped")
        await self.push(frame)


async def test_error_in_process_posts_on_bus_and_the_call_goes_on() -> None:
    ctx = CallContext()
    frames = [FinalTranscript("one", turn=1), FinalTranscript("boom", turn=2), FinalTranscript("three", turn=3)]
    out, result = await run_processor(Boom(name="boom"), frames, ctx=ctx)
    assert result.reason == "eos"
    assert [f.text for f in out.frames] == ["one", "three"]
    assert len(result.errors) == 1
    assert result.errors[0].node == "boom" and "cannot handle boom" in result.errors[0].message
    assert result.errors[0].turn == 2 and not result.errors[0].fatal
    errors = [m for m in ctx.bus.pending() if m.type is MessageType.ERROR]
    assert [m.source for m in errors] == ["boom"]


async def test_fatal_error_ends_the_call() -> None:
    frames = [FinalTranscript("fatal", turn=1), FinalTranscript("never", turn=2)]
    _, result = await run_processor(Boom(name="boom"), frames)
    assert result.reason == "fatal"
    assert result.errors[0].fatal


async def test_lifecycle_state_sequence_and_bus_messages() -> None:
    ctx = CallContext()
    node = Upper(name="upper")
    await run_processor(node, [FinalTranscript("x", turn=1)], ctx=ctx)
    assert node.states == [State.CREATED, State.STARTING, State.RUNNING, State.STOPPING, State.STOPPED]
    changes = [m.text for m in ctx.bus.pending() if m.type is MessageType.STATE_CHANGED and m.source == "upper"]
    assert changes == ["created -> starting", "starting -> running", "running -> stopping", "stopping -> stopped"]


class BadSetup(Processor):
    async def setup(self) -> None:
        raise RuntimeError("model missing")


async def test_failed_setup_marks_failed_and_stops_started_nodes() -> None:
    sink = Collector()
    bad = BadSetup(name="bad")
    graph = Graph()
    graph.chain(Feeder([]), bad, sink)
    with pytest.raises(FatalError, match="node 'bad' failed to start: RuntimeError: model missing"):
        await run_call(graph)
    assert bad.state is State.FAILED
    assert sink.states[-1] is State.STOPPED  # the sink had started first, and was stopped


async def test_events_emitted_during_a_broadcast_are_delivered_after_it_in_order() -> None:
    class Echoer(Processor):
        def on_event(self, event) -> None:  # type: ignore[no-untyped-def]
            if isinstance(event, UserStartedSpeaking):
                self.emit(BotStartedSpeaking(turn=9))

    sink = Collector()
    graph = Graph()
    graph.chain(Feeder([UserStartedSpeaking(turn=1), ResponseStart(turn=1)]), Echoer(name="e"), sink)
    await run_call(graph, timeout=5)
    events = [type(e).__name__ for e in sink.events]
    assert events == ["Start", "UserStartedSpeaking", "BotStartedSpeaking"]


async def test_sticky_format_is_remembered_by_the_pushing_node() -> None:
    node = Upper(name="u")
    await run_processor(node, [AudioFormat(8000), AudioFormat(24000, stream="out"), AudioFormat(16000)])
    assert sorted(f.sample_rate for f in node.sticky_frames()) == [16000, 24000]
