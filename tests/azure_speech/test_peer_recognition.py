"""The Speech peer's recognition, through the real Speech SDK (and a raw WebSocket for bad input)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import azure.cognitiveservices.speech as sdk
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from processors.azure_speech.peer.app import Fault, PeerSettings
from processors.azure_speech.peer.wire import binary_message, new_request_id, text_message
from tests.azure_speech.conftest import PeerFactory
from tests.processors.stt.speech import silence, utterance

KEY = "peer-test-key-0001"
CLAIM = "I want to file a claim for my car accident"
AGENT = "yes please transfer me to an agent"


@dataclass
class Heard:
    events: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) in order
    offsets: list[int] = field(default_factory=list)  # recognized offsets, ticks
    canceled: list[tuple[str, str, str]] = field(default_factory=list)  # reason, code, details
    stopped: threading.Event = field(default_factory=threading.Event)


def recognize(host: str, pcm: bytes, *, key: str | None = KEY, token: str | None = None) -> Heard:
    """Continuous recognition of ``pcm`` (16 kHz) pushed in 20 ms pieces; blocks until stopped."""
    heard = Heard()
    config = sdk.SpeechConfig(host=host, subscription=key)
    if token is not None:
        config.authorization_token = token
    config.output_format = sdk.OutputFormat.Detailed
    fmt = sdk.audio.AudioStreamFormat(samples_per_second=16000, bits_per_sample=16, channels=1)
    push = sdk.audio.PushAudioInputStream(fmt)
    rec = sdk.SpeechRecognizer(config, audio_config=sdk.audio.AudioConfig(stream=push))
    rec.recognizing.connect(lambda e: heard.events.append(("recognizing", e.result.text)))

    def recognized(e: Any) -> None:
        heard.events.append(("recognized", e.result.text))
        heard.offsets.append(e.result.offset)

    rec.recognized.connect(recognized)
    rec.canceled.connect(lambda e: heard.canceled.append(
        (e.cancellation_details.reason.name, e.cancellation_details.code.name, e.cancellation_details.error_details)))
    rec.session_stopped.connect(lambda e: heard.stopped.set())
    rec.start_continuous_recognition_async().get()
    for i in range(0, len(pcm), 640):
        push.write(pcm[i : i + 640])
    push.close()
    heard.stopped.wait(60)
    rec.stop_continuous_recognition_async().get()
    return heard


async def run(host: str, pcm: bytes, **kw: Any) -> Heard:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: recognize(host, pcm, **kw))


def two_sentences() -> bytes:
    return utterance(CLAIM) + silence(700) + utterance(AGENT) + silence(700)


async def test_partials_then_finals_equal_to_what_the_peer_recognised(make_peer: PeerFactory) -> None:
    peer, host = await make_peer(key=KEY)
    heard = await run(host, two_sentences())
    finals = [t for k, t in heard.events if k == "recognized"]
    assert finals == peer.phrases and len(finals) == 2
    assert finals[1] == "Yes please transfer me to an agent."
    first_final = heard.events.index(("recognized", finals[0]))
    partials = [t for k, t in heard.events[:first_final] if k == "recognizing"]
    assert len(partials) >= 3 and partials[-1].split()[:2] == ["i", "want"]
    # offsets (100 ns ticks): the first voiced frame is 340-360 ms (300 ms of padding, then
    # Piper's quiet onset); the phrase starts with the 200 ms of pre-roll that ends with it.
    assert heard.offsets[0] == 1_600_000
    assert heard.offsets[1] > heard.offsets[0] + len(utterance(CLAIM)) // 32 * 10_000
    assert heard.canceled == [("EndOfStream", "NoError", "")]
    assert peer.requests[0]["path"] == "/speech/recognition/conversation/cognitiveservices/v1"
    assert "format=detailed" in peer.requests[0]["query"] and peer.requests[0]["auth"] == "key"


async def test_wrong_key_is_a_401_the_sdk_reports(make_peer: PeerFactory) -> None:
    peer, host = await make_peer(key=KEY)
    heard = await run(host, utterance(CLAIM), key="not-the-key-123")
    assert heard.canceled[0][:2] == ("Error", "AuthenticationFailure")
    assert "401" in heard.canceled[0][2]
    assert peer.counters.refused == {401: 1} and peer.counters.connections["recognition"] == 0


async def test_bearer_token_is_accepted(make_peer: PeerFactory) -> None:
    peer, host = await make_peer(key=KEY, tokens={"tok-1"})
    heard = await run(host, utterance(AGENT) + silence(700), key=None, token="tok-1")
    assert [t for k, t in heard.events if k == "recognized"] == peer.phrases == ["Yes please transfer me to an agent."]
    assert peer.requests[0]["auth"] == "token"


@pytest.mark.parametrize("kind", ["disconnect", "error", "throttle"])
async def test_transient_faults_cost_no_words(make_peer: PeerFactory, kind: str) -> None:
    """The SDK reconnects (or retries the upgrade) and resends what was not acknowledged."""
    peer, host = await make_peer(key=KEY)
    peer.inject(Fault(kind, after_ms=1200))  # mid-way through the first sentence
    heard = await run(host, two_sentences())
    finals = [t for k, t in heard.events if k == "recognized"]
    assert finals[-1] == "Yes please transfer me to an agent."
    assert len(finals) == 2 and finals == peer.phrases[-2:]
    assert peer.counters.faults == [f"recognition:{kind}"]
    if kind == "throttle":
        assert peer.counters.refused == {429: 1} and peer.counters.connections["recognition"] == 1
    else:
        assert peer.counters.connections["recognition"] == 2


async def test_garbage_from_a_client_closes_only_that_connection(make_peer: PeerFactory) -> None:
    peer, host = await make_peer(key=KEY)
    headers = {"Ocp-Apim-Subscription-Key": KEY}
    url = f"{host}/speech/recognition/conversation/cognitiveservices/v1?language=en-US"
    async with connect(url, additional_headers=headers, subprotocols=["USP"]) as bad:  # type: ignore[list-item]
        await bad.send(b"\x00\xffnot a header block")
        with pytest.raises(ConnectionClosed) as closed:
            await bad.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    assert "header length 255 does not fit" in closed.value.rcvd.reason
    # a well-behaved client on the same peer is served as before
    heard = await run(host, utterance(AGENT) + silence(700))
    assert peer.phrases == ["Yes please transfer me to an agent."]
    assert heard.canceled == [("EndOfStream", "NoError", "")]


async def test_raw_protocol_turn(make_peer: PeerFactory) -> None:
    """A client nobody on the team wrote: the documented messages, in order, echoing X-RequestId."""
    peer, host = await make_peer(settings=PeerSettings(segmentation_silence_ms=300))
    rid = new_request_id()
    wav = (b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80>\x00\x00\x00}\x00\x00"
           b"\x02\x00\x10\x00data\x00\x00\x00\x00")
    url = f"{host}/speech/recognition/interactive/cognitiveservices/v1?language=en-US"
    async with connect(url, subprotocols=["USP"]) as ws:  # type: ignore[list-item]
        await ws.send(text_message("speech.config", "{}", request_id=None))
        await ws.send(text_message("speech.context", "{}", request_id=rid))
        await ws.send(binary_message("audio", wav, request_id=rid, headers={"X-StreamId": "1"}))
        pcm = utterance(AGENT)
        for i in range(0, len(pcm), 3200):
            await ws.send(binary_message("audio", pcm[i : i + 3200], request_id=rid, headers={"X-StreamId": "1"}))
        await ws.send(binary_message("audio", b"", request_id=rid, headers={"X-StreamId": "1"}))
        paths: list[str] = []
        while not paths or paths[-1] != "turn.end":
            message = await asyncio.wait_for(ws.recv(), 30)
            assert isinstance(message, str)
            head = message.split("\r\n\r\n", 1)[0]
            assert f"X-RequestId:{rid}" in head
            paths.append(next(h[5:] for h in head.split("\r\n") if h.startswith("Path:")))
    compact = [p for i, p in enumerate(paths) if p != "speech.hypothesis" or paths[i - 1] != "speech.hypothesis"]
    assert compact == ["turn.start", "speech.startDetected", "speech.hypothesis", "speech.phrase",
                       "speech.endDetected", "turn.end"]
    assert peer.phrases == ["Yes please transfer me to an agent."]


async def test_faults_route(make_peer: PeerFactory) -> None:
    peer, host = await make_peer()
    base = host.replace("ws://", "http://")
    async with httpx.AsyncClient(base_url=base) as client:
        ok = await client.post("/peer/faults", json={"kind": "disconnect", "after_ms": 500, "route": "recognition"})
        assert ok.status_code == 201 and ok.json() == {"queued": 1}
        bad = await client.post("/peer/faults", json={"kind": "explode"})
        assert bad.status_code == 400 and "'kind' must be one of" in bad.json()["error"]
        bad = await client.post("/peer/faults", content=b"{not json")
        assert bad.status_code == 400
        assert peer.faults == [Fault("disconnect", 1, 500, "recognition")]
        assert (await client.delete("/peer/faults")).status_code == 204
        state = await client.get("/peer/state")
        assert state.json()["pending_faults"] == 0 and state.json()["connections"]["recognition"] == 0


@pytest.mark.parametrize(("text", "lexical", "display"), [
    ("i want to file a claim", "i want to file a claim", "I want to file a claim."),
    (" I went to file a claim for my car accident. ", "i went to file a claim for my car accident",
     "I went to file a claim for my car accident."),
    ("Is it open?", "is it open", "Is it open?"),
    ("  ", "", ""),
])
def test_lexical_and_display_forms(text: str, lexical: str, display: str) -> None:
    from processors.azure_speech.peer.recognition import forms

    assert forms(text) == (lexical, display)
