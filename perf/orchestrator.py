"""The orchestrator: what it adds to a turn, with the IVR engine and without a model.

Question
    What does the orchestrator (``use: orchestrator``, the pipeline's brain) add to a
    caller turn, excluding model time (target: under 1 ms median)? That is the registry's
    reload check, the prompt-injection screen, intent detection, the agent loop with its
    handoffs and tool runner, the reply screen, the report events, short-term memory,
    and the engine hops of the brain node.

Method
    One process, one event loop (uvloop when installed); ``perf_counter_ns`` throughout.
    A graph ``source -> brain -> sink``: the source waits for the entry agent's opening,
    then pushes each line of the insurance demo caller (config/scenarios/insurance.yaml)
    as a ``FinalTranscript`` and waits for its ``ResponseEnd`` at the sink; a turn is the
    time between the two. ``--calls`` calls, each a new graph and orchestrator sharing
    one agent registry (the shipped agents, loaded before the first call as a worker
    does), one IVR engine and the domain data already loaded. Three brains:

    * ``ivr``: the orchestrator on the IVR engine, the shipped agents and tools: the demo
      as a caller hears it (auth, the handoff to FNOL, the claim, the goodbye). Filing
      the claim writes to a file off the loop: that store is replaced by one in memory,
      so disk time is not counted.
    * ``null``: the orchestrator with an engine that answers every turn with one fixed
      sentence and no tools: the orchestrator's own cost.
    * ``echo``: a brain node that answers every transcript with one token and ends the
      turn: the engine hops a brain costs in this graph, for scale.

    Orchestrator added latency = ``ivr`` or ``null`` minus ``echo`` (medians).

Result
    ``python perf/orchestrator.py`` (100 calls of 13 turns; 2 vCPUs shared with other jobs,
    Python 3.11.7, uvloop), microseconds, two runs:

    ==============================================  ==============  ==============
    figure                                          median (1, 2)   p99 (1, 2)
    ==============================================  ==============  ==============
    ``echo``: a brain node alone (1,300 turns)      3.7, 3.6        11.8, 9.2
    ``null``: orchestrator, fixed answer (1,300)    111.3, 109.1    267.0, 228.4
    ``ivr``: orchestrator + IVR engine (1,300)      241.0, 231.5    4,550, 568
    orchestrator added (null - echo)                107.7, 105.5
    orchestrator + IVR engine added (ivr - echo)    237.4, 227.9
    ==============================================  ==============  ==============

    The orchestrator adds about 0.11 ms to a turn and, with the IVR engine and the tools
    of the shipped agents, about 0.23 ms (median): a quarter of the 1 ms target. The IVR
    engine's own part is ~20-30 us (perf/ivr_turn.py); the rest of the ``ivr`` figure
    is what its turns ask of the orchestrator beyond the ``null`` engine: tool calls
    through the call's tool runner (``ToolCall`` events, timeouts, the filler watch),
    handoffs and longer replies to screen. The p99 of run 1 (4.5 ms) is a few turns
    that waited for the loop: the registry's reload check every 0.5 s is a thread hop,
    and the machine was shared with other jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.engine import AgentState, Reply, ToolRunner, TurnInput  # noqa: E402
from agents.ivr import IVREngine  # noqa: E402
from agents.orchestrator import Orchestrator, OrchestratorSettings  # noqa: E402
from agents.registry import AgentRegistry  # noqa: E402
from agents.spec import AgentSpec  # noqa: E402
from agents.tools import domain  # noqa: E402
from perf.figures import run_and_print  # noqa: E402
from pipeline.context import CallContext  # noqa: E402
from pipeline.frames import ControlFrame, DataFrame, FinalTranscript, LLMToken, ResponseEnd  # noqa: E402
from pipeline.graph import Graph  # noqa: E402
from pipeline.processor import Processor  # noqa: E402
from pipeline.runner import run_call  # noqa: E402


class Caller(Processor):
    """Waits for the opening (if any), then says each line and waits for its answer."""

    produces = (FinalTranscript,)

    def __init__(self, lines: list[str], *, opening: bool) -> None:
        super().__init__(name="caller")
        self.lines = lines
        self.opening = opening
        self.answered = asyncio.Event()
        self.started: dict[int, int] = {}

    async def run(self) -> None:
        if self.opening:
            await self.answered.wait()
        for line in self.lines:
            self.answered.clear()
            turn = self.ctx.next_turn()
            self.started[turn] = time.perf_counter_ns()
            await self.push(FinalTranscript(line, turn=turn))
            await self.answered.wait()


class Sink(Processor):
    """Marks the end of every answer."""

    consumes = (DataFrame,)

    def __init__(self, caller: Caller) -> None:
        super().__init__(name="sink")
        self.caller = caller
        self.ended: dict[int, int] = {}

    async def process(self, frame: DataFrame) -> None:
        pass

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        if type(frame) is ResponseEnd:
            self.ended[frame.turn] = time.perf_counter_ns()
            self.caller.answered.set()
        return None


class Echo(Processor):
    """One token and the end of the turn for every transcript."""

    consumes = (FinalTranscript,)
    produces = (LLMToken,)

    async def process(self, frame: FinalTranscript) -> None:
        await self.push(LLMToken("Okay.", turn=frame.turn))
        await self.push(ResponseEnd(turn=frame.turn))


class NullEngine:
    """Answers every turn with one sentence, no tools."""

    async def respond(self, agent: AgentSpec, turn: TurnInput, state: AgentState,
                      tools: ToolRunner) -> AsyncIterator[str | Reply]:
        yield Reply(text="Okay, noted.")

    async def enter(self, agent: AgentSpec, state: AgentState, tools: ToolRunner) -> AsyncIterator[str | Reply]:
        yield Reply(text="Hello, how can I help?")


class MemoryClaims(domain.ClaimsStore):
    """Claims kept in memory (no file)."""

    def __init__(self) -> None:
        super().__init__(Path("unused"))
        self.records: list[dict[str, Any]] = []

    async def add(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        record = {"claim_number": f"CLM-{100001 + len(self.records)}", **fields}
        self.records.append(record)
        return record


async def one_call(kind: str, lines: list[str], registry: AgentRegistry, engine: IVREngine) -> list[float]:
    if kind == "echo":
        brain: Processor = Echo(name="brain")
    else:
        brain = Orchestrator(OrchestratorSettings(scenario="insurance"), name="brain", registry=registry,
                             engine=engine if kind == "ivr" else NullEngine())
    caller = Caller(lines, opening=kind != "echo")
    sink = Sink(caller)
    graph = Graph(f"orchestrator-{kind}")
    graph.chain(caller, brain, sink)
    await run_call(graph, CallContext())
    return [(sink.ended[t] - start) / 1000 for t, start in caller.started.items()]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    lines = yaml.safe_load((ROOT / "config" / "scenarios" / "insurance.yaml").read_text())["demo"]
    registry = AgentRegistry(ROOT / "config" / "agents")
    errors = await asyncio.to_thread(registry.load)
    assert not errors, errors
    engine = IVREngine()
    result: dict[str, Any] = {"calls": args.calls, "lines": len(lines)}
    with tempfile.TemporaryDirectory() as tmp:
        made = domain.Domain(state_dir=tmp)
        made.claims = claims = MemoryClaims()
        previous = domain.use_domain(made)
        try:
            for name in ("profiles", "policies"):  # loaded once per worker: not a turn's cost
                await made.data(name)
            for kind in ("echo", "null", "ivr"):
                times: list[float] = []
                for _ in range(args.calls + 2):  # the first two calls warm up
                    times += await one_call(kind, lines, registry, engine)
                times = times[2 * len(lines):]
                result[f"{kind}_turns"] = len(times)
                result[f"{kind}_median_us"] = statistics.median(times)
                result[f"{kind}_p99_us"] = _percentile(times, 0.99)
        finally:
            domain.use_domain(previous)
    assert len(claims.records) == args.calls + 2, "every ivr demo call files its claim"
    result["claims_filed"] = len(claims.records)
    for kind in ("null", "ivr"):
        result[f"{kind}_added_median_us"] = result[f"{kind}_median_us"] - result["echo_median_us"]
    return result


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100, help="demo calls per brain")
    parser.add_argument("--json", type=Path, help="write the figures here")
    run_and_print(main, parser.parse_args())
    return 0


if __name__ == "__main__":
    sys.exit(cli())
