"""The peer's synthesis service through the official Speech SDK for JavaScript: a client
nobody on the team wrote, which connects on ``/tts/cognitiveservices/websocket/v1`` and
only takes audio whose ``X-StreamId`` matches the ``response`` message.

Needs Node.js and the SDK: ``npm ci --prefix tests/azure_speech/js`` (skipped without)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from processors.azure_speech.peer.synthesis import SynthesisState

from ._synthesis_peer import synthesis_peer

JS = Path(__file__).with_name("js")
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (JS / "node_modules" / "microsoft-cognitiveservices-speech-sdk").is_dir(),
    reason="needs node and `npm ci --prefix tests/azure_speech/js`")


@pytest.fixture
async def peer() -> AsyncIterator[tuple[SynthesisState, str]]:
    async with synthesis_peer() as served:
        yield served


async def js_say(host: str, voice: str, *texts: str) -> list[dict[str, Any]]:
    assert NODE is not None
    child = await asyncio.create_subprocess_exec(NODE, str(JS / "synth.js"), host, voice, *texts,
                                                 stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(child.communicate(), 60)
    return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


async def test_the_javascript_sdk_streams_two_clauses_on_one_connection(peer: tuple[SynthesisState, str]) -> None:
    state, host = peer
    texts = ("Hello from the JavaScript SDK.", "A second clause <on the same> connection & more.")
    results = await js_say(host, "en-GB-SoniaNeural", *texts)
    assert [(r["text"], r["reason"]) for r in results] == [(t, "SynthesizingAudioCompleted") for t in texts]
    for result in results:  # every audio message reached the SDK's synthesizing event
        assert result["audio"] == sum(result["chunks"]) and len(result["chunks"]) == -(-result["audio"] // 3200)
    assert sum(r["audio"] for r in results) == state.audio_bytes
    assert (list(state.texts), state.voices, state.peer.counters.connections["synthesis"]) == (list(texts), ["en-GB-SoniaNeural"] * 2, 1)
    assert state.formats == ["raw-16khz-16bit-mono-pcm"] * 2


async def test_the_javascript_sdk_reports_an_unknown_voice(peer: tuple[SynthesisState, str]) -> None:
    state, host = peer
    [result] = await js_say(host, "en-US-Nobody", "Hello.")
    assert result["reason"] == "Canceled" and result["audio"] == 0
    assert result["error"] == "Unsupported voice en-US-Nobody. websocket error code: 1007"
    assert (state.refused, state.peer.counters.turns["synthesis"]) == (1, 0)
