"""The Azure STT adapter and the STT node on it, through the real SDK against the peer."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable

import pytest

from pipeline.errors import ServiceError
from pipeline.frames import AudioFormat, FinalTranscript, Frame, InputAudio, InterimTranscript, TurnEnd, TurnStart
from pipeline.graph import Graph
from pipeline.processor import Processor
from pipeline.runner import run_call
from pipeline.testing import Collector
from processors.azure_speech.config import AzureSpeechSettings
from processors.azure_speech.peer.app import Fault
from processors.stt.azure_engine import AzureRecognizer, AzureResult
from processors.stt.node import STTProcessor, STTSettings
from processors.stt.wer import wer
from tests.azure_speech.conftest import PeerFactory
from tests.processors.stt.speech import frames, silence, utterance

KEY = "adapter-test-key-01"
CLAIM = "I want to file a claim for my car accident"
AGENT = "yes please transfer me to an agent"
TIMEOUT = 60.0


class Results:
    """Collects an AzureRecognizer's results; records the thread each was delivered on."""

    def __init__(self) -> None:
        self.items: list[AzureResult] = []
        self.threads: set[int] = set()
        self.changed = asyncio.Event()

    def __call__(self, result: AzureResult) -> None:
        self.items.append(result)
        self.threads.add(threading.get_ident())
        self.changed.set()

    def finals(self) -> list[str]:
        return [r.text for r in self.items if r.kind == "final" and r.text]

    async def wait(self, predicate: object, timeout: float = 30.0) -> None:
        assert callable(predicate)
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def test_adapter_partials_then_finals_in_call_audio_time(make_peer: PeerFactory) -> None:
    peer, host = await make_peer(key=KEY)
    results = Results()
    rec = AzureRecognizer(AzureSpeechSettings(auth="host", host=host, key=KEY), results)
    await rec.start()
    pcm = utterance(CLAIM) + silence(700) + utterance(AGENT) + silence(700)
    for chunk in frames(pcm):
        rec.push(chunk)
    await results.wait(lambda: len(results.finals()) == 2)
    await rec.close()
    assert results.finals() == peer.phrases
    kinds = [r.kind for r in results.items]
    assert kinds.index("interim") < kinds.index("final")
    finals = [r for r in results.items if r.kind == "final"]
    # the peer's phrase starts 160 ms into the audio: call-audio ms, not ticks
    assert finals[0].start_ms == 160 and finals[0].end_ms > finals[0].start_ms
    assert finals[1].start_ms > finals[0].end_ms
    assert 0.0 <= finals[0].confidence <= 1.0
    # the bridge: SDK callbacks ran on SDK threads, results were delivered on the loop's thread
    assert results.threads == {threading.get_ident()}
    assert rec.callback_threads and threading.get_ident() not in rec.callback_threads
    assert rec.pushed_ms == len(pcm) / 32


async def test_token_expiry_restarts_with_a_fresh_token_and_replays(make_peer: PeerFactory) -> None:
    peer, host = await make_peer(key="no-key-is-used-here", tokens={"token-1", "token-2"})
    issued = itertools.count(1)
    fetched: list[str] = []

    async def token() -> str:
        fetched.append(f"token-{next(issued)}")
        return fetched[-1]

    peer.inject(Fault("expire", after_ms=1200))  # token-1 expires mid-way through the claim
    results = Results()
    rec = AzureRecognizer(AzureSpeechSettings(auth="host", host=host), results, token=token)
    await rec.start()
    pcm = utterance(CLAIM) + silence(700) + utterance(AGENT) + silence(700)
    for chunk in frames(pcm):
        rec.push(chunk)
    await results.wait(lambda: results.finals()[-1:] == ["Yes please transfer me to an agent."])
    await rec.close()
    assert fetched == ["token-1", "token-2"] and rec.restarts == 1
    assert peer.counters.refused == {401: 1}  # the SDK's own reconnect with the expired token
    assert wer(CLAIM, results.finals()[0]) <= 0.3  # the words before the expiry were replayed
    assert [r.kind for r in results.items].count("failed") == 0


async def test_wrong_key_is_reported_as_failed(make_peer: PeerFactory) -> None:
    _, host = await make_peer(key=KEY)
    results = Results()
    rec = AzureRecognizer(AzureSpeechSettings(auth="host", host=host, key="wrong-key-000"), results)
    await rec.start()
    rec.push(silence(100))
    await results.wait(lambda: any(r.kind == "failed" for r in results.items))
    await rec.close()
    failed = [r for r in results.items if r.kind == "failed"]
    assert len(failed) == 1 and failed[0].error.startswith("AuthenticationFailure: ")
    assert "401" in failed[0].error and rec.failed


async def line_silence(rec: AzureRecognizer, results: Results, done: Callable[[], bool]) -> None:
    """Keep the line open as a phone line does: 20 ms of silence every 20 ms until ``done()``.

    The SDK resumes a reconnected session only as new audio arrives; a real line never stops.
    """
    async with asyncio.timeout(TIMEOUT):
        while not done():
            rec.push(silence(20))
            await asyncio.sleep(0.02)  # the line's pace, not a synchronisation


class Sink(Collector):
    def __init__(self) -> None:
        super().__init__(name="sink")
        self.final_seen = asyncio.Event()
        self.interim_seen = asyncio.Event()

    async def process(self, frame: object) -> None:
        await super().process(frame)  # type: ignore[arg-type]
        if isinstance(frame, FinalTranscript):
            self.final_seen.set()
        elif isinstance(frame, InterimTranscript):
            self.interim_seen.set()


class Line(Processor):
    """The caller's line: pushes a turn's frames and waits for the turn's final.

    Audio goes faster than real time, so before ``TurnEnd`` it waits for the first interim
    (when ``hold``): as on a real line, partials arrive while the caller is still talking.
    """

    produces = (InputAudio,)

    def __init__(self, script: list[Frame], sink: Sink, *, hold: bool) -> None:
        super().__init__(name="line")
        self.script = script
        self.sink = sink
        self.hold = hold

    async def run(self) -> None:
        async with asyncio.timeout(TIMEOUT):
            for frame in self.script:
                if isinstance(frame, TurnEnd) and self.hold:
                    await self.sink.interim_seen.wait()
                await self.push(frame)
            await self.sink.final_seen.wait()


def turn_script(text: str) -> list[Frame]:
    """AudioFormat, lead-in, TurnStart 200 ms after the onset, speech, TurnEnd after 600 ms of silence."""
    lead, speech = silence(600), utterance(text, pad_ms=0)
    chunks = list(frames(lead + speech + silence(900)))
    opened = (600 + 200) // 20
    ended = (600 + len(speech) // 32 + 600) // 20
    out: list[Frame] = [AudioFormat(16000)]
    out += [InputAudio(c) for c in chunks[:opened]]
    out.append(TurnStart(turn=1, at_ms=600, stream_ms=opened * 20))
    out += [InputAudio(c) for c in chunks[opened:ended]]
    out.append(TurnEnd(turn=1, at_ms=ended * 20))
    out += [InputAudio(c) for c in chunks[ended:]]
    return out


async def run_node(settings: STTSettings, script: list[Frame], *, hold: bool = False,
                   errors: int = 0) -> tuple[STTProcessor, Sink]:
    sink = Sink()
    node = STTProcessor(settings)
    graph = Graph("azure-stt")
    graph.chain(Line(script, sink, hold=hold), node, sink)
    result = await run_call(graph, timeout=90)
    assert len(result.errors) == errors, result.errors
    sink.errors = list(result.errors)  # type: ignore[attr-defined]
    return node, sink


async def test_node_on_azure_by_configuration(make_peer: PeerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    peer, host = await make_peer(key=KEY)
    monkeypatch.setenv("AZURE_SPEECH_HOST", host)
    monkeypatch.setenv("AZURE_SPEECH_KEY", KEY)
    node, sink = await run_node(STTSettings(engine="azure"), turn_script(AGENT), hold=True)
    finals = [f for f in sink.frames if isinstance(f, FinalTranscript)]
    assert [(f.text, f.turn) for f in finals] == [("Yes please transfer me to an agent.", 1)]
    assert finals[0].text == peer.phrases[0]
    assert 400 <= finals[0].start_ms <= 800 < finals[0].end_ms
    interims = [f for f in sink.frames if isinstance(f, InterimTranscript)]
    assert interims and sink.frames.index(interims[-1]) < sink.frames.index(finals[0])
    assert node.stream is None  # no embedded engine was opened


async def test_failure_mid_turn_falls_back_without_losing_the_turn(
    make_peer: PeerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer, host = await make_peer(key=KEY)
    peer.inject(Fault("expire", after_ms=1200))  # the key is rotated mid-utterance: reconnect is a 401
    monkeypatch.setenv("AZURE_SPEECH_HOST", host)
    monkeypatch.setenv("AZURE_SPEECH_KEY", KEY)
    node, sink = await run_node(STTSettings(engine="azure", fallback="pocketsphinx"), turn_script(CLAIM), errors=1)
    finals = [f for f in sink.frames if isinstance(f, FinalTranscript)]
    assert len(finals) == 1 and finals[0].turn == 1
    assert wer(CLAIM, finals[0].text) <= 0.3, finals[0].text  # pocketsphinx heard the whole turn
    (error,) = sink.errors  # type: ignore[attr-defined]
    assert isinstance(error.error, ServiceError) and not error.fatal and error.node == node.name
    assert error.message.startswith("azure speech failed mid-call: AuthenticationFailure: WebSocket upgrade failed")
    assert node.azure is None and node.engine is not None and node.engine.name == "pocketsphinx"
    assert peer.counters.refused == {401: 1}


async def test_unconfigured_azure_falls_back_at_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "KEY", "REGION", "RESOURCE_ID"):
        monkeypatch.delenv(f"AZURE_SPEECH_{name}", raising=False)
    node, sink = await run_node(STTSettings(engine="azure"), turn_script(AGENT))
    finals = [f for f in sink.frames if isinstance(f, FinalTranscript)]
    assert len(finals) == 1 and wer(AGENT, finals[0].text) <= 0.3
    assert node.engine is not None and node.engine.name == "pocketsphinx"



async def test_restart_then_a_dropped_connection_still_recognises(make_peer: PeerFactory) -> None:
    """A recogniser restarted on a 401 recovers from a later dropped connection like the first one."""
    peer, host = await make_peer(key="no-key-is-used-here", tokens={"token-2"})
    issued = iter(["token-1", "token-2"])

    async def token() -> str:
        return next(issued)

    peer.inject(Fault("disconnect", after_ms=1200))
    results = Results()
    rec = AzureRecognizer(AzureSpeechSettings(auth="host", host=host), results, token=token)
    await rec.start()
    for chunk in frames(utterance(CLAIM) + silence(700)):
        rec.push(chunk)
    await line_silence(rec, results, lambda: bool(results.finals()))
    await rec.close()
    assert rec.restarts == 1 and peer.counters.refused == {401: 1}
    assert peer.counters.connections["recognition"] == 2
    assert wer(CLAIM, results.finals()[0]) <= 0.3


async def test_unreachable_host_falls_back_and_the_turn_is_heard(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AZURE_SPEECH_HOST", f"ws://127.0.0.1:{port}")
    monkeypatch.delenv("AZURE_SPEECH_KEY", raising=False)
    node, sink = await run_node(STTSettings(engine="azure", fallback="pocketsphinx"), turn_script(AGENT), errors=1)
    finals = [f for f in sink.frames if isinstance(f, FinalTranscript)]
    assert len(finals) == 1 and finals[0].turn == 1 and wer(AGENT, finals[0].text) <= 0.3, finals
    assert "ConnectionFailure" in sink.errors[0].message  # type: ignore[attr-defined]
    assert node.azure is None and node.engine is not None and node.engine.name == "pocketsphinx"


async def test_garbage_from_the_service_does_not_stick_the_turn(
    make_peer: PeerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer, host = await make_peer(key=KEY)
    peer.inject(Fault("garbage", after_ms=1200))
    monkeypatch.setenv("AZURE_SPEECH_HOST", host)
    monkeypatch.setenv("AZURE_SPEECH_KEY", KEY)
    node, sink = await run_node(STTSettings(engine="azure"), turn_script(AGENT))
    finals = [f for f in sink.frames if isinstance(f, FinalTranscript)]
    # the SDK skips the frames that are not USP messages; the service's answer still arrives
    assert [(f.text, f.turn) for f in finals] == [("Yes please transfer me to an agent.", 1)]
    assert peer.counters.faults == ["recognition:garbage"] and node.azure is not None


async def test_connection_is_warm_before_the_caller_speaks(make_peer: PeerFactory) -> None:
    """The recogniser connects at start (the call's set-up), not at the caller's first audio,
    and its phrase list and segmentation silence reach the service."""
    peer, host = await make_peer(key=KEY)
    results = Results()
    rec = AzureRecognizer(AzureSpeechSettings(auth="host", host=host, key=KEY), results,
                          phrases=("Contoso", "policy number"), segmentation_silence_ms=700)
    await rec.start()
    await peer.wait_for(lambda p: p.counters.connections["recognition"] == 1)
    assert rec.pushed_ms == 0
    for chunk in frames(utterance(AGENT) + silence(1000)):
        rec.push(chunk)
    await results.wait(lambda: bool(results.finals()))
    await rec.close()
    assert peer.contexts[0] == {"segmentation_ms": 700, "phrases": ["Contoso", "policy number"],
                                "connection": 1, "phrases_before": 0}
    assert peer.counters.connections["recognition"] == 1


async def test_failure_without_fallback_ends_the_call_clearly(
    make_peer: PeerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer, host = await make_peer(key=KEY)
    peer.inject(Fault("expire", after_ms=1200))
    monkeypatch.setenv("AZURE_SPEECH_HOST", host)
    monkeypatch.setenv("AZURE_SPEECH_KEY", KEY)
    sink = Sink()
    graph = Graph("azure-stt")
    graph.chain(Line(turn_script(CLAIM), sink, hold=False), STTProcessor(STTSettings(engine="azure", fallback="none")),
                sink)
    result = await run_call(graph, timeout=90)
    assert result.reason == "fatal", result
    warned = [e.message for e in result.errors if not e.fatal]
    assert len(warned) == 1 and warned[0].startswith("azure speech failed mid-call: AuthenticationFailure: ")
    assert [e.message for e in result.errors if e.fatal] == [
        "FatalError: STT engine 'azure' failed mid-call and no fallback is set: the call cannot hear"]
    assert not [f for f in sink.frames if isinstance(f, FinalTranscript)]


def test_replay_is_bounded_when_no_final_comes() -> None:
    """Audio kept for a restart stays within MAX_REPLAY_MS however long the line is silent."""
    from processors.stt.azure_engine import MAX_REPLAY_MS

    rec = AzureRecognizer(AzureSpeechSettings(auth="host", host="ws://127.0.0.1:9"), lambda r: None)
    for _ in range(40 * 50):  # 40 s of 20 ms frames, never started: nothing reaches an SDK
        rec.push(silence(20))
    assert rec.pushed_ms == 40_000
    assert len(rec._replay) == MAX_REPLAY_MS * 32
    assert rec._replay_start_ms == 10_000
