"""``voicegraph call --via acs``: one call through the real server, the way ACS places it.

The call's pipeline runs in the ASGI app (:func:`voicegraph.app.create_app`) served by
uvicorn on 127.0.0.1, a free port, in this process; the caller is the local ACS peer's
media caller (:class:`~transports.acs.peer.caller.AcsMediaCaller`), which connects to
``/acs/media`` with a media token the app's :class:`~transports.acs.sessions.CallSessions`
issued, and speaks, listens and talks over the bot over the WebSocket, as ACS would
stream a phone caller.

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
``StopAudio`` for the turn it stopped: a failure if any).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import build_graph, load_pipeline
from pipeline.graph import Graph
from pipeline.runner import CallResult
from transports.acs.auth import NoAuth
from transports.acs.media import AcsMediaTransport
from transports.acs.messages import SUPPORTED_RATES
from transports.acs.peer.caller import AcsCallerSettings, AcsMediaCaller, CallerError
from transports.acs.route import MEDIA_PATH
from transports.acs.sessions import CallSession
from transports.local.speech import OPENING_MS, SpeechCaller

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
    graph = build_graph(load_pipeline(options.pipeline))
    greeting = any(getattr(node.settings, "greeting", "") for node in graph.nodes.values())
    lines = tuple(options.say)
    line = next((n for n in graph.nodes.values() if isinstance(n, AcsMediaTransport)), None)
    raw = yaml.safe_load(Path(options.pipeline).read_text(encoding="utf-8"))
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


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1, a free port, in this event loop; yields
    the base URL (``http://127.0.0.1:PORT``). The socket listens before the server starts,
    so connections made at once wait in its backlog instead of being refused."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="acs-call:server")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def run_acs_call_report(plan: AcsCallPlan, options: CallOptions) -> dict[str, Any]:
    """Run one call through the server over the ACS media WebSocket; return the report.

    ``errors`` are those of a local call (:func:`~voicegraph.call.call_errors`), plus the
    caller's: the socket refused, bot audio after ``StopAudio``, the call not over in time.
    """
    from .app import create_app

    caller = AcsMediaCaller(plan.caller)
    await caller.prepare()  # the voice loads and speaks off the loop, before the line opens
    with tempfile.TemporaryDirectory(prefix="voicegraph-acs-") as tmp:
        folder = Path(tmp) / "pipelines"
        await asyncio.to_thread(_write, folder / "acs.yaml", plan.pipeline_yaml)
        app = create_app(Path(tmp), poll_s=3600.0, verifier=NoAuth())
        sessions = app.state.acs_sessions
        started: list[tuple[CallSession, CallRecorder]] = []
        sessions.watch(lambda session: started.append((session, CallRecorder(session.graph))))
        call_id = f"acs-call-{uuid.uuid4().hex[:12]}"
        token = sessions.expect(call_id)
        headers = {"x-ms-call-connection-id": call_id, "x-ms-call-correlation-id": str(uuid.uuid4())}
        errors: list[str] = []
        async with serving(app) as base:
            url = base.replace("http://", "ws://") + f"{MEDIA_PATH}?token={token}"
            try:
                async with asyncio.timeout(options.timeout_s):
                    await caller.run(url, headers=headers)
                    if started and started[0][0].task is not None:
                        await asyncio.wait({started[0][0].task})  # the server's side of the call ends too
            except TimeoutError:
                errors.append(f"call: it did not end within the --timeout of {options.timeout_s:g} s")
            except CallerError as exc:
                errors.append(f"caller: {exc}")
    if not started:
        return {"call_id": call_id, "turns": [], "pipeline": "", "ended": "never connected",
                "errors": errors or ["call: the server never started the call"], "via": "acs",
                "wire": caller.report()}
    session, recorder = started[0]
    recorder.call_id = call_id
    _add_caller_side(recorder, caller)
    report = recorder.to_json()
    _add_voice_to_voice(report, recorder, caller)
    result = session.result or CallResult(call_id=call_id, reason="cancelled", duration_s=0.0)
    report["pipeline"] = session.graph.name if session.graph is not None else ""
    report["ended"] = result.reason
    report["via"] = "acs"
    report["wire"] = caller.report()
    if caller.ear.late_frames:
        errors.append(f"wire: {caller.ear.late_frames} bot frames arrived after StopAudio for the turn it stopped")
    if caller.messages_refused:
        errors.append(f"wire: the caller could not read {caller.messages_refused} messages from the server")
    report["errors"] = call_errors(report, result, options) + errors
    return report


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
    return "\n".join(lines) + "\n"
