"""The LLM brain through the model router and the real ``openai`` SDK, against the local peer.

Times are on virtual clocks (first-token timeouts, breakers, retry-after, tool fillers);
nothing here reads the wall clock.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.clock import VirtualClock
from pipeline.context import CallContext
from pipeline.frames import (
    BotStoppedSpeaking,
    ErrorEvent,
    FinalTranscript,
    FlushStart,
    MetricsEvent,
    ModelTurn,
    ResponseEnd,
    ResponseStart,
    ToolCall,
)
from pipeline.testing import run_processor
from processors.llm.peer import Fault, PeerScript, Reply, ToolCallReply
from processors.llm.tools import FunctionTool
from tests.processors.llm.conftest import PeerFactory
from tests.processors.llm.helpers import brain_on, models_file, next_call, spoken, start_call, wait_until

APOLOGY = "Sorry, please say that again."


def model_turns(out: Any, turn: int) -> list[ModelTurn]:
    return [e for e in out.events if isinstance(e, ModelTurn) and e.turn == turn]


async def test_a_streamed_answer_is_spoken_token_by_token_with_usage_and_ttft(make_peer: PeerFactory,
                                                                              tmp_path: Path) -> None:
    script = PeerScript()
    script.add_rule(r"\bhours\b", "We are open from eight to eight, Monday to Saturday.")
    peer, url = await make_peer(script)
    brain = brain_on(models_file(tmp_path, url, ["gpt-fast"]), system_prompt="You are Contoso's assistant.")
    out, result = await run_processor(brain, [FinalTranscript("What are your opening hours?", turn=1)])
    assert result.reason == "eos" and not result.errors
    tokens = [f.text for f in out.frames]
    assert tokens == ["We", " are", " open", " from", " eight", " to", " eight,", " Monday", " to", " Saturday."]
    assert [type(c) for c in out.controls if isinstance(c, (ResponseStart, ResponseEnd))] == [ResponseStart,
                                                                                               ResponseEnd]
    assert peer.requests[0].messages == [{"role": "system", "content": "You are Contoso's assistant."},
                                         {"role": "user", "content": "What are your opening hours?"}]
    assert peer.outcomes() == ["completed"]
    (mt,) = model_turns(out, 1)
    assert (mt.route, mt.deployment, mt.model, mt.failovers) == ("main", "gpt-fast", "gpt-fast", ())
    assert mt.why == "default route"
    assert mt.completion_tokens == 10 and mt.prompt_tokens > 0
    metrics = {e.name: e.value for e in out.events if isinstance(e, MetricsEvent)}
    assert metrics["llm_completion_tokens"] == 10 and metrics["llm_ttft"] >= 0
    brain.on_event(BotStoppedSpeaking(turn=1))
    assert brain.conversation.messages()[-1] == {"role": "assistant", "content": spoken(out, 1)}


async def test_a_tool_call_is_assembled_from_deltas_run_and_its_result_fed_back(make_peer: PeerFactory,
                                                                                tmp_path: Path) -> None:
    script = PeerScript()
    script.add_rule(r"policy (?P<id>[A-Z]{2}-\d+)", tool="lookup_policy", arguments={"policy_id": "{id}",
                                                                                      "fields": ["status", "holder"]})
    script.add_rule(r'"status": "(?P<s>\w+)", "holder": "(?P<h>[\w ]+)"', "Policy of {h}: it is {s}.", on="tool")
    peer, url = await make_peer(script)
    seen: list[Mapping[str, Any]] = []

    async def lookup(arguments: Mapping[str, Any]) -> dict[str, str]:
        seen.append(arguments)
        return {"status": "active", "holder": "Jane Doe"}

    tool = FunctionTool(name="lookup_policy", description="Look a policy up by id.", fn=lookup,
                        parameters={"type": "object", "properties": {"policy_id": {"type": "string"}},
                                    "required": ["policy_id"]})
    brain = brain_on(models_file(tmp_path, url, ["gpt-fast"]))
    brain.tools[tool.name] = tool
    out, result = await run_processor(brain, [FinalTranscript("Check policy AB-12345 please", turn=1)])
    assert not result.errors
    assert seen == [{"policy_id": "AB-12345", "fields": ["status", "holder"]}]  # > 8 chars: many fragments
    assert spoken(out, 1) == "Policy of Jane Doe: it is active."
    first, second = peer.requests
    assert first.tools == ["lookup_policy"] and second.tools == ["lookup_policy"]
    call = second.messages[-2]["tool_calls"][0]
    assert second.messages[-2]["role"] == "assistant" and call["function"]["name"] == "lookup_policy"
    assert json.loads(call["function"]["arguments"]) == {"policy_id": "AB-12345", "fields": ["status", "holder"]}
    assert second.messages[-1] == {"role": "tool", "tool_call_id": call["id"],
                                   "content": '{"status": "active", "holder": "Jane Doe"}'}
    (tc,) = [e for e in out.events if isinstance(e, ToolCall)]
    assert (tc.name, json.loads(tc.arguments)["policy_id"], tc.error) == ("lookup_policy", "AB-12345", "")
    assert json.loads(tc.result) == {"status": "active", "holder": "Jane Doe"}
    assert len(model_turns(out, 1)) == 2
    # The history keeps what the caller heard, not the tool exchange.
    brain.on_event(BotStoppedSpeaking(turn=1))
    assert [m["role"] for m in brain.conversation.messages()] == ["system", "user", "assistant"]


async def test_a_tool_that_times_out_gets_the_filler_then_the_models_recovery(make_peer: PeerFactory,
                                                                             tmp_path: Path) -> None:
    script = PeerScript()
    script.add_rule(r"\bclaim\b", tool="file_claim", arguments={"kind": "auto"})
    script.add_rule(r'"error": "timed out', "I could not reach the claims system, let me transfer you.", on="tool")
    peer, url = await make_peer(script)
    never, started = asyncio.Event(), asyncio.Event()

    async def file_claim(arguments: Mapping[str, Any]) -> str:
        started.set()
        await never.wait()
        return "unreachable"

    clock = VirtualClock()
    brain = brain_on(models_file(tmp_path, url, ["gpt-fast"]), filler="One moment please.", filler_after_ms=1500,
                     tool_timeout_ms=8000)
    brain.tools["file_claim"] = FunctionTool(name="file_claim", description="File a claim.", fn=file_claim)
    lines, out, call = start_call(brain, CallContext(clock=clock))
    await lines.send(FinalTranscript("I want to file a claim", turn=1))
    await wait_until(started.is_set)
    await wait_until(lambda: clock.sleepers == 2)  # the filler timer and the tool's timeout
    await clock.advance(1_499_000_000)
    assert spoken(out, 1) == ""
    await clock.advance(1_000_000)
    await wait_until(lambda: spoken(out, 1) == "One moment please. ")
    await clock.advance(6_500_000_000)  # 8 s after the call: the tool's time is up
    await peer.wait_for(lambda p: len(p.outcomes()) == 2 and p.outcomes()[-1] == "completed")
    lines.end()
    result = await call
    assert spoken(out, 1) == "One moment please. I could not reach the claims system, let me transfer you."
    assert json.loads(peer.requests[1].messages[-1]["content"]) == {"error": "timed out after 8 s"}
    (tc,) = [e for e in out.events if isinstance(e, ToolCall)]
    assert tc.error == "timed out after 8 s" and tc.result == ""
    assert not result.errors


async def test_a_429_on_the_first_deployment_falls_over_within_the_turn_and_is_skipped_until_retry_after(
        make_peer: PeerFactory, tmp_path: Path) -> None:
    script = PeerScript(fallback="Answer from the backup.")
    script.inject(Fault(kind="rate_limit", retry_after_s=20), model="primary")
    peer, url = await make_peer(script)
    router_clock = VirtualClock()
    brain = brain_on(models_file(tmp_path, url, ["primary", "backup"]), clock=router_clock)
    out, _ = await run_processor(brain, [FinalTranscript("hello", turn=1), FinalTranscript("again", turn=2)])
    assert spoken(out, 1) == spoken(out, 2) == "Answer from the backup."
    assert [(r.model, r.status) for r in peer.requests] == [("primary", 429), ("backup", 200), ("backup", 200)]
    (first,) = model_turns(out, 1)
    assert first.deployment == "backup" and first.failovers == ("primary: HTTP 429 (retry after 20 s)",)
    (second,) = model_turns(out, 2)
    assert second.failovers == ("primary: rate limited for 20.0 s more (retry-after)",)
    await router_clock.advance(20_000_000_000)
    out, _ = await run_processor(next_call(brain), [FinalTranscript("and now", turn=3)])
    assert peer.requests[-1].model == "primary" and model_turns(out, 3)[0].failovers == ()


async def test_a_deployment_failing_repeatedly_is_skipped_by_its_breaker_then_retried_after_the_cooldown(
        make_peer: PeerFactory, tmp_path: Path) -> None:
    script = PeerScript(fallback="ok")
    script.inject(Fault(kind="server_error"), model="primary", times=None)
    peer, url = await make_peer(script)
    clock = VirtualClock()
    path = models_file(tmp_path, url, ["primary", "backup"],
                       extra={"breaker": {"failures": 3, "window_ms": 60_000, "cooldown_ms": 30_000}})
    brain = brain_on(path, clock=clock)
    out, _ = await run_processor(brain, [FinalTranscript(f"turn {n}", turn=n) for n in range(1, 6)])
    asked = [r.model for r in peer.requests]
    assert asked == ["primary", "backup"] * 3 + ["backup", "backup"]  # open after the third failure
    assert model_turns(out, 3)[0].failovers[0].startswith("primary: HTTP 500")
    assert model_turns(out, 4)[0].failovers == ("primary: circuit open for 30.0 s more",)
    assert all(spoken(out, n) == "ok" for n in range(1, 6))
    await clock.advance(30_000_000_000)
    script.clear_faults(model="primary")
    out, _ = await run_processor(next_call(brain), [FinalTranscript("turn 6", turn=6),
                                                    FinalTranscript("turn 7", turn=7)])
    assert [r.model for r in peer.requests[-2:]] == ["primary", "primary"]  # half-open, then closed


async def test_a_failing_half_open_deployment_rests_for_another_cooldown(make_peer: PeerFactory,
                                                                        tmp_path: Path) -> None:
    script = PeerScript(fallback="ok")
    script.inject(Fault(kind="server_error"), model="primary", times=None)
    peer, url = await make_peer(script)
    clock = VirtualClock()
    path = models_file(tmp_path, url, ["primary", "backup"],
                       extra={"breaker": {"failures": 1, "window_ms": 1000, "cooldown_ms": 5000}})
    brain = brain_on(path, clock=clock)
    await run_processor(brain, [FinalTranscript("one", turn=1), FinalTranscript("two", turn=2)])
    await clock.advance(5_000_000_000)
    await run_processor(next_call(brain), [FinalTranscript("three", turn=3), FinalTranscript("four", turn=4)])
    assert [r.model for r in peer.requests] == ["primary", "backup", "backup", "primary", "backup", "backup"]


async def test_no_first_token_in_time_falls_over_and_the_abandoned_stream_is_closed(make_peer: PeerFactory,
                                                                                   tmp_path: Path) -> None:
    script = PeerScript(fallback="Backup here.")
    script.inject(Fault(kind="hang"), model="slow")
    peer, url = await make_peer(script)
    clock = VirtualClock()
    brain = brain_on(models_file(tmp_path, url, ["slow", "backup"], ttft_ms=2000))
    lines, out, call = start_call(brain, CallContext(clock=clock))
    await lines.send(FinalTranscript("hello", turn=1))
    await peer.wait_for(lambda p: p.outcomes() == ["fault:hang"])
    await wait_until(lambda: clock.sleepers == 1)
    await clock.advance(1_999_000_000)
    assert len(peer.requests) == 1
    await clock.advance(1_000_000)
    await peer.wait_for(lambda p: p.outcomes() == ["disconnected", "completed"])
    lines.end()
    await call
    assert spoken(out, 1) == "Backup here."
    (mt,) = model_turns(out, 1)
    assert mt.failovers == ("slow: no first token within 2000 ms",) and mt.deployment == "backup"
    assert mt.first_token_ms is not None and mt.first_token_ms < 1  # the backup's, on the virtual clock


async def test_a_barge_in_closes_the_stream_and_the_history_keeps_what_was_heard(make_peer: PeerFactory,
                                                                                tmp_path: Path) -> None:
    script = PeerScript(tokens_per_s=50)  # ~20 ms a token: the caller cuts in mid-answer
    script.add_rule(r"\bhours\b", "Our opening hours are eight to eight on weekdays and nine to five on "
                                  "Saturdays, and on public holidays we open at ten and close at four.")
    peer, url = await make_peer(script)
    brain = brain_on(models_file(tmp_path, url, ["gpt-fast"]))
    lines, out, call = start_call(brain)
    await lines.send(FinalTranscript("What are your hours?", turn=1))
    await wait_until(lambda: len(spoken(out, 1).split()) >= 3)
    brain.emit(FlushStart(turn=1))
    await peer.wait_for(lambda p: p.outcomes() == ["disconnected"])
    assert peer.requests[0].chunks_sent < 20
    await wait_until(lambda: any(isinstance(c, ResponseEnd) and c.turn == 1 for c in out.controls))
    brain.emit(BotStoppedSpeaking(turn=1, interrupted=True, heard_text="Our opening hours"))
    await lines.send(FinalTranscript("Sorry, and on Sunday?", turn=2))
    await peer.wait_for(lambda p: len(p.outcomes()) == 2 and p.outcomes()[1] != "pending")
    lines.end()
    result = await call
    assert peer.requests[1].messages[1:] == [{"role": "user", "content": "What are your hours?"},
                                             {"role": "assistant", "content": "Our opening hours"},
                                             {"role": "user", "content": "Sorry, and on Sunday?"}]
    assert not [e for e in result.errors if e.turn == 1]  # an interruption is not a failure


async def test_a_malformed_chunk_mid_answer_ends_the_turn_with_the_apology(make_peer: PeerFactory,
                                                                          tmp_path: Path) -> None:
    script = PeerScript(fallback="Let me check that for you.")
    script.inject(Fault(kind="malformed"))
    peer, url = await make_peer(script)
    brain = brain_on(models_file(tmp_path, url, ["primary", "backup"]), apology=APOLOGY)
    out, result = await run_processor(brain, [FinalTranscript("hello", turn=1)])
    assert spoken(out, 1) == f"Let {APOLOGY}"  # words already spoken stay; no failover after a token
    assert [r.model for r in peer.requests] == ["primary"]
    assert [type(c) for c in out.controls if isinstance(c, (ResponseStart, ResponseEnd))] == [ResponseStart,
                                                                                               ResponseEnd]
    (error,) = result.errors
    assert error.turn == 1 and not error.fatal


async def test_an_empty_reply_is_answered_with_the_apology(make_peer: PeerFactory, tmp_path: Path) -> None:
    script = PeerScript()
    script.inject(Fault(kind="empty"))
    _peer, url = await make_peer(script)
    brain = brain_on(models_file(tmp_path, url, ["gpt-fast"]), apology=APOLOGY)
    out, result = await run_processor(brain, [FinalTranscript("hello", turn=1), FinalTranscript("hi", turn=2)])
    assert spoken(out, 1) == APOLOGY and spoken(out, 2) == "You said: hi"
    assert "EmptyReply" in result.errors[0].message


async def test_malformed_tool_call_arguments_end_the_turn_with_the_apology(make_peer: PeerFactory,
                                                                          tmp_path: Path) -> None:
    script = PeerScript()
    script.queue_reply(Reply(tool_calls=(ToolCallReply("lookup_policy", '{"policy_id": "AB-1'),)))
    peer, url = await make_peer(script)
    ran: list[object] = []

    async def lookup(arguments: Mapping[str, Any]) -> str:
        ran.append(arguments)
        return "{}"

    brain = brain_on(models_file(tmp_path, url, ["gpt-fast"]), apology=APOLOGY)
    brain.tools["lookup_policy"] = FunctionTool(name="lookup_policy", description="Look up.", fn=lookup)
    out, result = await run_processor(brain, [FinalTranscript("policy please", turn=1)])
    assert spoken(out, 1) == APOLOGY and not ran and len(peer.requests) == 1
    assert "arguments are not valid JSON" in result.errors[0].message


async def test_every_deployment_hanging_ends_in_the_apology_not_a_stuck_turn(make_peer: PeerFactory,
                                                                            tmp_path: Path) -> None:
    script = PeerScript()
    script.inject(Fault(kind="hang"), times=None)
    peer, url = await make_peer(script)
    clock = VirtualClock()
    brain = brain_on(models_file(tmp_path, url, ["a", "b"], ttft_ms=1000), apology=APOLOGY)
    lines, out, call = start_call(brain, CallContext(clock=clock))
    await lines.send(FinalTranscript("hello", turn=1))
    for n in (1, 2):
        await peer.wait_for(lambda p, n=n: len(p.outcomes()) == n and p.outcomes()[-1] == "fault:hang")
        await wait_until(lambda: clock.sleepers == 1)
        await clock.advance(1_000_000_000)
    await wait_until(lambda: any(isinstance(c, ResponseEnd) for c in out.controls))
    lines.end()
    result = await call
    assert spoken(out, 1) == APOLOGY
    await peer.wait_for(lambda p: p.outcomes() == ["disconnected", "disconnected"])
    (mt,) = model_turns(out, 1)
    assert mt.deployment == "" and mt.failovers == ("a: no first token within 1000 ms",
                                                    "b: no first token within 1000 ms")
    assert any("no deployment answered" in e.message for e in result.errors if isinstance(e, ErrorEvent))


async def test_tool_rounds_are_bounded_and_the_last_round_offers_no_tools(make_peer: PeerFactory,
                                                                         tmp_path: Path) -> None:
    script = PeerScript(fallback="Here is what I found.")
    script.add_rule(r"\bsearch\b", tool="search", arguments={"q": "x"})
    script.add_rule(r".", tool="search", arguments={"q": "again"}, on="tool")  # a model that never stops
    peer, url = await make_peer(script)

    async def search(arguments: Mapping[str, Any]) -> str:
        return "nothing"

    brain = brain_on(models_file(tmp_path, url, ["gpt-fast"]), max_tool_rounds=2)
    brain.tools["search"] = FunctionTool(name="search", description="Search.", fn=search)
    out, _ = await run_processor(brain, [FinalTranscript("search for it", turn=1)])
    assert [r.tools for r in peer.requests] == [["search"], ["search"], []]
    assert spoken(out, 1) == "Here is what I found."  # offered no tool, the model answers
