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


async def test_every_blocked_producer_is_woken_on_fan_in() -> None:
    """Two producers blocked on a full queue (fan-in into an io_bound node): both resume.

    With one waiting-putter slot the second producer overwrote the first's future, which
    was never resolved: that producer hung forever and the call with it.
    """
    q = FrameQueue(2)
    await q.put(LLMToken("x"))
    await q.put(LLMToken("y"))
    a = asyncio.create_task(q.put(LLMToken("a")))
    b = asyncio.create_task(q.put(LLMToken("b")))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not a.done() and not b.done()
    got = [await q.get(), await q.get()]  # drains to 0 <= low water (1): both wake
    for _ in range(5):
        await asyncio.sleep(0)
    assert a.done() and b.done()
    got += [await q.get(), await q.get()]
    assert sorted(f.text for f in got) == ["a", "b", "x", "y"]  # type: ignore[attr-defined]


async def test_fan_in_under_backpressure_delivers_every_frame_in_producer_order() -> None:
    q = FrameQueue(3)
    n = 200

    async def produce(name: str) -> None:
        for i in range(n):
            await q.put(LLMToken(f"{name}{i}"))

    producers = [asyncio.create_task(produce(p)) for p in "abcd"]
    seen: dict[str, list[int]] = {p: [] for p in "abcd"}
    for _ in range(4 * n):
        frame = await q.get()
        text = frame.text  # type: ignore[attr-defined]
        seen[text[0]].append(int(text[1:]))
        await asyncio.sleep(0)  # a slow consumer: the producers keep hitting the bound
    await asyncio.gather(*producers)
    assert all(seen[p] == list(range(n)) for p in "abcd")
    assert q.high_mark <= 3 + 4  # at most one frame per woken producer above the bound


async def test_a_cancelled_producer_does_not_swallow_the_wakeup() -> None:
    q = FrameQueue(1)
    await q.put(LLMToken("x"))
    a = asyncio.create_task(q.put(LLMToken("a")))
    b = asyncio.create_task(q.put(LLMToken("b")))
    await asyncio.sleep(0)
    a.cancel()
    await asyncio.gather(a, return_exceptions=True)
    await q.get()
    for _ in range(3):
        await asyncio.sleep(0)
    assert b.done() and len(q) == 1
