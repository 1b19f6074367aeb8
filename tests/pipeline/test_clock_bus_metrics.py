"""VirtualClock, the bus, and the metrics observers."""

import asyncio

from pipeline import Bus, CallContext, Graph, Message, MessageType, Processor, VirtualClock, instrument, run_call
from pipeline.frames import FinalTranscript, LLMToken
from pipeline.testing import Collector, Feeder


async def test_virtual_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = VirtualClock()
    woke: list[tuple[str, int]] = []

    async def sleeper(name: str, at_ms: int) -> None:
        await clock.sleep_until(at_ms * 1_000_000)
        woke.append((name, clock.now_ns() // 1_000_000))

    tasks = [asyncio.create_task(sleeper(n, t)) for n, t in (("c", 60), ("a", 20), ("b", 40))]
    await asyncio.sleep(0)
    assert clock.sleepers == 3
    await clock.advance(30_000_000)
    assert woke == [("a", 20)] and clock.now_ns() == 30_000_000
    await clock.advance(100_000_000)
    assert woke == [("a", 20), ("b", 40), ("c", 60)]
    await asyncio.gather(*tasks)


async def test_bus_is_bounded_and_never_blocks() -> None:
    bus = Bus(maxsize=3)
    seen: list[str] = []
    bus.watch(lambda m: seen.append(m.text))
    for i in range(5):
        bus.post(Message(type=MessageType.EVENT, source="t", text=str(i)))
    assert bus.dropped == 2 and seen == ["0", "1", "2", "3", "4"]
    assert (await bus.get()).text == "2"
    assert [m.text for m in bus.pending()] == ["3", "4"]


class SlowWords(Processor):
    consumes = (FinalTranscript,)
    produces = (LLMToken,)
    io_bound = True

    async def process(self, frame: FinalTranscript) -> None:
        await asyncio.sleep(0)
        for word in frame.text.split():
            await self.push(LLMToken(word, turn=frame.turn))


async def test_metrics_per_node_time_ttfb_per_turn_and_queue_depth() -> None:
    ctx = CallContext()
    graph = Graph()
    frames = [FinalTranscript("a b c", turn=1), FinalTranscript("d e", turn=2), FinalTranscript("f", turn=3)]
    graph.chain(Feeder(frames), SlowWords(name="words"), Collector())
    metrics = instrument(graph)
    result = await run_call(graph, ctx, timeout=5)
    assert result.reason == "eos"
    stats = metrics.nodes["words"]
    assert len(stats.processing_ns) == 3 and all(ns > 0 for ns in stats.processing_ns)
    assert sorted(stats.ttfb_ms) == [1, 2, 3] and all(v >= 0 for v in stats.ttfb_ms.values())
    assert len(metrics.nodes["collector"].processing_ns) == 6
    summary = metrics.summary()
    assert summary["words"]["queue_peak"] >= 1 and summary["words"]["frames"] == 3
    ttfb = [m for m in ctx.bus.pending() if m.type is MessageType.METRICS]
    assert [(m.source, m.data.turn) for m in ttfb] == [("words", 1), ("words", 2), ("words", 3)]
