"""FrameQueue: backpressure with water marks, tap overflow policies, flush purge."""

import asyncio

import pytest

from pipeline import FrameQueue
from pipeline.frames import EndOfStream, LLMToken, ResponseEnd


async def test_put_blocks_at_high_water_and_resumes_below_low_water() -> None:
    q = FrameQueue(4)
    for i in range(4):
        await q.put(LLMToken(str(i)))
    blocked = asyncio.create_task(q.put(LLMToken("4")))
    await asyncio.sleep(0)
    assert not blocked.done() and len(q) == 4
    await q.get()
    await asyncio.sleep(0)
    assert not blocked.done()  # 3 left: still above the low-water mark (2)
    await q.get()
    await asyncio.sleep(0)
    assert blocked.done() and len(q) == 3
    assert q.high_mark == 4


async def test_control_frames_are_never_blocked_or_dropped() -> None:
    q = FrameQueue(1, "drop_newest")
    assert q.offer(LLMToken("a"))
    assert not q.offer(LLMToken("b"))
    assert q.offer(EndOfStream())
    assert [type(f).__name__ for f in (await q.get(), await q.get())] == ["LLMToken", "EndOfStream"]
    assert q.dropped == 1
    bq = FrameQueue(1)
    await bq.put(LLMToken("a"))
    await asyncio.wait_for(bq.put(ResponseEnd()), 1)  # does not wait for room
    assert len(bq) == 2


def test_drop_oldest_keeps_newest_data_and_all_control() -> None:
    q = FrameQueue(3, "drop_oldest")
    q.offer(ResponseEnd())
    for i in range(5):
        q.offer(LLMToken(str(i)))
    kept = [getattr(f, "text", "END") for f in q._items]
    assert kept == ["END", "3", "4"] and q.dropped == 3


def test_purge_drops_only_stale_turn_data() -> None:
    q = FrameQueue(10)
    for frame in [LLMToken("a", turn=1), LLMToken("b", turn=0), ResponseEnd(turn=1), LLMToken("c", turn=2),
                  LLMToken("d", turn=3)]:
        q.offer(frame)
    assert q.purge(2) == 2
    assert [getattr(f, "text", "END") for f in q._items] == ["b", "END", "d"]


def test_bad_size() -> None:
    with pytest.raises(ValueError, match="queue size must be >= 1"):
        FrameQueue(0)
