"""``voicegraph call --via acs``: one call through the real server, placed the way ACS places it.

The call runs on an :class:`~voicegraph.acs_testbed.AcsTestbed`: our app
(:func:`voicegraph.app.create_app`) and the local ACS peer, each served by uvicorn on
127.0.0.1, a free port, in this process. The peer rings the server through Event Grid
(``IncomingCall`` to ``/acs/events``); the server answers through the Call Automation SDK
(its requests HMAC-signed, checked by the peer); the peer posts ``CallConnected`` (a signed
JWT) to ``/acs/callbacks`` and its media hook runs the media caller
(:class:`~transports.acs.peer.caller.AcsMediaCaller`) on ``/acs/media`` with the headers ACS
sends; the caller speaks, listens and talks over the bot as a phone caller would, then
hangs up; the peer posts ``CallDisconnected``, and the call is over on both sides.

The pipeline. ``--pipeline`` names the pipeline as for a local call. A pipeline whose
caller is a local speech caller (``local``, the default) is served with that node swapped
for an ``acs_media`` line at its rate (16 or 24 kHz, what ACS streams), and the media
caller says its script, in its voice, with its pause and answer timeout: the same call,
over the wire. A pipeline that already has an ``acs_media`` node (``acs``) is served as
it is; the caller's lines then come from ``--say`` or ``--wav``.

The report has the shape of ``voicegraph call``'s (:mod:`voicegraph.report`): the
server's side comes from a :class:`~voicegraph.report.CallRecorder` attached to the
call's graph as it is built (:meth:`CallSessions.watch`), and the caller's side is added:
each turn's ``caller_text``, ``barge_in_ms`` measured over the wire (the caller's voice
onset -> ``StopAudio`` received) and ``voice_to_voice_ms`` (the end of the caller's line
-> the first bot frame received), and a ``wire`` section with what the caller measured
(the spacing of the bot's frames, ``StopAudio`` count, bot frames that came after a
``StopAudio`` for the turn it stopped: a failure if any), and the callbacks the peer posted
about the call with the status of each attempt (``callbacks``: one not accepted is a
failure).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import build_graph, load_pipeline
from pipeline.graph import Graph
from pipeline.runner import CallResult
from transports.acs.media import AcsMediaTransport
from transports.acs.messages import SUPPORTED_RATES
from transports.acs.peer.caller import AcsCallerSettings, AcsMediaCaller
from transports.acs.peer.media_hook import CallerHook
from transports.acs.sessions import CallSession
from transports.local.speech import OPENING_MS, SpeechCaller

from .acs_testbed import AcsTestbed, RingRefused, serving
from .call import CallOptionError, CallOptions, call_errors, check_interrupt, find_caller
from .report import CallRecorder

__all__ = ["AcsCallPlan", "format_wire", "plan_acs_call", "run_acs_call_report", "serving"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AcsCallPlan:
    """What an ACS call will run: the server's pipeline file (an ``acs_media`` line) and the caller."""

    pipeline_yaml: str
    caller: AcsCallerSettings


def plan_acs_call(options: CallOptions) -> AcsCallPlan:
    """Check ``options`` for a call over ACS and derive the server's pipeline and the
    caller's settings (blocking: it loads the pipeline). ``CallOptionError`` if the
    pipeline cannot be called over ACS."""
    from agents.orchestrator import Orchestrator

    from .call import scenario_lines, with_scenario

    spec = load_pipeline(options.pipeline)
    raw = yaml.safe_load(Path(options.pipeline).read_text(encoding="utf-8"))
    lines = tuple(options.say)
    if options.scenario is not None:  # the server's orchestrators run the scenario; its demo caller speaks
        spec = with_scenario(spec, options.scenario)
        for node in spec.nodes:
            if node.name in raw["nodes"] and getattr(node.settings, "scenario", None) == options.scenario:
                raw["nodes"][node.name]["scenario"] = options.scenario
        lines = lines or scenario_lines(spec)
    graph = build_graph(spec)
    # The bot speaks first with a greeting, or an orchestrator (its entry agent introduces itself).
    greeting = any(getattr(node.settings, "greeting", "") or isinstance(node, Orchestrator)
                   for node in graph.nodes.values())
    line = next((n for n in graph.nodes.values() if isinstance(n, AcsMediaTransport)), None)
    if line is not None:
        caller = AcsCallerSettings(sample_rate=line.sample_rate)
    else:
        local = _speech_caller(graph)
        s = local.settings
        if s.sample_rate not in SUPPORTED_RATES:
            raise CallOptionError(f"--via acs: the caller of '{graph.name}' is on a {s.sample_rate} Hz line; ACS "
                                  f"streams {' or '.join(map(str, SUPPORTED_RATES))} Hz", file=graph.file)
        lines = lines or tuple(str(x) for x in s.say)
        caller = AcsCallerSettings(voice=s.voice, sample_rate=s.sample_rate, pause_ms=s.pause_ms,
                                   answer_timeout_s=s.answer_timeout_s, interrupt_after_ms=s.interrupt_after_ms,
                                   record=s.record)
        raw["nodes"][local.name] = {"use": "acs_media", "sample_rate": s.sample_rate, "lead_ms": s.lead_ms}
    if not lines and options.wav is None:
        raise CallOptionError(f"--via acs: the pipeline '{graph.name}' has no caller script; give --say lines "
                              "or a --wav file", file=graph.file)
    check_interrupt(options, script=lines, greeting=greeting)
    after = options.interrupt_after_ms if options.interrupt_after_ms is not None else caller.interrupt_after_ms
    # With a greeting, the caller waits for it as long as for any answer (the server's
    # voice may still be loading); without, it speaks when the line has been open a moment.
    opening = caller.answer_timeout_s * 1000 if greeting else OPENING_MS
    caller = replace(caller, say=lines, wav=options.wav, interrupt_after_ms=after, opening_ms=opening)
    return AcsCallPlan(pipeline_yaml=yaml.safe_dump(raw, sort_keys=False), caller=caller)


def _speech_caller(graph: Graph) -> SpeechCaller:
    try:
        caller = find_caller(graph)
    except CallOptionError:
        caller = None
    if not isinstance(caller, SpeechCaller):
        raise CallOptionError(f"--via acs needs a speech pipeline (a speech_caller or an acs_media line); "
                              f"'{graph.name}' has neither", file=graph.file)
    return caller


async def run_acs_call_report(plan: AcsCallPlan, options: CallOptions) -> dict[str, Any]:
    """Place one call through the server the way ACS does, and return the report.

    The testbed (:class:`~voicegraph.acs_testbed.AcsTestbed`) rings the server through
    the peer's Event Grid; the server answers through the SDK; the peer connects the call
    and its media hook runs the caller on the media socket; the caller hangs up; the peer
    posts ``CallDisconnected``. ``errors`` are those of a local call
    (:func:`~voicegraph.call.call_errors`), plus the wire's: the call not answered, the
    socket refused, a callback the server did not accept, bot audio after ``StopAudio``,
    the call not over in time.
    """
    caller = AcsMediaCaller(plan.caller)
    await caller.prepare()  # the voice loads and speaks off the loop, before the line rings
    hook = CallerHook(lambda connect: caller)
    call_id = ""
    errors: list[str] = []
    recorders: dict[int, CallRecorder] = {}
    with tempfile.TemporaryDirectory(prefix="voicegraph-acs-") as tmp:
        await asyncio.to_thread(_write, Path(tmp) / "pipelines" / "acs.yaml", plan.pipeline_yaml)
        async with AcsTestbed(Path(tmp), hook, sample_rate=plan.caller.sample_rate) as bed:
            bed.sessions.watch(lambda session: _record(recorders, session))
            try:
                async with asyncio.timeout(options.timeout_s):
                    call_id = await bed.ring()
                    await bed.finished(call_id)
            except TimeoutError:
                errors.append(f"call: it did not end within the --timeout of {options.timeout_s:g} s")
            except RingRefused as exc:
                errors.append(f"call: {exc}")
            errors += [f"caller: {why}" for why in hook.failures.values()]
            callbacks = [{"type": d.type, "statuses": list(d.attempts)} for d in bed.deliveries(call_id)]
            started = [s for s in bed.started if s.call_connection_id == call_id]
    errors += [f"wire: the {c['type']} callback was not accepted (attempts: {c['statuses']})"
               for c in callbacks if not c["statuses"] or not _accepted(c["statuses"][-1])]
    wire = {**caller.report(), "callbacks": callbacks}
    if not started:
        return {"call_id": call_id, "turns": [], "pipeline": "", "ended": "never connected",
                "errors": errors or ["call: the server never started the call"], "via": "acs", "wire": wire}
    session = started[0]
    recorder = recorders[id(session)]
    recorder.call_id = call_id
    _add_caller_side(recorder, caller)
    report = recorder.to_json()
    _add_voice_to_voice(report, recorder, caller)
    result = session.result or CallResult(call_id=call_id, reason="cancelled", duration_s=0.0)
    report["pipeline"] = session.graph.name if session.graph is not None else ""
    report["ended"] = result.reason
    acted = next((t["action"]["action"] for t in report["turns"] if t.get("action")), None)
    if (acted is not None and result.reason == "cancelled" and session.ended_reason in _AGENT_ENDINGS
            and all(line.ended_ns for line in caller.lines)):
        # The agent ended the call (a goodbye and a hang-up, or a transfer) once the caller had
        # said everything: the call's normal end, not a failure.
        report["ended"] = acted
        result = replace(result, reason="eos")
    report["via"] = "acs"
    report["wire"] = wire
    if caller.ear.late_frames:
        errors.append(f"wire: {caller.ear.late_frames} bot frames arrived after StopAudio for the turn it stopped")
    if caller.messages_refused:
        errors.append(f"wire: the caller could not read {caller.messages_refused} messages from the server")
    report["errors"] = call_errors(report, result, options) + errors
    return report


#: How a session ends when an agent's call action ended it (transports.acs.control / callbacks).
_AGENT_ENDINGS = frozenset({"hung up", "transferred to another participant"})


def _record(recorders: dict[int, CallRecorder], session: CallSession) -> None:
    assert session.graph is not None  # watchers are told once the graph is built
    recorders[id(session)] = CallRecorder(session.graph)


def _accepted(status: int | str) -> bool:
    return isinstance(status, int) and 200 <= status < 300


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _user_turns(recorder: CallRecorder, caller: AcsMediaCaller) -> dict[int, int]:
    """Caller line index -> the server's user turn it opened: the first turn not yet taken
    whose speech ended (the VAD's stop) after the line's voice began, before the next line's."""
    ends = sorted((rec.speech_end_ns, t) for t, rec in recorder.turns.items() if rec.speech_end_ns is not None)
    out: dict[int, int] = {}
    for i, line in enumerate(caller.lines):
        if not line.onset_ns:
            continue
        upto = caller.lines[i + 1].onset_ns if i + 1 < len(caller.lines) and caller.lines[i + 1].onset_ns else None
        for end_ns, turn in ends:
            if end_ns >= line.onset_ns and (upto is None or end_ns < upto) and turn not in out.values():
                out[i] = turn
                break
    return out


def _bot_turn(recorder: CallRecorder, first_ns: int) -> int | None:
    """The server turn whose audio started last before ``first_ns`` (a frame received then)."""
    started = [(rec.audio_out_ns, t) for t, rec in recorder.turns.items()
               if rec.audio_out_ns is not None and rec.audio_out_ns <= first_ns]
    return max(started)[1] if started else None


def _add_caller_side(recorder: CallRecorder, caller: AcsMediaCaller) -> None:
    for i, turn in _user_turns(recorder, caller).items():
        recorder.turn(turn).caller_text = caller.lines[i].utterance.text
    for line in caller.lines:
        if line.talked_over is not None and line.barge_in_ms is not None:
            cut = _bot_turn(recorder, line.talked_over.first_ns)
            if cut is not None:
                recorder.turn(cut).barge_in_ms = line.barge_in_ms


def _add_voice_to_voice(report: dict[str, Any], recorder: CallRecorder, caller: AcsMediaCaller) -> None:
    by_turn = {turn: caller.lines[i].voice_to_voice_ms for i, turn in _user_turns(recorder, caller).items()}
    for t in report["turns"]:
        t["voice_to_voice_ms"] = by_turn.get(t["turn"])


def format_wire(report: dict[str, Any]) -> str:
    """The caller's side of an ACS call, for people (after ``format_report``)."""
    wire = report["wire"]
    lines = ["", "over the ACS media WebSocket (as the caller heard it)",
             "turn  voice_to_voice_ms (end of caller line -> first bot frame received)"]
    for t in report["turns"]:
        v = t.get("voice_to_voice_ms")
        if v is not None:
            lines.append(f"{t['turn']:>4}  {v:.1f}")
    gaps = wire["bot_frame_spacing"]
    if gaps.get("gaps"):
        lines.append(f"bot frames: {gaps['gaps'] + len(wire['responses'])} received, spacing median "
                     f"{gaps['median_ms']} ms (p10 {gaps['p10_ms']}, p90 {gaps['p90_ms']}), "
                     f"{gaps['within_5ms_of_20'] * 100:.0f} % within 20 +- 5 ms")
    lines.append(f"StopAudio received: {wire['stop_audio']}; bot frames after a StopAudio: {wire['late_frames']}")
    lines.append("callbacks: " + ", ".join(f"{c['type']} {'/'.join(map(str, c['statuses']))}"
                                           for c in wire["callbacks"]))
    return "\n".join(lines) + "\n"
