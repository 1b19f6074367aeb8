"""Events to Event Grid through the real async SDK, against a local HTTP server that checks
what the SDK sends (the topic's CloudEvents batch, the key header, the API version)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from processors.sidecars.events import CALL_STARTED, TRANSCRIPTION_RECEIVED, EventBus, decode
from processors.sidecars.events_eventgrid import EventGridTransport
from processors.sidecars.facts import CallStarted, TranscriptReceived

KEY = "c2VjcmV0LWtleQ=="


@dataclass
class Topic:
    """A local Event Grid topic: answers 200 to a valid batch, 401 to a wrong key."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_next: int = 0  # answer fail_status to this many requests first
    fail_status: int = 503


@pytest.fixture
async def topic() -> AsyncIterator[Topic]:
    state = Topic()

    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        state.requests.append({"path": request.path, "query": dict(request.query),
                               "content_type": request.headers.get("Content-Type", ""),
                               "key": request.headers.get("aeg-sas-key"), "body": body})
        if request.headers.get("aeg-sas-key") != KEY:
            return web.json_response({"error": {"code": "Unauthorized", "message": "bad key"}}, status=401)
        if len(body) > 1_048_576:  # Event Grid's limit for a request
            return web.json_response({"error": {"code": "RequestEntityTooLarge", "message": "too big"}}, status=413)
        if state.fail_next:
            state.fail_next -= 1
            return web.json_response({"error": {"code": "Refused", "message": "no"}}, status=state.fail_status)
        return web.Response(status=200)

    app = web.Application(client_max_size=16 * 2**20)
    app.router.add_post("/api/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/api/events"
    yield state
    await runner.cleanup()


async def test_the_sdk_posts_a_cloudevents_batch_with_the_key(topic: Topic) -> None:
    transport = EventGridTransport(topic.url, KEY, retry_total=0)
    bus = EventBus(transport)
    await bus.start()
    sink = bus.sink()
    sink.offer(CallStarted(call_id="c9", seq=1, at_ms=0.0, wall=1_764_180_000.0, caller="+15550100",
                           pipeline="acs", transport="acs"))
    sink.offer(TranscriptReceived(call_id="c9", seq=2, at_ms=812.0, wall=1_764_180_001.0, turn=1, text="hello"))
    await sink.aclose()
    await bus.aclose()
    [request] = topic.requests
    assert request["path"] == "/api/events" and request["query"] == {"api-version": "2018-01-01"}
    assert request["content_type"] == "application/cloudevents-batch+json; charset=utf-8"
    assert request["key"] == KEY
    batch = json.loads(request["body"])
    assert [e["type"] for e in batch] == [CALL_STARTED, TRANSCRIPTION_RECEIVED]
    assert [e["id"] for e in batch] == ["c9:1", "c9:2"]
    assert batch[0]["data"]["caller"] == "+15550100" and batch[1]["data"]["text"] == "hello"
    assert [decode(json.dumps(e)).get_specversion() for e in batch] == ["1.0", "1.0"]  # valid CloudEvents


async def test_a_refused_key_is_counted_and_the_batch_kept(topic: Topic) -> None:
    transport = EventGridTransport(topic.url, "wrong", retry_total=0)
    bus = EventBus(transport, close_timeout_s=0.3, max_backoff_s=0.05)
    await bus.start()
    sink = bus.sink()
    sink.offer(TranscriptReceived(call_id="c1", seq=1, at_ms=0, wall=0, turn=1, text="x"))
    assert not await bus.wait_sent(1, timeout=0.3)
    assert bus.send_failures >= 1 and bus.sent == 0 and len(bus._queue) == 1  # kept, not lost
    await bus.aclose()


async def test_a_busy_topic_is_tried_again(topic: Topic) -> None:
    topic.fail_next = 2
    transport = EventGridTransport(topic.url, KEY, retry_total=0)
    bus = EventBus(transport, max_backoff_s=0.05)
    await bus.start()
    sink = bus.sink()
    sink.offer(TranscriptReceived(call_id="c1", seq=1, at_ms=0, wall=0, turn=1, text="x"))
    await sink.aclose()
    assert (bus.send_failures, bus.sent, len(topic.requests)) == (2, 1, 3)
    assert [json.loads(r["body"])[0]["id"] for r in topic.requests] == ["c1:1"] * 3  # the same event id
    await bus.aclose()


def test_a_bad_endpoint_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="event grid endpoint must be an http"):
        EventGridTransport("topic.westus-1.eventgrid.azure.net", KEY)


async def test_a_huge_transcript_is_dropped_counted_and_big_batches_are_split(topic: Topic) -> None:
    transport = EventGridTransport(topic.url, KEY, retry_total=0)
    bus = EventBus(transport)
    await bus.start()
    sink = bus.sink()
    sink.offer(TranscriptReceived(call_id="c1", seq=1, at_ms=0, wall=0, turn=1, text="x" * 2_000_000))
    for seq in (2, 3, 4):  # 400 KB each: two fit in one request, the third goes in another
        sink.offer(TranscriptReceived(call_id="c1", seq=seq, at_ms=0, wall=0, turn=seq, text="y" * 400_000))
    await sink.aclose()
    assert transport.oversize == 1 and bus.sent == 4 and bus.send_failures == 0
    assert [[e["id"] for e in json.loads(r["body"])] for r in topic.requests] == [["c1:2", "c1:3"], ["c1:4"]]
    assert all(len(r["body"]) <= 1_048_576 for r in topic.requests)
    await bus.aclose()


async def test_a_batch_the_topic_refuses_as_bad_is_dropped_and_the_next_ones_go(topic: Topic) -> None:
    topic.fail_next, topic.fail_status = 1, 400
    transport = EventGridTransport(topic.url, KEY, retry_total=0)
    bus = EventBus(transport, batch=1)
    await bus.start()
    sink = bus.sink()
    for seq in (1, 2):
        sink.offer(TranscriptReceived(call_id="c1", seq=seq, at_ms=0, wall=0, turn=seq, text="x"))
    await sink.aclose()
    assert (bus.rejected, bus.sent, bus.send_failures) == (1, 1, 0)
    assert [json.loads(r["body"])[0]["id"] for r in topic.requests] == ["c1:1", "c1:2"]
    await bus.aclose()
