"""The chat request leaves the SDK's per-argument transformation off the event loop's path
(perf/llm_router.py: ~120 us per message) and is, byte for byte, the request ``create``
would have sent."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx2
import openai
import pytest
from openai.resources.chat.completions import completions as sdk_completions

from processors.llm.openai_chat import open_stream
from tests.processors.llm.conftest import PeerFactory

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are the phone assistant of Contoso."},
    *({"role": "user", "content": f"line {i}: ünïcode \"quoted\""} if i % 2 else
      {"role": "assistant", "content": f"answer {i}"} for i in range(1, 38)),
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "lookup_policy", "arguments": "{\"policy_number\": \"POL-12345\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"found\": true}"},
]
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {
    "name": "lookup_policy", "description": "Look up a policy.",
    "parameters": {"type": "object", "properties": {"policy_number": {"type": "string"}},
                   "required": ["policy_number"]}}}]
SSE_DONE = b"data: [DONE]\n\n"


def wire_client(bodies: list[bytes]) -> openai.AsyncOpenAI:
    """An SDK client whose HTTP requests are captured (answered with an empty stream)."""
    def handle(request: httpx2.Request) -> httpx2.Response:
        bodies.append(request.content)
        return httpx2.Response(200, content=SSE_DONE, headers={"content-type": "text/event-stream"})

    return openai.AsyncOpenAI(api_key="k", base_url="http://model.test/v1", max_retries=0,
                              http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handle)))


@pytest.mark.parametrize("tools", [TOOLS, []])
async def test_the_body_on_the_wire_is_the_one_create_sends(tools: list[dict[str, Any]]) -> None:
    bodies: list[bytes] = []
    client = wire_client(bodies)
    timeout = openai.Timeout(20.0, read=2.0)
    stream = await open_stream(client, model="gpt-4o-mini", messages=MESSAGES, tools=tools, temperature=0.3,
                               max_tokens=200, timeout=timeout)
    await stream.aclose()
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    reference = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES,  # type: ignore[arg-type]
        stream=True, stream_options={"include_usage": True}, temperature=0.3, max_completion_tokens=200,
        timeout=timeout, **extra)
    await reference.close()
    assert len(bodies) == 2
    assert bodies[0] == bodies[1]
    sent = json.loads(bodies[0])
    assert sent["messages"] == MESSAGES and sent.get("tools", []) == tools


async def test_the_sdk_does_not_transform_the_history(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    transform = sdk_completions.async_maybe_transform

    async def counting(data: Any, expected: Any) -> Any:
        if isinstance(data, Mapping) and "messages" in data:
            tools = data.get("tools")
            seen.append((len(data["messages"]), len(tools) if isinstance(tools, list) else 0))
        return await transform(data, expected)

    monkeypatch.setattr(sdk_completions, "async_maybe_transform", counting)
    stream = await open_stream(wire_client([]), model="m", messages=MESSAGES, tools=TOOLS)
    await stream.aclose()
    assert seen == [(0, 0)]  # before: [(40, 1)], 40 messages walked on the event loop


async def test_the_peer_receives_the_history_and_tools_as_given(make_peer: PeerFactory) -> None:
    peer, url = await make_peer()
    client = openai.AsyncOpenAI(api_key="k", base_url=f"{url}/v1", max_retries=0)
    stream = await open_stream(client, model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS)
    async for _ in stream:
        pass
    [request] = peer.requests
    assert request.messages == MESSAGES
    assert request.tools == ["lookup_policy"] and request.stream is True and request.model == "gpt-4o-mini"
    await client.close()
