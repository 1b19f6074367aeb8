"""The local OpenAI-compatible peer, driven by the official SDK: both path shapes, both
authentications, streaming and not, tool-call deltas, usage, errors in the API's shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from azure.core.credentials import AccessToken
from azure.identity.aio import get_bearer_token_provider

from pipeline.errors import ConfigError
from processors.llm.peer import Fault, PeerScript, load_script
from tests.processors.llm.conftest import PeerFactory

USER = [{"role": "user", "content": "What is the status of policy AB-12?"}]


async def test_streaming_through_asyncopenai_delivers_tokens_tool_deltas_and_usage(make_peer: PeerFactory) -> None:
    script = PeerScript()
    script.add_rule(r"policy (?P<id>[A-Z]{2}-\d+)", tool="lookup_policy", arguments={"policy_id": "{id}"})
    peer, url = await make_peer(script, api_key="sk-right")
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-right", max_retries=0)
    tool = {"type": "function", "function": {"name": "lookup_policy", "parameters": {"type": "object"}}}
    stream = await client.chat.completions.create(model="gpt-4o", messages=USER, tools=[tool], stream=True,  # type: ignore[list-item,arg-type]
                                                  stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "lookup_policy"
    assert all(d.index == 0 and d.id is None for d in deltas[1:]) and len(deltas) >= 3
    assert "".join(d.function.arguments or "" for d in deltas if d.function) == '{"policy_id": "AB-12"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(deltas) - 1
    assert all(c.usage is None for c in chunks[:-1])
    assert peer.requests[0].auth == "bearer" and peer.outcomes() == ["completed"]
    await client.close()


async def test_asyncazureopenai_with_a_key_and_with_an_entra_token_provider(make_peer: PeerFactory) -> None:
    peer, url = await make_peer(PeerScript(fallback="Azure says {text}"), api_key="azure-key",
                                entra_tokens=frozenset({"entra-token-1"}))

    class Credential:  # an AsyncTokenCredential, as azure-identity's credentials are
        def __init__(self) -> None:
            self.scopes: list[str] = []

        async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            self.scopes.extend(scopes)
            return AccessToken("entra-token-1", 4_102_444_800)

        async def close(self) -> None:
            pass

        async def __aenter__(self) -> Credential:
            return self

        async def __aexit__(self, *args: object) -> None:
            pass

    credential = Credential()
    clients = [
        openai.AsyncAzureOpenAI(azure_endpoint=url, api_key="azure-key", api_version="2024-10-21", max_retries=0),
        openai.AsyncAzureOpenAI(azure_endpoint=url, api_version="2024-10-21", max_retries=0,
                                azure_ad_token_provider=get_bearer_token_provider(
                                    credential, "https://cognitiveservices.azure.com/.default")),  # type: ignore[arg-type]
    ]
    for client in clients:
        stream = await client.chat.completions.create(model="gpt-4o-deploy", messages=[{"role": "user", "content": "hi"}],
                                                      stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "Azure says hi"
        await client.close()
    assert [(r.path, r.model, r.auth) for r in peer.requests] == [
        ("/openai/deployments/gpt-4o-deploy/chat/completions", "gpt-4o-deploy", "api-key"),
        ("/openai/deployments/gpt-4o-deploy/chat/completions", "gpt-4o-deploy", "bearer")]
    assert credential.scopes == ["https://cognitiveservices.azure.com/.default"]


async def test_a_plain_request_gets_one_chat_completion(make_peer: PeerFactory) -> None:
    _peer, url = await make_peer(PeerScript(fallback="Plain: {text}"))
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    answer = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content == "Plain: hello" and answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 2
    await client.close()


async def test_errors_come_in_the_apis_shape_and_the_sdk_raises_its_own_exceptions(make_peer: PeerFactory) -> None:
    script = PeerScript()
    peer, url = await make_peer(script, api_key="sk-right")
    wrong = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        await wrong.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    assert denied.value.code == "invalid_api_key"
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-right", max_retries=0)
    script.inject(Fault(kind="rate_limit", retry_after_s=7), model="m")
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="m", messages=USER, stream=True)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.response.headers["retry-after-ms"] == "7000"
    script.inject(Fault(kind="server_error"))
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="m", messages=[])
    assert bad.value.param == "messages"
    async with httpx.AsyncClient() as http:
        no_version = await http.post(url + "/openai/deployments/d/chat/completions", json={"messages": USER},
                                     headers={"api-key": "sk-right"})
        assert no_version.status_code == 404
        not_json = await http.post(url + "/v1/chat/completions", content=b"{nope",
                                   headers={"authorization": "Bearer sk-right"})
        assert not_json.status_code == 400 and "parse the JSON" in not_json.json()["error"]["message"]
    assert peer.outcomes() == ["fault:rate_limit", "fault:server_error"]  # refused requests are not recorded
    await client.close()
    await wrong.close()


async def test_faults_can_be_injected_over_http_per_model_until_cleared(make_peer: PeerFactory) -> None:
    _peer, url = await make_peer(PeerScript(fallback="ok"))
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    async with httpx.AsyncClient() as http:
        made = await http.post(url + "/peer/faults", json={"kind": "server_error", "model": "a", "times": None})
        assert made.status_code == 200
        refused = await http.post(url + "/peer/faults", json={"kind": "meltdown"})
        assert refused.status_code == 400 and "kind must be one of" in refused.json()["error"]["message"]
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(model="a", messages=USER)  # type: ignore[arg-type]
        ok = await client.chat.completions.create(model="b", messages=USER)  # type: ignore[arg-type]
        assert ok.choices[0].message.content == "ok"
        assert (await http.delete(url + "/peer/faults?model=a")).status_code == 204
        again = await client.chat.completions.create(model="a", messages=USER)  # type: ignore[arg-type]
        assert again.choices[0].message.content == "ok"
        listed = (await http.get(url + "/peer/requests")).json()
        assert [(r["model"], r["status"]) for r in listed] == [("a", 500), ("a", 500), ("b", 200), ("a", 200)]
    await client.close()


def test_a_script_file_loads_rules_and_names_file_and_line_on_errors(tmp_path: Path) -> None:
    good = tmp_path / "peer.yaml"
    good.write_text('ttft_ms: 250\ntokens_per_s: 40\nrules:\n  - match: "\\\\bhours\\\\b"\n    reply: "Eight to eight."\n'
                    '  - match: "policy (?P<id>\\\\w+)"\n    tool: lookup\n    arguments: {id: "{id}"}\n')
    script = load_script(str(good))
    assert script.ttft_ms == 250 and script.tokens_per_s == 40
    assert script.reply("m", [{"role": "user", "content": "your hours?"}]).text == "Eight to eight."
    call = script.reply("m", [{"role": "user", "content": "policy X9"}], tools=["lookup"]).tool_calls[0]
    assert (call.name, call.arguments) == ("lookup", '{"id": "X9"}')
    bad = tmp_path / "bad.yaml"
    bad.write_text('rules:\n  - match: "ok"\n    reply: "fine"\n  - match: "(unclosed"\n    reply: "x"\n')
    with pytest.raises(ConfigError) as error:
        load_script(str(bad))
    assert str(error.value).startswith(f"{bad}:4: rules[1]: /(unclosed/ is not a valid regular expression")
