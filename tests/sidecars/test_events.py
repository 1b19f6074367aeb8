"""The seven events as CloudEvents 1.0, and the worker's event bus (in-process transport)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from cloudevents.core.v1.event import CloudEvent

from pipeline.config import build_graph, load_pipeline
from pipeline.context import CallContext
from pipeline.runner import CallRunner
from processors.sidecars.events import (
    AGENT_RESPONSE_GENERATED,
    CALL_ENDED,
    CALL_STARTED,
    ERROR_OCCURRED,
    EVENT_TYPES,
    PARTICIPANT_JOINED,
    RECORDING_STARTED,
    TRANSCRIPTION_RECEIVED,
    EventBus,
    InProcessTransport,
    decode,
    encode,
    to_cloudevent,
)
from processors.sidecars.facts import (
    AgentChanged,
    CallFacts,
    ErrorOccurred,
    RecordingStarted,
    TranscriptReceived,
)
from processors.sidecars.tap import CallMeta, FactTap

ROOT = Path(__file__).resolve().parents[2]


def test_a_fact_becomes_a_valid_cloudevent_and_back() -> None:
    fact = TranscriptReceived(call_id="call/ü 1", seq=4, at_ms=1520.5, wall=1_764_180_000.25, turn=2,
                              text="I had an accident", agent="fnol")
    event = to_cloudevent(fact)
    assert event is not None
    wire = json.loads(encode(event))
    assert wire == {"specversion": "1.0", "id": "call/ü 1:4", "source": "/voicegraph",
                    "type": "com.voicegraph.transcription.received", "subject": "call/ü 1",
                    "time": "2025-11-26T18:00:00.250000Z", "datacontenttype": "application/json",
                    "data": {"call_id": "call/ü 1", "seq": 4, "at_ms": 1520.5, "wall": 1_764_180_000.25,
                             "turn": 2, "text": "I had an accident", "agent": "fnol"}}
    back = decode(encode(event))
    assert (back.get_id(), back.get_type(), back.get_data()) == (event.get_id(), event.get_type(), event.get_data())


def test_only_the_seven_events_are_published() -> None:
    assert sorted(EVENT_TYPES.values()) == sorted([CALL_STARTED, PARTICIPANT_JOINED, TRANSCRIPTION_RECEIVED,
                                                   AGENT_RESPONSE_GENERATED, RECORDING_STARTED, ERROR_OCCURRED,
                                                   CALL_ENDED])
    switch = AgentChanged(call_id="c", seq=1, at_ms=0, wall=0, turn=1, previous="", agent="auth")
    assert to_cloudevent(switch) is None


def test_a_subscriber_to_an_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match=r"subscriber 'audit': unknown event types \['call.started'\]"):
        InProcessTransport().subscribe("audit", lambda e: None, ["call.started"])


async def test_a_full_call_publishes_every_event_once_per_occurrence() -> None:
    inproc = InProcessTransport()
    got: list[CloudEvent] = []
    ended: list[CloudEvent] = []
    inproc.subscribe("all", got.append)

    async def on_end(event: CloudEvent) -> None:
        ended.append(event)

    inproc.subscribe("ends", on_end, [CALL_ENDED])
    bus = EventBus(inproc)
    await bus.start()
    graph = build_graph(load_pipeline(ROOT / "config" / "pipelines" / "text.yaml"))
    ctx = CallContext("call-7")
    facts = CallFacts(ctx.call_id, [bus.sink()], lambda: 0.0)
    tap = FactTap(graph, facts, CallMeta(caller="+15550100", pipeline="text"))
    result = await CallRunner(graph, ctx).run(timeout=30)
    facts.emit(RecordingStarted, recording_id="r1", location="/tmp/r1.wav")
    facts.emit(ErrorOccurred, source="tts", message="voice missing")
    tap.end(result.reason, 100.0, {"call_id": "call-7", "turns": []})
    await facts.aclose()  # the call's events are sent when its sink closes
    assert bus.sent == bus.queued == len(got) == 14
    types = [e.get_type() for e in got]
    assert types == ([CALL_STARTED, PARTICIPANT_JOINED, PARTICIPANT_JOINED]
                     + [TRANSCRIPTION_RECEIVED, AGENT_RESPONSE_GENERATED] * 4
                     + [RECORDING_STARTED, ERROR_OCCURRED, CALL_ENDED])
    assert len({e.get_id() for e in got}) == 14 and all(e.get_subject() == "call-7" for e in got)
    for event in got:  # each is valid on the wire: the SDK's parser reads it back whole
        assert decode(encode(event)).get_attributes() == event.get_attributes()
    assert [e.get_id() for e in ended] == [got[-1].get_id()]
    data = got[-1].get_data()
    assert isinstance(data, dict) and (data["reason"], data["turns"]) == ("eos", 4)
    await bus.aclose()


class FlakyTransport:
    """Fails its first ``failures`` sends, then keeps what it is sent."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.batches: list[list[str]] = []
        self.closed = False

    async def send(self, events: Sequence[CloudEvent]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("refused")
        self.batches.append([e.get_id() for e in events])

    async def aclose(self) -> None:
        self.closed = True


def transcripts(call: str, n: int) -> list[TranscriptReceived]:
    return [TranscriptReceived(call_id=call, seq=i, at_ms=0, wall=0, turn=i, text="x") for i in range(1, n + 1)]


async def test_a_failing_transport_gets_the_batch_again_in_order() -> None:
    transport = FlakyTransport(failures=2)
    bus = EventBus(transport, batch=3, max_backoff_s=0.2)
    sink = bus.sink()
    for fact in transcripts("c", 5):
        sink.offer(fact)
    await bus.start()
    await sink.aclose()
    assert transport.batches == [["c:1", "c:2", "c:3"], ["c:4", "c:5"]]
    assert (bus.send_failures, bus.sent, bus.dropped) == (2, 5, 0)
    await bus.aclose()
    assert transport.closed


async def test_a_full_queue_drops_new_events_counted_and_keeps_the_accepted_ones() -> None:
    transport = FlakyTransport(failures=0)
    bus = EventBus(transport, maxsize=3)
    sink = bus.sink()
    for fact in transcripts("c", 5):  # the bus is not started: nothing leaves the queue
        sink.offer(fact)
    assert (bus.queued, bus.dropped) == (3, 2)
    await bus.start()
    await bus.aclose()
    assert transport.batches == [["c:1", "c:2", "c:3"]]


async def test_a_subscriber_that_raises_does_not_stop_the_others() -> None:
    inproc = InProcessTransport()
    seen: list[str] = []

    def broken(event: CloudEvent) -> None:
        raise RuntimeError("bug")

    inproc.subscribe("broken", broken)
    inproc.subscribe("ok", lambda e: seen.append(e.get_id()))
    bus = EventBus(inproc)
    await bus.start()
    sink = bus.sink()
    for fact in transcripts("c", 2):
        sink.offer(fact)
    await sink.aclose()
    assert seen == ["c:1", "c:2"] and inproc.failures == 2
    await bus.aclose()


async def test_close_gives_up_on_a_dead_transport_within_its_bound() -> None:
    transport = FlakyTransport(failures=10**9)
    bus = EventBus(transport, close_timeout_s=0.05, max_backoff_s=0.01)
    await bus.start()
    sink = bus.sink()
    sink.offer(transcripts("c", 1)[0])
    await asyncio.wait_for(bus.aclose(), 5)  # bounded: it does not wait for the transport forever
    assert bus.sent == 0 and transport.closed


async def test_events_offered_after_the_bus_closed_are_dropped_counted_and_waited_for_by_no_one() -> None:
    transport = FlakyTransport(failures=0)
    bus = EventBus(transport)
    await bus.start()
    sink = bus.sink()
    sink.offer(transcripts("c", 1)[0])
    await bus.aclose()
    sink.offer(transcripts("c", 2)[1])  # a call still running as the worker shuts down
    await asyncio.wait_for(sink.aclose(), 1)  # returns at once: its last event was never queued
    assert (bus.sent, bus.dropped, transport.batches) == (1, 1, [["c:1"]])
