"""A cancelled call leaves nothing for asyncio to complain about."""

import asyncio
import gc
import logging

import pytest

from pipeline import CallContext, Graph, Processor
from pipeline.frames import FinalTranscript
from pipeline.runner import CallRunner
from pipeline.testing import Collector, until


class Forever(Processor):
    """A source that never ends its stream (a caller still on the line)."""

    produces = (FinalTranscript,)

    async def run(self) -> None:
        await asyncio.Event().wait()


async def test_cancelling_a_call_logs_no_unretrieved_exception(caplog: pytest.LogCaptureFixture) -> None:
    sink = Collector()
    graph = Graph()
    graph.chain(Forever(name="src"), sink)
    runner = CallRunner(graph, CallContext("c1"))
    task = asyncio.create_task(runner.run())
    await until(lambda: graph.ctx is not None)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        runner.cancel("caller hung up")
        result = await task
        gc.collect()
        await asyncio.sleep(0)
    assert result.reason == "cancelled"
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
