"""The peer's synthesis service through the real Speech SDK (``speak_*`` against ``SpeechConfig(host=)``)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import azure.cognitiveservices.speech as speechsdk
import pytest

from processors.azure_speech.peer.app import Fault, FaultKind
from processors.azure_speech.peer.synthesis import SynthesisState, _render

from ._synthesis_peer import synthesis_peer

JENNY = "en-US-JennyNeural"


@pytest.fixture
async def peer() -> AsyncIterator[tuple[SynthesisState, str]]:
    async with synthesis_peer() as served:
        yield served


def synthesizer(host: str, fmt: speechsdk.SpeechSynthesisOutputFormat = speechsdk.SpeechSynthesisOutputFormat.
                Raw16Khz16BitMonoPcm, voice: str = JENNY) -> speechsdk.SpeechSynthesizer:
    config = speechsdk.SpeechConfig(host=host, subscription="peer-key")
    config.set_speech_synthesis_output_format(fmt)
    config.speech_synthesis_voice_name = voice
    return speechsdk.SpeechSynthesizer(speech_config=config, audio_config=None)


async def say(synth: speechsdk.SpeechSynthesizer, text: str, ssml: bool = False) -> Any:
    """The SDK's blocking ``speak_*_async().get()``, off the loop (the peer runs on it)."""
    speak = synth.speak_ssml_async if ssml else synth.speak_text_async
    return await asyncio.to_thread(lambda: speak(text).get())


class Chunks:
    """The sizes of the ``synthesizing`` events of a synthesizer, which the SDK raises on
    its own threads, possibly after ``speak_*().get()`` returned: tests wait for them."""

    def __init__(self, synth: speechsdk.SpeechSynthesizer) -> None:
        self.sizes: list[int] = []
        self._loop = asyncio.get_running_loop()
        self._more = asyncio.Event()
        synth.synthesizing.connect(self._on)

    def _on(self, event: Any) -> None:
        self.sizes.append(len(event.result.audio_data))
        self._loop.call_soon_threadsafe(self._more.set)

    async def until(self, total: int) -> list[int]:
        while sum(self.sizes) < total:
            self._more.clear()
            await asyncio.wait_for(self._more.wait(), 10)
        return self.sizes


def chunks_of(pcm: bytes, rate: int, chunk_ms: int = 100) -> int:
    step = rate * 2 * chunk_ms // 1000
    return -(-len(pcm) // step)


async def test_speak_text_streams_the_peers_audio(peer: tuple[SynthesisState, str]) -> None:
    state, host = peer
    synth = synthesizer(host)
    chunks = Chunks(synth)
    result = await say(synth, "Hello there, how can I help?")
    assert result.reason == speechsdk.ResultReason.SynthesizingAudioCompleted
    audio = result.audio_data
    pieces = await chunks.until(len(audio))
    assert len(audio) == state.audio_bytes > 16000  # all the peer sent: over half a second of speech
    assert sum(pieces) == len(audio) and len(pieces) == chunks_of(audio, 16000) > 1
    assert (state.texts, state.voices) == (["Hello there, how can I help?"], [JENNY])
    assert (state.peer.counters.connections["synthesis"], state.peer.counters.turns["synthesis"], state.completed, state.chunks) == (1, 1, 1, len(pieces))


async def test_connection_is_kept_across_clauses(peer: tuple[SynthesisState, str]) -> None:
    state, host = peer
    synth = synthesizer(host)
    for text in ("One.", "Two.", "Three."):
        assert (await say(synth, text)).reason == speechsdk.ResultReason.SynthesizingAudioCompleted
    assert state.texts == ["One.", "Two.", "Three."]
    assert (state.peer.counters.connections["synthesis"], state.completed) == (1, 3)


@pytest.mark.parametrize(("fmt", "rate", "riff"), [
    (speechsdk.SpeechSynthesisOutputFormat.Raw24Khz16BitMonoPcm, 24000, False),
    (speechsdk.SpeechSynthesisOutputFormat.Raw8Khz16BitMonoPcm, 8000, False),
    (speechsdk.SpeechSynthesisOutputFormat.Riff16Khz16BitMonoPcm, 16000, True),
])
async def test_output_formats(peer: tuple[SynthesisState, str], fmt: speechsdk.SpeechSynthesisOutputFormat,
                              rate: int, riff: bool) -> None:
    state, host = peer
    result = await say(synthesizer(host, fmt), "Format check.")
    reference = await asyncio.to_thread(_render, "espeak", "Format check.", 16000)
    assert result.reason == speechsdk.ResultReason.SynthesizingAudioCompleted
    audio = result.audio_data
    # The SDKs ask the service for raw PCM and write a riff format's WAV header themselves.
    assert state.formats == [f"raw-{rate // 1000}khz-16bit-mono-pcm"]
    if riff:
        assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
        fmt_size = struct.unpack("<I", audio[16:20])[0]
        assert struct.unpack("<HHIIHH", audio[20:36]) == (1, 1, rate, rate * 2, 2, 16)
        data = 20 + fmt_size
        assert audio[data:data + 4] == b"data"
        audio = audio[data + 8:]
        assert len(audio) == state.audio_bytes
    else:
        assert len(audio) == state.audio_bytes
    # The same words at the asked rate (eSpeak's samples vary a little between runs).
    assert len(audio) / (2 * rate) == pytest.approx(len(reference) / 32000, rel=0.05)


async def test_ssml_voice_style_and_escaped_text(peer: tuple[SynthesisState, str]) -> None:
    state, host = peer
    ssml = ('<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xmlns:mstts="http://www.w3.org/2001/mstts"'
            ' xml:lang="en-GB"><voice name="en-GB-SoniaNeural"><mstts:express-as style="cheerful">'
            '<prosody rate="+10%">Fish &amp; chips &lt;3</prosody></mstts:express-as></voice></speak>')
    result = await say(synthesizer(host), ssml, ssml=True)
    assert result.reason == speechsdk.ResultReason.SynthesizingAudioCompleted
    assert (state.texts, state.voices) == (["Fish & chips <3"], ["en-GB-SoniaNeural"])


@pytest.mark.parametrize(("ssml", "detail"), [
    ('<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
     '<voice name="en-US-NoSuchVoice">hi</voice></speak>', "Unsupported voice en-US-NoSuchVoice."),
    ('<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis"><voice name="en-US-JennyNeural">'
     "unclosed</speak>", "not well-formed"),
])
async def test_refused_request_is_a_bad_request(peer: tuple[SynthesisState, str], ssml: str, detail: str) -> None:
    state, host = peer
    synth = synthesizer(host)
    result = await say(synth, ssml, ssml=True)
    assert result.reason == speechsdk.ResultReason.Canceled
    details = result.cancellation_details
    assert details.error_code == speechsdk.CancellationErrorCode.BadRequest
    assert "1007" in details.error_details and detail in details.error_details
    assert (state.refused, state.peer.counters.turns["synthesis"]) == (1, 0)
    # The peer goes on: the same synthesizer reconnects and speaks.
    assert (await say(synth, "Still here.")).reason == speechsdk.ResultReason.SynthesizingAudioCompleted
    assert state.peer.counters.connections["synthesis"] == 2


@pytest.mark.parametrize("kind", ["disconnect", "garbage", "expire", "error"])
async def test_mid_stream_faults_cancel_the_clause(peer: tuple[SynthesisState, str], kind: FaultKind) -> None:
    state, host = peer
    state.peer.settings.chunk_ms = 20
    state.peer.inject(Fault(kind, after_ms=40, route="synthesis"))
    synth = synthesizer(host)
    chunks = Chunks(synth)
    result = await say(synth, "This sentence is cut short by the peer.")
    assert result.reason == speechsdk.ResultReason.Canceled
    assert result.cancellation_details.reason == speechsdk.CancellationReason.Error
    # Two 20 ms chunks at 16 kHz were sent, then the fault: the SDK drops what it had
    # not handed out yet when the connection breaks; nothing comes after.
    assert state.chunks == 2 and len(result.audio_data) in (0, 640, 1280)
    assert set(await chunks.until(len(result.audio_data))) <= {640}
    assert state.peer.counters.faults == [f"synthesis:{kind}"]
    assert (await say(synth, "Back again.")).reason == speechsdk.ResultReason.SynthesizingAudioCompleted
    assert state.completed == 1


async def test_stop_speaking_stops_the_peer(peer: tuple[SynthesisState, str]) -> None:
    state, host = peer
    state.peer.settings.chunk_ms = 20
    state.hold_after_chunks = 1
    synth = synthesizer(host)
    first = asyncio.Event()
    loop = asyncio.get_running_loop()
    synth.synthesizing.connect(lambda e: loop.call_soon_threadsafe(first.set))
    future = synth.speak_text_async("A long answer the caller interrupts.")
    await asyncio.wait_for(first.wait(), 10)
    await asyncio.to_thread(lambda: synth.stop_speaking_async().get())
    result = await asyncio.to_thread(future.get)
    assert result.reason == speechsdk.ResultReason.Canceled
    assert result.cancellation_details.reason == speechsdk.CancellationReason.CancelledByUser
    await state.wait_for(lambda s: s.stopped == 1)
    assert (state.peer.counters.turns["synthesis"], state.completed, state.chunks) == (1, 0, 1)
