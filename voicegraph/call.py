"""One call from the command line: build the pipeline, script the caller, run, report.

What makes a call fail (the report's ``errors``, and a non-zero exit of ``voicegraph call``):
a node error during the call, an end other than ``eos`` (timeout, fatal error, cancel),
and an ``--interrupt-after`` that never interrupted anything.

``--interrupt-after MS``: the caller talks over the bot's answer to its line N with its
line N+1, MS milliseconds after the bot started speaking. So it needs at least two lines
(``--say`` twice, or a script of two in the pipeline), or one line and a brain that speaks
a greeting first (any node whose settings have a non-empty ``greeting``): the line then
interrupts the greeting. ``check_call`` refuses other cases before the call starts.

Scenarios (``--scenario NAME``): the pipeline's orchestrator brain (``use: orchestrator``)
is given that scenario in place of its ``scenario`` setting (:func:`with_scenario`), and
the caller says the scenario's ``demo`` lines unless ``--say`` or ``--text`` gives others.
The CLI picks the pipeline: ``config/pipelines/scenario.yaml`` (spoken, on the local speech
stack; ``make demo`` is ``voicegraph call --scenario insurance``) by default, and
``scenario_text.yaml`` with ``--pipeline text`` or ``--text`` lines; any other pipeline
with an orchestrator brain may be named. An unknown scenario, or a pipeline without an
orchestrator, is refused before the call (exit 2). ``--text`` lines are typed: a pipeline
whose caller speaks is refused for them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from pipeline.config import PipelineSpec, build_graph, load_pipeline
from pipeline.context import CallContext
from pipeline.errors import ConfigError
from pipeline.graph import Graph
from pipeline.runner import CallResult, CallRunner
from processors.sidecars.services import DataTier, attach_call, data_tier_from_env, install
from processors.sidecars.tap import CallMeta
from transports.local.script import parse_line

from .report import CallRecorder
from .runtime import run

__all__ = [
    "CallOptionError",
    "CallOptions",
    "ScriptableCaller",
    "call_errors",
    "check_call",
    "check_interrupt",
    "find_caller",
    "run_call_report",
    "run_cli_call",
    "scenario_lines",
    "with_data_tier",
    "with_scenario",
]


T = TypeVar("T")


class CallOptionError(ConfigError):
    """A ``voicegraph call`` option that cannot work with the chosen pipeline (exit code 2)."""


@dataclass(frozen=True, kw_only=True)
class CallOptions:
    """What ``voicegraph call`` was asked to do."""

    pipeline: Path
    say: tuple[str, ...] = ()
    wav: Path | None = None
    interrupt_after_ms: float | None = None
    timeout_s: float = 120.0
    #: ``local``: the pipeline's own caller node; ``acs``: through the server over the ACS
    #: media WebSocket (:mod:`voicegraph.acs_call`).
    via: Literal["local", "acs"] = "local"
    #: the scenario the orchestrator brain runs (``--scenario``); None: the pipeline's own.
    scenario: str | None = None
    #: the lines are typed (``--text``): a pipeline whose caller speaks is refused.
    typed: bool = False
    #: who calls (``--caller``: a phone number, a name): the caller's id in the data tier.
    caller: str = ""


@runtime_checkable
class ScriptableCaller(Protocol):
    """A caller transport the CLI can script (text lines now; speech and WAV later)."""

    def set_script(self, lines: Sequence[str]) -> None: ...


def find_caller(graph: Graph) -> ScriptableCaller:
    """The pipeline's scriptable caller: a duplex node with ``set_script``."""
    for node in graph.nodes.values():
        if node.duplex and isinstance(node, ScriptableCaller):
            return node
    raise CallOptionError("the pipeline has no scriptable caller node (a duplex transport with set_script)",
                          file=graph.file)


def check_call(graph: Graph, options: CallOptions) -> None:
    """Refuse options that cannot work with ``graph`` before the call starts (``CallOptionError``)."""
    caller = find_caller(graph)
    if options.typed and getattr(caller, "configure_call", None) is not None:
        raise CallOptionError(f"--text lines are typed, but the caller of '{graph.name}' ({type(caller).__name__}) "
                              "speaks: use --say on a speech pipeline, or a text pipeline")
    speech_only = [flag for flag, given in (("--wav", options.wav is not None),
                                            ("--interrupt-after", options.interrupt_after_ms is not None)) if given]
    if speech_only and getattr(caller, "configure_call", None) is None:
        verb = "needs" if len(speech_only) == 1 else "need"
        raise CallOptionError(f"{' and '.join(speech_only)} {verb} a speech pipeline: the caller of '{graph.name}' "
                              f"({type(caller).__name__}) cannot play audio or talk over the bot")
    script = options.say or tuple(getattr(caller, "script", ()))
    if not options.typed:
        for line in script:
            if isinstance(line, str) and line.strip():
                try:
                    parse_line(line)
                except ValueError as exc:
                    raise CallOptionError(str(exc)) from None
    greeting = any(getattr(node.settings, "greeting", "") for node in graph.nodes.values())
    check_interrupt(options, script=script, greeting=greeting)


def check_interrupt(options: CallOptions, *, script: Sequence[str], greeting: bool) -> None:
    """Refuse an ``--interrupt-after`` that cannot interrupt anything: the caller needs a
    second line to talk over an answer with, or one line and a greeting (``CallOptionError``)."""
    if options.interrupt_after_ms is None:
        return
    if options.wav is not None:
        lines, what = 1, "a --wav file is a single line"
    else:
        lines = sum(1 for line in script if line.strip())
        what = "it has no line to say" if not lines else "it has only one line to say"
    if lines >= 2 or (lines == 1 and greeting):
        return
    raise CallOptionError(
        f"--interrupt-after {options.interrupt_after_ms:g}: the caller interrupts the bot's answer to one line "
        f"with its next line, but {what}; give two or more --say lines"
        + ("" if greeting else " (or use a pipeline whose brain speaks a greeting first)"))


async def run_call_report(graph: Graph, options: CallOptions, *, ctx: CallContext | None = None,
                          transport: str = "local") -> dict[str, Any]:
    """Run one call on ``graph`` and return the report as JSON-ready data.

    ``ctx`` gives the call its context (a ``VirtualClock`` in tests); a new one by default.
    ``transport`` is what the call's facts say it came through (``replay`` for a replay).

    ``errors`` lists the node errors, then what else made the call fail: an end other
    than ``eos``, or an ``--interrupt-after`` under which no turn was interrupted.
    """
    caller = find_caller(graph)
    if options.say:
        caller.set_script(options.say)
    configure = getattr(caller, "configure_call", None)
    if configure is not None:
        configure(wav=options.wav, interrupt_after_ms=options.interrupt_after_ms)
    recorder = CallRecorder(graph)
    ctx = ctx or CallContext()
    recorder.call_id = ctx.call_id
    attached = attach_call(graph, ctx, CallMeta(caller=options.caller, pipeline=graph.name,
                                                scenario=options.scenario or "", transport=transport))
    runner = CallRunner(graph, ctx)
    try:
        result = await runner.run(timeout=options.timeout_s)
    except BaseException:
        await attached.end("error")
        raise
    notes = getattr(caller, "report_notes", None)
    for turn, fields in (notes() if notes is not None else {}).items():
        record = recorder.turn(turn)
        record.caller_text = str(fields.get("caller_text", record.caller_text))
        if "barge_in_ms" in fields:
            record.barge_in_ms = float(str(fields["barge_in_ms"]))
    report = recorder.to_json()
    report["pipeline"] = graph.name
    report["ended"] = result.reason
    report["errors"] = call_errors(report, result, options)
    await attached.end(result.reason, report)
    return report


def call_errors(report: dict[str, Any], result: CallResult, options: CallOptions) -> list[str]:
    """What made a call fail: its node errors, an end other than ``eos``, and an
    ``--interrupt-after`` under which no turn of ``report`` was interrupted."""
    errors = [f"{e.node}: {e.message}" for e in result.errors]
    if result.reason == "timeout":
        errors.append(f"call: it did not end within the --timeout of {options.timeout_s:g} s")
    elif result.reason != "eos":
        errors.append(f"call: it ended by '{result.reason}', not at the end of the caller's script")
    if options.interrupt_after_ms is not None and not any(t["interrupted"] for t in report["turns"]):
        errors.append(f"--interrupt-after {options.interrupt_after_ms:g}: the caller never talked over the bot "
                      "(no answer lasted that long while the caller had a line left to say)")
    return errors


def run_cli_call(options: CallOptions) -> dict[str, Any]:
    """Load the pipeline, check the options, run the call on the event loop, return the report."""
    if options.via == "acs":
        from .acs_call import plan_acs_call, run_acs_call_report

        plan = plan_acs_call(options)
        return run(run_acs_call_report(plan, options))
    spec = load_pipeline(options.pipeline)
    if options.scenario is not None:
        spec = with_scenario(spec, options.scenario)
        if not options.say:
            options = replace(options, say=scenario_lines(spec))
    graph = build_graph(spec)
    check_call(graph, options)
    return run(with_data_tier(data_tier_from_env(), run_call_report(graph, options)))


async def with_data_tier(tier: DataTier, call: Awaitable[T]) -> T:
    """Await ``call`` with ``tier`` installed and started (events, recordings of the environment)."""
    previous = install(tier)
    await tier.start()
    try:
        return await call
    finally:
        await tier.aclose()
        install(previous)


def with_scenario(spec: PipelineSpec, scenario: str) -> PipelineSpec:
    """``spec`` with its orchestrator brains set to run ``scenario`` (a name, or a scenario file).

    ``CallOptionError`` when the pipeline has no orchestrator, or the scenario does not
    exist (the message lists the scenarios there are). Blocking (it looks for the file).
    """
    from agents.orchestrator import OrchestratorSettings, scenario_file

    brains = [node.name for node in spec.nodes if isinstance(node.settings, OrchestratorSettings)]
    if not brains:
        raise CallOptionError(f"--scenario {scenario}: pipeline '{spec.name}' has no orchestrator brain "
                              "(a node with 'use: orchestrator'); the scenario pipelines are 'scenario' (spoken) "
                              "and 'scenario_text'", file=spec.file)
    nodes = tuple(replace(node, settings=replace(node.settings, scenario=scenario)) if node.name in brains else node
                  for node in spec.nodes)
    out = replace(spec, nodes=nodes)
    settings = next(node.settings for node in nodes if node.name in brains)
    path = scenario_file(settings)
    if not path.is_file():
        folder = path.parent
        known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        raise CallOptionError(f"--scenario {scenario}: no scenario {path.stem!r} in {folder} "
                              f"(scenarios: {', '.join(known) or 'none'})")
    return out


def scenario_lines(spec: PipelineSpec) -> tuple[str, ...]:
    """The demo caller's lines of the scenario the pipeline's orchestrator runs (blocking).

    A scenario file that does not parse raises its ``AgentFileError`` (file:line).
    """
    from agents.orchestrator import OrchestratorSettings, scenario_file
    from agents.scenarios import load_scenario

    settings = next(node.settings for node in spec.nodes if isinstance(node.settings, OrchestratorSettings))
    scenario = load_scenario(scenario_file(settings))
    if not scenario.demo:
        raise CallOptionError(f"scenario {scenario.name} has no demo lines: give the caller's lines with --say "
                              "or --text", file=scenario.file)
    return scenario.demo
