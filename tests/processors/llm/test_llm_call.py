"""The LLM brain in a whole call: the shipped pipeline validates, and a text call through the
peer reports route, model and tool calls per turn."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import build_graph, load_pipeline
from pipeline.registry import default_registry
from processors.llm.llm_node import LLMBrain
from processors.llm.peer import Fault, PeerScript
from processors.llm.tools import FunctionTool
from tests.processors.llm.conftest import PeerFactory
from tests.processors.llm.helpers import models_file
from voicegraph.call import CallOptions, run_call_report

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def llm_registered() -> Iterator[None]:
    # The ``llm`` entry point is in pyproject; registering it here keeps the tests independent of
    # whether the installed metadata has caught up.
    default_registry.register("llm", LLMBrain)
    yield


def test_the_shipped_llm_pipeline_builds() -> None:
    graph = build_graph(load_pipeline(ROOT / "config" / "pipelines" / "local_llm.yaml"))
    assert isinstance(graph.nodes["brain"], LLMBrain)
    assert graph.nodes["brain"].settings.models == "config/models.yaml"


async def test_a_text_call_reports_route_model_failovers_and_tool_calls(
        make_peer: PeerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = PeerScript()
    script.add_rule(r"\bhours\b", "Eight to eight.")
    script.add_rule(r"\bweather\b", tool="weather", arguments={"city": "Oslo"})
    script.add_rule(r'"sky": "(?P<sky>\w+)"', "It is {sky} in Oslo.", on="tool")
    script.inject(Fault(kind="server_error"), model="primary")
    peer, url = await make_peer(script)
    models = models_file(tmp_path, url, ["primary", "backup"])
    pipeline = tmp_path / "llm_text.yaml"
    pipeline.write_text("nodes:\n  caller: {use: text_caller}\n  brain: {use: llm, route: main}\n"
                        "edges:\n  - caller -> brain -> caller\n")
    monkeypatch.setenv("VOICEGRAPH__BRAIN__MODELS", str(models))
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test")
    options = CallOptions(pipeline=pipeline, say=("Your hours?", "The weather?"))
    graph = build_graph(load_pipeline(pipeline))

    async def weather(arguments: Mapping[str, Any]) -> dict[str, str]:
        return {"city": str(arguments["city"]), "sky": "sunny"}

    brain = graph.nodes["brain"]
    assert isinstance(brain, LLMBrain)
    brain.tools["weather"] = FunctionTool(name="weather", description="The weather in a city.", fn=weather)
    report = await run_call_report(graph, options)
    first, second = report["turns"]
    assert first["bot_text"] == "Eight to eight."
    assert (first["route"], first["model"], first["deployment"]) == ("main", "backup", "backup")
    assert first["failovers"] == ["primary: HTTP 500: The server had an error while processing your request."]
    assert second["tool_calls"] == [{"name": "weather", "arguments": {"city": "Oslo"},
                                     "result": {"city": "Oslo", "sky": "sunny"}}]
    assert second["bot_text"] == "It is sunny in Oslo." and second["failovers"] == []
    assert report["errors"] == []
    json.dumps(report)
    assert [r.model for r in peer.requests] == ["primary", "backup", "primary", "primary"]  # one 500 only
