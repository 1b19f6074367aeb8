"""Shared pieces of the LLM brain tests: models files pointing at the peer, a source the test
feeds line by line, and waiting on conditions without sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.clock import Clock
from pipeline.context import CallContext
from pipeline.frames import DataFrame, Frame, LLMToken
from pipeline.graph import Graph
from pipeline.processor import Processor
from pipeline.runner import CallResult, run_call
from pipeline.testing import Collector
from processors.llm.llm_node import LLMBrain, LLMBrainSettings
from processors.llm.router import ModelRouter, load_models

ENV = {"TEST_LLM_KEY": "sk-test"}
WAIT_S = 10.0


def models_file(tmp_path: Path, url: str, deployments: Sequence[str], *, routes: Mapping[str, Sequence[str]] | None = None,
                ttft_ms: float = 3000, extra: Mapping[str, Any] | None = None) -> Path:
    """A models file whose deployments are models of the peer at ``url`` (one route ``main``
    through all of them in order, unless ``routes`` says otherwise)."""
    data: dict[str, Any] = {
        "deployments": {name: {"kind": "openai", "model": name, "base_url": url + "/v1", "api_key_env": "TEST_LLM_KEY",
                               "first_token_timeout_ms": ttft_ms} for name in deployments},
        "routes": dict(routes or {"main": list(deployments)}),
        **(extra or {}),
    }
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def brain_on(path: Path, *, clock: Clock | None = None, **settings: Any) -> LLMBrain:
    """An LLM brain with its own router on ``path`` (breakers on ``clock``)."""
    brain = LLMBrain(LLMBrainSettings(**settings))
    brain.router = ModelRouter(load_models(path), clock=clock, env=ENV)
    return brain


def next_call(brain: LLMBrain) -> LLMBrain:
    """A brain for another call of the same worker: same settings, same (shared) router."""
    fresh = LLMBrain(brain.settings)
    fresh.router = brain.router
    return fresh


class Lines(Processor):
    """A source the test feeds: ``await lines.send(frame)``; ``lines.end()`` ends the stream."""

    produces = (DataFrame,)

    def __init__(self) -> None:
        super().__init__(name="lines")
        self.queue: asyncio.Queue[Frame | None] = asyncio.Queue()

    async def run(self) -> None:
        while (frame := await self.queue.get()) is not None:
            await self.push(frame)

    async def send(self, frame: Frame) -> None:
        await self.queue.put(frame)

    def end(self) -> None:
        self.queue.put_nowait(None)


def start_call(brain: Processor, ctx: CallContext | None = None) -> tuple[Lines, Collector, asyncio.Task[CallResult]]:
    """``lines -> brain -> collector`` running as a call in a task (no call timeout: the
    test's clock then has no sleeper but the brain's)."""
    lines, out = Lines(), Collector()
    graph = Graph("llm-test")
    graph.chain(lines, brain, out)
    return lines, out, asyncio.ensure_future(run_call(graph, ctx))


async def wait_until(condition: Callable[[], bool]) -> None:
    """Yield to the loop (and its I/O) until ``condition()`` holds; fail after WAIT_S."""
    async with asyncio.timeout(WAIT_S):
        # Frames reaching a collector signal nothing to wait on; yielding lets the loop run
        # the call's tasks and its socket I/O between checks.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0)


def spoken(out: Collector, turn: int) -> str:
    return "".join(f.text for f in out.frames if isinstance(f, LLMToken) and f.turn == turn)
