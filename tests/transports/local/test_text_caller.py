"""The text caller on a virtual clock: it waits for the answer to its own turn (a greeting
ending meanwhile is not that answer), and gives up on the call's clock."""

from __future__ import annotations

import asyncio

from pipeline.clock import VirtualClock
from pipeline.context import CallContext
from pipeline.frames import FinalTranscript, LLMToken, ResponseEnd, ResponseStart
from pipeline.graph import Graph
from pipeline.processor import Processor
from pipeline.runner import CallResult, run_call
from transports.local.text import TextCaller, TextCallerSettings

MS = 1_000_000


class SlowBot(Processor):
    """Greets on a turn of its own, taking 500 ms, and answers each line 1 s after it
    arrives (``answer_ms``; None: never)."""

    consumes = (FinalTranscript,)
    produces = (LLMToken,)
    io_bound = True

    def __init__(self, answer_ms: int | None = 1000) -> None:
        super().__init__(name="bot")
        self.answer_ms = answer_ms
        self.greeting_turn = 0
        self.lines: list[tuple[int, int, str]] = []  # (ms sent, turn, text)

    async def setup(self) -> None:
        self.greeting_turn = self.ctx.next_turn()

    async def run(self) -> None:
        turn, clock = self.greeting_turn, self.ctx.clock
        await self.push(ResponseStart(turn=turn))
        await clock.sleep_until(clock.now_ns() + 500 * MS)
        await self.push(LLMToken("Welcome!", turn=turn))
        await self.push(ResponseEnd(turn=turn))
        await asyncio.get_running_loop().create_future()  # stays on the line until the call ends

    async def process(self, frame: FinalTranscript) -> None:
        self.lines.append((frame.ts // MS, frame.turn, frame.text))
        if self.answer_ms is None:
            return
        clock = self.ctx.clock
        await clock.sleep_until(clock.now_ns() + self.answer_ms * MS)
        await self.push(ResponseStart(turn=frame.turn))
        await self.push(LLMToken(f"About {frame.text.lower()}.", turn=frame.turn))
        await self.push(ResponseEnd(turn=frame.turn))


async def call(caller: TextCaller, bot: SlowBot) -> CallResult:
    clock = VirtualClock()
    graph = Graph("text")
    graph.chain(caller, bot, caller)
    task = asyncio.create_task(run_call(graph, CallContext(clock=clock)))
    await clock.advance(0)
    for _ in range(1000):
        if task.done():
            break
        await clock.advance(10 * MS)
    assert task.done(), "the call did not end"
    return task.result()


async def test_the_caller_waits_for_the_answer_to_its_own_turn_not_the_greeting() -> None:
    me, bot = TextCaller(TextCallerSettings(lines=("Hours", "Claims")), name="caller"), SlowBot()
    result = await call(me, bot)
    assert result.reason == "eos"
    # The greeting (turn 1) ends at 500 ms, while line 1 (turn 2) is still being answered:
    # line 2 goes when the answer to line 1 has ended, at 1000 ms.
    assert bot.lines == [(0, 2, "Hours"), (1000, 3, "Claims")]
    assert me.replies == {1: "Welcome!", 2: "About hours.", 3: "About claims."}


async def test_no_reply_gives_up_after_the_timeout_on_the_calls_clock() -> None:
    me = TextCaller(TextCallerSettings(lines=("Hours", "Claims"), reply_timeout_s=2.0), name="caller")
    bot = SlowBot(answer_ms=None)
    result = await call(me, bot)
    assert result.reason == "eos"
    assert bot.lines == [(0, 2, "Hours"), (2000, 3, "Claims")]
