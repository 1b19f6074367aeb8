"""ACS server-side recording: the callbacks' ``RecordingStateChanged`` (active) makes the call's
``RecordingStarted`` fact, hence its RECORDING_STARTED event, once per recording id."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from starlette.applications import Starlette

from pipeline.context import CallContext
from pipeline.graph import Graph
from pipeline.testing import Collector, Feeder
from processors.sidecars.facts import Fact, RecordingStarted
from processors.sidecars.services import DataTier
from processors.sidecars.tap import CallMeta
from transports.acs.callbacks import CallbacksEndpoint
from transports.acs.sessions import CallSessions


def recording_changed(call_id: str, recording_id: str, state: str, time: str) -> dict[str, Any]:
    source = f"calling/callConnections/{call_id}"
    return {"id": str(uuid.uuid4()), "source": source, "type": "Microsoft.Communication.RecordingStateChanged",
            "specversion": "1.0", "datacontenttype": "application/json", "subject": source, "time": time,
            "data": {"callConnectionId": call_id, "serverCallId": "server-1", "correlationId": "corr-1",
                     "recordingId": recording_id, "state": state}}


class Keep:
    def __init__(self) -> None:
        self.facts: list[Fact] = []

    def offer(self, fact: Fact) -> None:
        self.facts.append(fact)

    async def aclose(self) -> None:
        return None


async def test_acs_recording_becoming_active_is_a_recording_started_fact_once_per_recording() -> None:
    sessions = CallSessions()
    sessions.expect("call-1")
    session = sessions.live("call-1")
    assert session is not None
    keep = Keep()
    tier = DataTier(sinks=[lambda call_id, meta: keep])
    graph = Graph("g")
    graph.chain(Feeder(), Collector())
    session.sidecars = tier.attach_call(graph, CallContext("call-1"), CallMeta(transport="acs"))
    app = Starlette(routes=[CallbacksEndpoint(sessions, None).route()])
    steps = [("rec-1", "active", "10:00:01"), ("rec-1", "inactive", "10:00:02"), ("rec-1", "active", "10:00:03"),
             ("rec-2", "active", "10:01:00")]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        for recording_id, state, at in steps:
            body = json.dumps([recording_changed("call-1", recording_id, state, f"2026-11-26T{at}Z")])
            response = await http.post(f"/acs/callbacks?token={session.callback_token}", content=body)
            assert response.status_code == 200, response.text
    started = [f for f in keep.facts if isinstance(f, RecordingStarted)]
    assert [(f.recording_id, f.location, f.source) for f in started] == [("rec-1", "rec-1", "acs"),
                                                                        ("rec-2", "rec-2", "acs")]
