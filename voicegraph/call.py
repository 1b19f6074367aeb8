"""One call from the command line: build the pipeline, script the caller, run, report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pipeline.config import build_graph, load_pipeline
from pipeline.context import CallContext
from pipeline.errors import ConfigError
from pipeline.graph import Graph
from pipeline.runner import CallRunner

from .report import CallRecorder
from .runtime import run

__all__ = ["CallOptions", "ScriptableCaller", "find_caller", "run_call_report", "run_cli_call"]


@dataclass(frozen=True, kw_only=True)
class CallOptions:
    """What ``voicegraph call`` was asked to do."""

    pipeline: Path
    say: tuple[str, ...] = ()
    wav: Path | None = None
    interrupt_after_ms: float | None = None
    timeout_s: float = 120.0


@runtime_checkable
class ScriptableCaller(Protocol):
    """A caller transport the CLI can script (text lines now; speech and WAV later)."""

    def set_script(self, lines: Sequence[str]) -> None: ...


def find_caller(graph: Graph) -> ScriptableCaller:
    """The pipeline's scriptable caller: a duplex node with ``set_script``."""
    for node in graph.nodes.values():
        if node.duplex and isinstance(node, ScriptableCaller):
            return node
    raise ConfigError("the pipeline has no scriptable caller node (a duplex transport with set_script)",
                      file=graph.file)


async def run_call_report(graph: Graph, options: CallOptions) -> dict[str, Any]:
    """Run one call on ``graph`` and return the report as JSON-ready data."""
    caller = find_caller(graph)
    if options.say:
        caller.set_script(options.say)
    configure = getattr(caller, "configure_call", None)
    if configure is not None:
        configure(wav=options.wav, interrupt_after_ms=options.interrupt_after_ms)
    recorder = CallRecorder(graph)
    ctx = CallContext()
    recorder.call_id = ctx.call_id
    runner = CallRunner(graph, ctx)
    result = await runner.run(timeout=options.timeout_s)
    notes = getattr(caller, "report_notes", None)
    for turn, fields in (notes() if notes is not None else {}).items():
        record = recorder.turn(turn)
        record.caller_text = str(fields.get("caller_text", record.caller_text))
        if "barge_in_ms" in fields:
            record.barge_in_ms = float(str(fields["barge_in_ms"]))
    report = recorder.to_json()
    report["pipeline"] = graph.name
    report["ended"] = result.reason
    report["errors"] = [f"{e.node}: {e.message}" for e in result.errors]
    return report


def run_cli_call(options: CallOptions) -> dict[str, Any]:
    """Load the pipeline, run the call on the event loop, return the report."""
    graph = build_graph(load_pipeline(options.pipeline))
    return run(run_call_report(graph, options))
