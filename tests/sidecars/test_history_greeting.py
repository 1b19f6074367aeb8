"""Long-term memory in the agents: a caller verified in one call is remembered (the
orchestrator stores their verified profile at the call's end), and greeted by name when
they call again; an unknown caller and a store that cannot answer get the usual greeting."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agents.orchestrator import Orchestrator
from pipeline.config import build_graph, load_pipeline
from pipeline.context import CallContext
from processors.sidecars.history import History
from processors.sidecars.history_cosmos import CosmosHistory
from processors.sidecars.history_sqlite import SqliteHistory
from tests.sidecars.cosmos_server import EMULATOR_KEY, CosmosProxy, cosmos_url  # noqa: F401 (a fixture)
from voicegraph.call import CallOptions, run_call_report
from voicegraph.paths import builtin_config_dir

DEMO = ["Hello, this is Jane Doe.", "March third, nineteen eighty.", "Yes, that's right.",
        "P O L one two three four five.", "No, that's all. Thank you."]
AUTH_GREETING = "Thank you for calling. Before we go on, I need to verify your identity."


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[History]:
    store = History(SqliteHistory(tmp_path / "h.db", busy_timeout_ms=20), journal=tmp_path / "j.jsonl", batch_ms=0)
    await store.start()
    yield store
    await store.aclose()


async def _call(history: History, caller_id: str, lines: list[str]) -> tuple[dict[str, Any], str]:
    """A text call through the shipped insurance scenario on the IVR engine; its report and call id."""
    pipeline = builtin_config_dir() / "pipelines" / "scenario_text.yaml"
    graph = build_graph(load_pipeline(pipeline))
    brain = graph.nodes["brain"]
    assert isinstance(brain, Orchestrator)
    brain.use_memory(long_term=history, caller_id=caller_id)
    ctx = CallContext()
    report = await run_call_report(graph, CallOptions(pipeline=pipeline, say=tuple(lines)), ctx=ctx)
    assert report["errors"] == []
    return report, ctx.call_id


async def test_a_verified_caller_is_remembered_and_greeted_by_name_next_time(
        history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    first, first_id = await _call(history, "+14255550123", DEMO)
    assert first["turns"][0]["bot_text"].startswith(AUTH_GREETING)
    assert await history.flush()
    profile = await history.profile("+14255550123")
    assert (profile["name"], profile["first_name"]) == ("Jane Doe", "Jane")
    assert [(c["call_id"], c["verified"]) for c in await history.past_calls("+14255550123")] == [(first_id, True)]

    second, second_id = await _call(history, "+14255550123", ["No, that's all. Thank you."])
    assert second["turns"][0]["bot_text"].startswith("Welcome back, Jane. " + AUTH_GREETING)
    assert await history.flush()
    assert [c["call_id"] for c in await history.past_calls("+14255550123")] == [first_id, second_id]


async def test_an_unknown_caller_gets_the_usual_greeting(history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    await history.remember("+1999", {"name": "Someone Else"}, {"call_id": "x"})
    assert await history.flush()
    report, _ = await _call(history, "+1000", ["No, that's all. Thank you."])
    assert report["turns"][0]["bot_text"].startswith(AUTH_GREETING)


async def test_a_store_that_cannot_answer_gets_the_usual_greeting(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not a database " * 1000)
    history = History(SqliteHistory(path), journal=tmp_path / "j.jsonl", batch_ms=0)
    await history.start()  # logged; the worker starts anyway
    try:
        report, _ = await _call(history, "+1555", ["No, that's all. Thank you."])
        assert report["turns"][0]["bot_text"].startswith(AUTH_GREETING)
        assert history.counters.read_errors == 1
        assert await history.until(lambda h: h.counters.spooled == 1)  # the call's end, journalled
    finally:
        await history.aclose()


async def test_a_slow_store_holds_the_greeting_at_most_the_bound(cosmos_url: str, tmp_path: Path,  # noqa: F811
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    proxy = CosmosProxy(cosmos_url)
    await proxy.start()
    backend = CosmosHistory(proxy.url, key=EMULATOR_KEY, database=f"db{uuid.uuid4().hex[:8]}",
                            enable_endpoint_discovery=False, timeout_s=30)
    history = History(backend, journal=tmp_path / "j.jsonl", batch_ms=0, read_timeout_s=30)
    await history.start()
    try:
        await history.remember("+1555", {"name": "Jane Doe"}, {"call_id": "x"})
        assert await history.flush()
        proxy.delay_s = 2.0  # past the orchestrator's bound on the profile read
        report, _ = await _call(history, "+1555", ["No, that's all. Thank you."])
        proxy.delay_s = 0.0
        assert report["turns"][0]["bot_text"].startswith(AUTH_GREETING)
        assert "greeting as a first-time caller" in caplog.text
    finally:
        await history.aclose()
        await proxy.close()
