"""The Azure TTS engine and the TTS node on it, through the real Speech SDK against the peer."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence

import azure.cognitiveservices.speech as speechsdk
import pytest
from azure.core.credentials import AccessToken

from pipeline import CallContext, Graph, run_call
from pipeline.errors import ConfigError
from pipeline.frames import (
    AgentSwitch,
    AudioFormat,
    FlushStart,
    LLMToken,
    OutputAudio,
    ResponseEnd,
    ResponseStart,
    TTSText,
)
from pipeline.settings import coerce_settings
from pipeline.testing import Collector, Feeder, run_processor
from processors.azure_speech.config import AzureSpeechSettings, EntraToken, speech_config
from processors.azure_speech.peer.app import Fault
from processors.azure_speech.peer.synthesis import SynthesisState
from processors.azure_speech.ssml import Voice
from processors.text.sentences_node import SentencesProcessor
from processors.tts.azure_engine import AzureTTSEngine, AzureTTSError, AzureTTSSettings
from processors.tts.engine import clean_text
from processors.tts.node import TTSProcessor, TTSSettings

from ._synthesis_peer import synthesis_peer

SENTENCE = "I am sorry to hear about your accident, I can start a claim for you right away."


@pytest.fixture
async def peer() -> AsyncIterator[tuple[SynthesisState, str]]:
    async with synthesis_peer(key="peer-key") as served:
        yield served


@pytest.fixture
def azure_env(monkeypatch: pytest.MonkeyPatch, peer: tuple[SynthesisState, str]) -> Iterator[SynthesisState]:
    """The environment pointing the TTS node's Azure engine at the peer."""
    monkeypatch.setenv("AZURE_SPEECH_HOST", peer[1])
    monkeypatch.setenv("AZURE_SPEECH_KEY", "peer-key")
    yield peer[0]


def engine(host: str, voice: str = "en-US-JennyNeural", **settings: object) -> AzureTTSEngine:
    return AzureTTSEngine(lambda: speechsdk.SpeechConfig(host=host, subscription="peer-key"), Voice(name=voice),
                          AzureTTSSettings(**settings))  # type: ignore[arg-type]


def audio_of(frames: Sequence[object], turn: int | None = None) -> bytes:
    return b"".join(f.pcm for f in frames if isinstance(f, OutputAudio) and (turn is None or f.turn == turn))


async def test_first_audio_arrives_before_the_clause_is_done(peer: tuple[SynthesisState, str]) -> None:
    state, host = peer
    state.peer.settings.chunk_ms = 40
    state.hold_after_chunks = 1
    tts = await asyncio.to_thread(engine, host)
    stream = tts.stream(SENTENCE)
    first = await anext(stream)
    # The service holds the rest of the clause: the first piece got out on its own.
    assert len(first) == 1280 and (state.chunks, state.completed) == (1, 0)
    state.release.set()
    rest = [chunk async for chunk in stream]
    assert len(first) + sum(map(len, rest)) == state.audio_bytes > 32000 * 2  # over two seconds at 16 kHz
    assert (state.completed, state.formats, state.voices) == (1, ["raw-16khz-16bit-mono-pcm"], ["en-US-JennyNeural"])


async def test_connection_is_reused_across_turns_and_24khz(peer: tuple[SynthesisState, str]) -> None:
    state, host = peer
    tts = await asyncio.to_thread(engine, host, sample_rate=24000)
    assert tts.sample_rate == 24000
    for text in ("One.", "Two.", "Three."):
        audio = b"".join([chunk async for chunk in tts.stream(text)])
        assert len(audio) > 0
    assert (state.peer.counters.connections["synthesis"], state.completed, tts.created) == (1, 3, 1)
    assert state.formats == ["raw-24khz-16bit-mono-pcm"] * 3


async def test_closing_the_stream_stops_the_service(peer: tuple[SynthesisState, str]) -> None:
    state, host = peer
    state.peer.settings.chunk_ms = 20
    state.hold_after_chunks = 2
    tts = await asyncio.to_thread(engine, host)
    stream = tts.stream(SENTENCE)
    got = [await anext(stream), await anext(stream)]
    await stream.aclose()  # what a FlushStart does through Processor.interruptible
    await state.wait_for(lambda s: s.stopped == 1)
    assert (state.chunks, state.completed, tts.stopped, sum(map(len, got))) == (2, 0, 1, 1280)
    state.hold_after_chunks = None
    audio = b"".join([chunk async for chunk in tts.stream("Next turn.")])
    assert len(audio) == state.audio_bytes - 1280
    # The stopped clause's connection was closed by the SDK; the engine opened the next
    # one ahead, on the same synthesizer.
    assert (state.peer.counters.connections["synthesis"], state.completed, tts.created) == (2, 1, 1)


async def test_hostile_text_reaches_the_service_as_text(peer: tuple[SynthesisState, str]) -> None:
    state, host = peer
    tts = await asyncio.to_thread(engine, host)
    hostile = 'x < 5 & "y" ]]> </voice><voice name="en-US-GuyNeural">pwned'
    audio = b"".join([chunk async for chunk in tts.stream(hostile)])
    assert len(audio) > 0 and state.voices == ["en-US-JennyNeural"]
    assert state.texts == [clean_text(hostile)] and "pwned" in state.texts[0]


async def test_unknown_voice_is_refused_once(peer: tuple[SynthesisState, str]) -> None:
    state, host = peer
    tts = await asyncio.to_thread(engine, host, voice="en-US-NoSuchVoice")
    for _ in range(2):
        with pytest.raises(AzureTTSError, match="Unsupported voice en-US-NoSuchVoice") as caught:
            _ = [chunk async for chunk in tts.stream("Hello.")]
        assert caught.value.code == "BadRequest"
    assert state.refused == 1  # the second clause was refused without asking the service


async def test_flush_stops_azure_synthesis_in_the_node(azure_env: SynthesisState) -> None:
    state = azure_env
    state.peer.settings.chunk_ms = 20
    state.hold_after_chunks = 3
    node = TTSProcessor(TTSSettings(engine="azure", voice="en-US-AriaNeural", fallback=None), name="tts")
    flushed = asyncio.Event()

    class FlushOnFirstAudio(Collector):
        async def process(self, frame):  # type: ignore[no-untyped-def]
            await super().process(frame)
            if isinstance(frame, OutputAudio) and not flushed.is_set():
                flushed.set()
                self.emit(FlushStart(turn=1))

    sink = FlushOnFirstAudio()
    graph = Graph()
    second = "And this is the next answer."
    feeder = Feeder([TTSText(SENTENCE, turn=1), TTSText(second, turn=2)])
    graph.chain(feeder, node, sink)
    async def release_after_stop() -> None:
        await state.wait_for(lambda s: s.stopped == 1)
        state.hold_after_chunks = None
        state.release.set()

    helper = asyncio.create_task(release_after_stop())
    result = await run_call(graph, CallContext(), timeout=30)
    await helper
    assert result.reason == "eos" and result.errors == ()
    assert len(audio_of(sink.frames, 1)) == 640  # the first chunk only: the flush stopped the rest
    assert (state.texts, state.stopped) == ([SENTENCE, second], 1)
    assert len(audio_of(sink.frames, 2)) == state.audio_bytes - 3 * 640  # the node went on with turn 2
    assert [f for f in sink.controls if isinstance(f, AudioFormat)] == [AudioFormat(16000, stream="out")]


async def test_agent_switch_changes_the_voice(azure_env: SynthesisState) -> None:
    state = azure_env
    settings = TTSSettings(engine="azure", voice="en-US-JennyNeural", fallback=None,
                           azure=AzureTTSSettings(voices={"billing": "en-GB-RyanNeural"}))
    node = TTSProcessor(settings, name="tts")

    class SwitchAfterFirst(Collector):
        async def process(self, frame):  # type: ignore[no-untyped-def]
            await super().process(frame)
            if isinstance(frame, OutputAudio) and frame.turn == 1 and not switched:
                switched.append(frame)
                self.emit(AgentSwitch(agent_from="main", agent_to="billing", turn=1))

    switched: list[OutputAudio] = []
    sink = SwitchAfterFirst()
    graph = Graph()
    graph.chain(Feeder([TTSText("Hello.", turn=1), TTSText("Billing here.", turn=2)]), node, sink)
    result = await run_call(graph, CallContext(), timeout=30)
    assert result.errors == ()
    assert state.voices == ["en-US-JennyNeural", "en-GB-RyanNeural"]
    assert len(audio_of(sink.frames, 2)) > 0


@pytest.mark.parametrize("fault", ["drop", "voice"])
async def test_failure_falls_back_without_losing_the_turn(azure_env: SynthesisState, fault: str) -> None:
    state = azure_env
    voice = "en-US-NoSuchVoice" if fault == "voice" else "en-US-JennyNeural"
    if fault == "drop":
        state.peer.settings.chunk_ms = 20
        state.peer.inject(Fault("disconnect", times=None, after_ms=20, route="synthesis"))
    node = TTSProcessor(TTSSettings(engine="azure", voice=voice, fallback="espeak",
                                    azure=AzureTTSSettings(retry_s=600)), name="tts")
    out, result = await run_processor(node, [TTSText("Your claim is open.", turn=1),
                                             TTSText("An agent will call you.", turn=2)])
    assert result.errors == ()
    texts = [f.text for f in out.frames if isinstance(f, TTSText)]
    assert texts == ["Your claim is open.", "An agent will call you."]
    espeak_rate = 22050
    # Each clause spoken whole by eSpeak (the fallback); only the first reached the service.
    for turn in (1, 2):
        assert len(audio_of(out.frames, turn)) / (espeak_rate * 2) > 0.5
    if fault == "voice":  # known bad: the second clause was not sent
        assert (state.refused, state.texts) == (1, [])
    else:  # a drop (1011) may be transient: each clause tries Azure first
        assert state.texts == ["Your claim is open.", "An agent will call you."]


async def test_unreachable_service_opens_the_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AZURE_SPEECH_HOST", f"ws://127.0.0.1:{port}")
    monkeypatch.setenv("AZURE_SPEECH_KEY", "peer-key")
    node = TTSProcessor(TTSSettings(engine="azure", fallback="espeak", azure=AzureTTSSettings(warm=0, retry_s=600)),
                        name="tts")
    out, result = await run_processor(node, [TTSText("Hello there.", turn=1), TTSText("Goodbye now.", turn=2)],
                                      timeout=60)
    assert result.errors == ()
    for turn in (1, 2):
        assert len(audio_of(out.frames, turn)) / (22050 * 2) > 0.4  # said by eSpeak
    engine = node.engine
    assert isinstance(engine, AzureTTSEngine)
    # One clause tried the service; the breaker sent the second straight to the fallback.
    assert (engine.clauses, engine.created) == (1, 1)


async def test_cache_prefill_uses_the_blocking_form(azure_env: SynthesisState) -> None:
    state = azure_env
    node = TTSProcessor(TTSSettings(engine="azure", voice="en-US-JennyNeural", fallback=None, cache=True,
                                    prefill=("Welcome to the claims line.",)), name="tts")
    out, result = await run_processor(node, [TTSText("Welcome to the claims line.", turn=1)])
    assert result.errors == ()
    assert state.texts == ["Welcome to the claims line."]  # synthesised once, at set-up
    assert node.cached_clauses == 1 and len(audio_of(out.frames, 1)) > 0


@pytest.mark.parametrize(("raw", "named"), [
    ({"engine": "azure", "azure": {"style": "very cheerful"}}, "style"),
    ({"engine": "azure", "azure": {"voices": {"billing": 'x" y'}}}, "name"),
    ({"engine": "azure", "azure": {"sample_rate": 11025}}, "sample_rate"),
])
def test_bad_azure_settings_fail_at_load(raw: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named) as caught:
        coerce_settings(TTSSettings, raw, file="azure.yaml", node="tts")
    assert "node 'tts'" in str(caught.value)


async def test_a_silent_service_does_not_hold_the_turn(azure_env: SynthesisState) -> None:
    state = azure_env
    state.hold_after_chunks = 0  # the service starts the turn, then sends no audio
    node = TTSProcessor(TTSSettings(engine="azure", fallback="espeak", azure=AzureTTSSettings(timeout_s=0.3)),
                        name="tts")
    out, result = await run_processor(node, [TTSText("Are you still there?", turn=1)])
    assert result.errors == ()
    assert len(audio_of(out.frames, 1)) / (22050 * 2) > 0.4  # said by eSpeak
    await state.wait_for(lambda s: s.stopped == 1)  # and the service was told to stop
    assert (state.peer.counters.turns["synthesis"], state.chunks) == (1, 0)


async def test_synthesis_starts_on_the_first_clause_while_the_llm_streams(azure_env: SynthesisState) -> None:
    state = azure_env
    first_audio = asyncio.Event()
    order: list[str] = []
    words = "I am sorry to hear about your accident, I can start a claim for you right away.".split()

    class SlowLLM(Feeder):
        """Streams the answer's tokens; holds the end until the caller hears the start."""

        async def run(self) -> None:
            await self.push(ResponseStart(turn=1))
            for word in words[:7]:
                await self.push(LLMToken(word + " ", turn=1))
            await asyncio.wait_for(first_audio.wait(), 10)
            order.append("llm continues")
            for word in words[7:]:
                await self.push(LLMToken(word + " ", turn=1))
            await self.push(ResponseEnd(turn=1))

    class Ear(Collector):
        async def process(self, frame):  # type: ignore[no-untyped-def]
            await super().process(frame)
            if isinstance(frame, OutputAudio) and not first_audio.is_set():
                order.append("first audio")
                first_audio.set()

    sink = Ear()
    graph = Graph()
    graph.chain(SlowLLM(), SentencesProcessor(name="sentences"), TTSProcessor(
        TTSSettings(engine="azure", fallback=None, prefill_brain=False), name="tts"), sink)
    result = await run_call(graph, CallContext(), timeout=30)
    assert result.errors == ()
    assert order == ["first audio", "llm continues"]
    assert state.texts[0] == "I am sorry to hear" and len(state.texts) >= 2
    assert " ".join(state.texts) == " ".join(words)


class _Credential:
    """A ``TokenCredential`` handing out numbered tokens that expire ``life_s`` after issue."""

    def __init__(self, life_s: float) -> None:
        self.life_s = life_s
        self.issued = 0

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.issued += 1
        return AccessToken(f"token-{self.issued}", int(time.time() + self.life_s))


async def test_entra_token_is_refreshed_before_it_expires(peer: tuple[SynthesisState, str]) -> None:
    state, host = peer
    credential = _Credential(life_s=60)  # inside EntraToken's 300 s margin: stale at once, every time
    token = EntraToken("/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/a",
                       credential=credential)
    prefix = "aad#/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/a#"
    state.peer.tokens.update({prefix + "token-2", prefix + "token-3"})  # what the peer accepts instead of its key
    service = AzureSpeechSettings(auth="host", host=host)
    tts = await asyncio.to_thread(
        AzureTTSEngine, lambda: speech_config(service, token=token.fetch()), Voice(name="en-US-JennyNeural"),
        AzureTTSSettings(warm=0), token=token)
    assert len(b"".join([chunk async for chunk in tts.stream("One.")])) > 0
    # The service drops the connection before the next clause's audio; the SDK connects
    # again by itself and says the clause.
    state.peer.inject(Fault("disconnect", route="synthesis"))
    assert len(b"".join([chunk async for chunk in tts.stream("Two.")])) > 0
    # A token per clause (each found the last one within its margin of expiry), set on the
    # synthesizer: the connection it opens next presents it; a live one goes on as it is.
    assert credential.issued == 3
    assert state.credentials == ["token:" + prefix + "token-2", "token:" + prefix + "token-3"]
    assert state.texts == ["One.", "Two.", "Two."] and state.peer.counters.faults == ["synthesis:disconnect"]


@pytest.mark.parametrize(("env", "named"), [
    ({}, "Azure Speech is not configured: set AZURE_SPEECH_KEY + AZURE_SPEECH_REGION"),
    ({"AZURE_SPEECH_KEY": "0123456789abcdef", "AZURE_SPEECH_REGION": "West Europe"}, "AZURE_SPEECH_REGION 'West"),
    ({"AZURE_SPEECH_HOST": "http://127.0.0.1:1/path"}, "AZURE_SPEECH_HOST 'http://127.0.0.1:1/path' must be"),
])
async def test_bad_service_settings_fall_back_at_set_up(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture,
                                                        env: dict[str, str], named: str) -> None:
    for name in ("HOST", "KEY", "REGION", "RESOURCE_ID", "LANGUAGE"):
        monkeypatch.delenv(f"AZURE_SPEECH_{name}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    node = TTSProcessor(TTSSettings(engine="azure", fallback="espeak"), name="tts")
    out, result = await run_processor(node, [TTSText("Hello there.", turn=1)])
    assert result.errors == ()
    assert node.engine is not None and node.engine.name == "espeak"
    assert len(audio_of(out.frames, 1)) / (22050 * 2) > 0.4
    assert any(named in record.getMessage() and "azure engine failed to load" in record.getMessage()
               for record in caplog.records)


@pytest.mark.parametrize(("refusal", "code"), [("wrong key", "AuthenticationFailure"), ("auth", "AuthenticationFailure"),
                                               ("throttle", "TooManyRequests")])
async def test_a_refused_connection_falls_back_and_opens_the_breaker(
        azure_env: SynthesisState, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        refusal: str, code: str) -> None:
    state = azure_env
    if refusal == "wrong key":
        monkeypatch.setenv("AZURE_SPEECH_KEY", "not-the-key")
    else:
        state.peer.inject(Fault(refusal, times=None, route="synthesis"))  # type: ignore[arg-type]
    node = TTSProcessor(TTSSettings(engine="azure", fallback="espeak", azure=AzureTTSSettings(warm=0, retry_s=600)),
                        name="tts")
    out, result = await run_processor(node, [TTSText("Hello there.", turn=1), TTSText("Goodbye now.", turn=2)])
    assert result.errors == ()
    for turn in (1, 2):
        assert len(audio_of(out.frames, turn)) / (22050 * 2) > 0.4  # said by eSpeak
    status = 429 if code == "TooManyRequests" else 401
    # The first clause's upgrade was refused (the SDK tries a throttled one twice); the
    # second clause never asked.
    assert state.peer.counters.refused == {status: 2 if status == 429 else 1} and state.texts == []
    assert state.peer.counters.connections["synthesis"] == 0
    assert any(f"Azure TTS failed ({code})" in r.getMessage() and "using the fallback for 600 s" in r.getMessage()
               for r in caplog.records)


async def test_an_expired_credential_mid_clause_falls_back(azure_env: SynthesisState) -> None:
    state = azure_env
    state.peer.settings.chunk_ms = 20
    state.peer.inject(Fault("expire", after_ms=40, route="synthesis"))
    node = TTSProcessor(TTSSettings(engine="azure", fallback="espeak", azure=AzureTTSSettings(retry_s=600)),
                        name="tts")
    out, result = await run_processor(node, [TTSText("Your claim is open.", turn=1),
                                             TTSText("An agent will call you.", turn=2)])
    assert result.errors == ()
    for turn in (1, 2):  # both said: the first by eSpeak after the expiry, the second too
        assert len(audio_of(out.frames, turn)) / (22050 * 2) > 0.5
    # The key was rotated: the SDK's reconnect for the second clause was refused (401),
    # which opened the breaker.
    assert state.texts == ["Your claim is open."] and state.peer.counters.refused == {401: 1}
    assert state.peer.counters.faults == ["synthesis:expire"]
