"""An agent's call actions on ACS calls: transfer and hang-up, after the bot's last words.

Unit tests drive :class:`CallActions` on the virtual clock; the end-to-end tests place a
phone call the ACS way (the local ACS, the real SDK) to a scenario whose agent transfers
the caller to a person, or says goodbye and hangs up, and check that ACS was asked only
once the bot's last words had played out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.bus import MessageType
from pipeline.clock import VirtualClock
from pipeline.context import CallContext
from pipeline.frames import BotStoppedSpeaking, CallAction, EventFrame
from pipeline.testing import until
from transports.acs.actions import CallActions
from transports.acs.control import CallControl, ControlError
from transports.acs.peer.caller import AcsCallerSettings, AcsMediaCaller
from transports.acs.peer.calls import CallState
from transports.acs.peer.connect import MediaConnect
from transports.acs.peer.media_hook import CallerHook
from transports.acs.sessions import CallSession, CallSessions
from transports.local.script import render_script
from voicegraph.acs_testbed import AcsTestbed

MS = 1_000_000
WAIT_S = 90.0


class Events:
    """Stands in for a graph: keeps the callback ``CallActions.watch`` registers."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[EventFrame], None]] = []

    def watch_events(self, callback: Callable[[EventFrame], None]) -> None:
        self.callbacks.append(callback)

    def emit(self, event: EventFrame) -> None:
        for callback in self.callbacks:
            callback(event)


class Recorder:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, str, str, int]] = []  # (call, action, reason, clock ns when asked)
        self.fail = fail
        self.clock: VirtualClock | None = None

    async def __call__(self, call_id: str, action: str, reason: str) -> None:
        assert self.clock is not None
        self.calls.append((call_id, action, reason, self.clock.now_ns()))
        if self.fail is not None:
            raise self.fail


def actions(act: Recorder, settle_ms: float = 10_000.0) -> tuple[CallActions, Events, VirtualClock, CallContext]:
    clock = VirtualClock()
    act.clock = clock
    ctx = CallContext("call-1", clock=clock)
    acts = CallActions("call-1", ctx, act, settle_ms=settle_ms)
    events = Events()
    acts.watch(events)  # type: ignore[arg-type]  # only watch_events is used
    return acts, events, clock, ctx


async def test_the_action_waits_for_the_bot_to_stop_speaking_its_turn() -> None:
    act = Recorder()
    acts, events, clock, _ = actions(act)
    events.emit(CallAction(action="transfer", reason="the caller asked for a person", agent="auth", turn=3))
    await until(lambda: clock.sleepers == 1)
    await clock.advance(2_000 * MS)
    events.emit(BotStoppedSpeaking(turn=2, played_ms=100.0, interrupted=False, heard_text="earlier"))
    await clock.advance(1_000 * MS)
    assert act.calls == []  # still saying the goodbye of turn 3
    events.emit(BotStoppedSpeaking(turn=3, played_ms=2_900.0, interrupted=False, heard_text="Please hold."))
    assert acts.done is not None
    assert await asyncio.wait_for(acts.done, 5) is True
    assert act.calls == [("call-1", "transfer", "the caller asked for a person", 3_000 * MS)]
    await acts.aclose()


async def test_an_action_with_nothing_said_is_carried_out_after_the_settle_time() -> None:
    act = Recorder()
    acts, events, clock, _ = actions(act, settle_ms=1_500)
    events.emit(CallAction(action="hangup", turn=1))
    await until(lambda: clock.sleepers == 1)  # waiting for the bot's words, at most 1.5 s
    await clock.advance(1_499 * MS)
    assert act.calls == []
    await clock.advance(1 * MS)
    assert acts.done is not None and await asyncio.wait_for(acts.done, 5) is True
    assert act.calls == [("call-1", "hangup", "", 1_500 * MS)]


async def test_only_the_first_action_is_carried_out() -> None:
    act = Recorder()
    acts, events, _, _ = actions(act)
    events.emit(CallAction(action="transfer", reason="asked for a person", turn=2))
    events.emit(CallAction(action="hangup", turn=2))  # would drop the caller on the way to a human
    events.emit(BotStoppedSpeaking(turn=2, played_ms=1.0, interrupted=True, heard_text=""))
    assert acts.done is not None and await asyncio.wait_for(acts.done, 5) is True
    assert [(c[1], c[2]) for c in act.calls] == [("transfer", "asked for a person")]


async def test_a_failed_action_is_an_error_on_the_bus_and_the_call_goes_on() -> None:
    act = Recorder(fail=ControlError(503, "no transfer target: set VOICEGRAPH_ACS_TRANSFER_TARGET"))
    acts, events, _, ctx = actions(act)
    events.emit(CallAction(action="transfer", agent="auth", turn=1))
    events.emit(BotStoppedSpeaking(turn=1, played_ms=1.0, interrupted=False, heard_text="hold"))
    assert acts.done is not None and await asyncio.wait_for(acts.done, 5) is False
    [error] = [m for m in ctx.bus.pending() if m.type is MessageType.ERROR]
    assert error.source == "acs_actions"
    assert error.text == ("call call-1: transfer asked by auth failed: no transfer target: set "
                          "VOICEGRAPH_ACS_TRANSFER_TARGET")


async def test_a_call_that_ends_first_cancels_the_wait() -> None:
    act = Recorder()
    acts, events, clock, _ = actions(act)
    events.emit(CallAction(action="hangup", turn=1))
    await until(lambda: clock.sleepers == 1)
    await acts.aclose()
    await clock.advance(20_000 * MS)
    assert act.calls == [] and acts.done is not None and not acts.done.done()


async def test_control_act_needs_a_transfer_target_and_a_known_action() -> None:
    control = CallControl(CallSessions(), public_url="https://bot.example")
    with pytest.raises(ControlError) as missing:
        await control.act("call-1", "transfer")
    assert missing.value.status == 503 and "VOICEGRAPH_ACS_TRANSFER_TARGET" in missing.value.message
    with pytest.raises(ControlError) as unknown:
        await control.act("call-1", "explode")
    assert unknown.value.status == 400 and "'explode'" in unknown.value.message
    with pytest.raises(ValueError, match="VOICEGRAPH_ACS_TRANSFER_TARGET: "):
        CallControl(CallSessions(), transfer_target="not a number")


# -- end to end: a scenario's agent acts on the ACS call ------------------------------------

SCENARIO = """\
name: front_desk
description: "The front desk (the custom agent template): opening hours, the desk, goodbye."
entry: custom_template
agents: [custom_template]
intents: {}
"""

PIPELINE = """\
name: acs
nodes:
  caller: {{use: acs_media, sample_rate: 16000}}
  vad: {{use: vad, aggressiveness: 2, start_ms: 200, stop_ms: 300, silence_ms: 600}}
  barge_in: {{use: barge_in, min_speech_ms: 200}}
  stt: {{use: stt, engine: whisper}}
  brain: {{use: orchestrator, scenario: "{scenario}", engine: ivr}}
  sentences: {{use: sentences}}
  tts: {{use: tts, engine: espeak}}
edges:
  - caller -> vad -> barge_in -> stt -> brain -> sentences -> tts -> caller
"""


class Desk:
    """The testbed on a front-desk scenario, one scripted caller per call."""

    def __init__(self, bed: AcsTestbed, hook: CallerHook, settings: list[AcsCallerSettings]) -> None:
        self.bed, self.hook, self.settings = bed, hook, settings
        self.stopped: list[tuple[int, BotStoppedSpeaking]] = []  # (peer's transfer/hangup count then, event)
        self.actions: list[CallAction] = []
        bed.sessions.watch(self._watch)

    def _watch(self, session: CallSession) -> None:
        assert session.graph is not None

        def on_event(event: EventFrame) -> None:
            if isinstance(event, BotStoppedSpeaking):
                self.stopped.append((self._acted(session.call_connection_id), event))
            elif isinstance(event, CallAction):
                self.actions.append(event)

        session.graph.watch_events(on_event)

    def _acted(self, call_id: str) -> int:
        call = self.bed.peer.switchboard.calls.get(call_id)
        return 0 if call is None else sum(s in (CallState.TRANSFERRING, CallState.DISCONNECTING) for s in call.states)


MEDIA_ONLY = """\
name: acs
nodes:
  caller: {use: acs_media, sample_rate: 16000}
  sink: {use: passthrough}
edges:
  - caller -> sink
"""


async def call_desk(tmp_path: Path, line: str, *, dial: bool = False) -> tuple[Desk, str]:
    """A call to the front desk: rung in (``acs.yaml`` is the desk), or dialled out asking for
    the ``front_desk`` pipeline (``acs.yaml`` then only takes the audio)."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "scenarios").mkdir()
    scenario = tmp_path / "scenarios" / "front_desk.yaml"
    scenario.write_text(SCENARIO)
    desk_pipeline = PIPELINE.format(scenario=scenario)
    (tmp_path / "pipelines" / "acs.yaml").write_text(MEDIA_ONLY if dial else desk_pipeline)
    (tmp_path / "pipelines" / "front_desk.yaml").write_text(desk_pipeline.replace("name: acs", "name: front_desk"))
    [utterance] = await asyncio.to_thread(render_script, [line], sample_rate=16000, voice="espeak")
    settings = [AcsCallerSettings(say=(utterance,), opening_ms=300, answer_timeout_s=60)]

    def make(connect: MediaConnect) -> AcsMediaCaller:
        return AcsMediaCaller(settings[0])

    hook = CallerHook(make)
    bed = AcsTestbed(tmp_path, hook, transfer_target="+15550123")
    await bed.__aenter__()
    desk = Desk(bed, hook, settings)
    try:
        if dial:
            session = await asyncio.wait_for(bed.control.dial("+15550100", "+15550199", pipeline="front_desk"), WAIT_S)
            call_id = session.call_connection_id
        else:
            call_id = await asyncio.wait_for(bed.ring(), WAIT_S)
        await asyncio.wait_for(bed.finished(call_id), WAIT_S)
    except BaseException:
        await bed.__aexit__(None, None, None)
        raise
    return desk, call_id


async def test_an_agent_transfers_the_caller_after_saying_so(tmp_path: Path) -> None:
    desk, call_id = await call_desk(tmp_path, "Front desk, please.")
    try:
        bed = desk.bed
        assert [(a.action, a.agent) for a in desk.actions] == [("transfer", "custom_template")]
        assert bed.peer.switchboard.calls[call_id].states[-4:] == [
            CallState.TRANSFERRING, CallState.TRANSFER_ACCEPTED, CallState.DISCONNECTING, CallState.DISCONNECTED]
        accepted = next(d for d in bed.deliveries(call_id) if d.type == "CallTransferAccepted")
        assert accepted.event["data"]["transferTarget"]["rawId"] == "4:+15550123"
        # The bot's words of the transfer's turn played out whole before ACS was asked to transfer.
        [(acted, said)] = [(n, e) for n, e in desk.stopped if e.turn == desk.actions[0].turn]
        assert acted == 0 and not said.interrupted and "colleague" in said.heard_text and said.played_ms > 1_000
        [session] = bed.started
        assert session.ended_reason in ("transferred to another participant", "media socket gone")
    finally:
        await desk.bed.__aexit__(None, None, None)


async def test_a_dialled_call_runs_its_pipeline_whose_agent_says_goodbye_then_hangs_up(tmp_path: Path) -> None:
    desk, call_id = await call_desk(tmp_path, "No, that's all. Goodbye.", dial=True)
    try:
        bed = desk.bed
        assert [a.action for a in desk.actions] == ["hangup"]
        assert bed.peer.switchboard.calls[call_id].states[-2:] == [CallState.DISCONNECTING, CallState.DISCONNECTED]
        [(acted, said)] = [(n, e) for n, e in desk.stopped if e.turn == desk.actions[0].turn]
        assert acted == 0 and not said.interrupted and said.heard_text.endswith("Goodbye.")
        [session] = bed.started
        assert session.pipeline == "front_desk" and session.graph is not None and session.graph.name == "front_desk"
        assert session.ended_reason == "hung up"
        assert desk.hook.callers[call_id].closed_by in ("acs", "server")  # the bot hung up, not the caller
    finally:
        await desk.bed.__aexit__(None, None, None)
