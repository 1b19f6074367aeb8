"""Per-agent phrase lists on Azure STT, through the real SDK against the peer: an
``AgentSwitch`` makes the recogniser's list the node's plus the agent's, applied by a restart
between the caller's turns (the peer records the list each recognition turn carried)."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.frames import AgentSwitch, FinalTranscript, Frame, InputAudio, TurnEnd, TurnStart
from pipeline.graph import Graph
from pipeline.runner import run_call
from processors.azure_speech.config import AzureSpeechSettings
from processors.azure_speech.peer.app import SpeechPeer
from processors.stt.azure_engine import AzureRecognizer
from processors.stt.node import STTProcessor, STTSettings
from processors.stt.wer import wer
from tests.azure_speech.conftest import PeerFactory
from tests.azure_speech.test_azure_stt import (
    AGENT,
    CLAIM,
    KEY,
    TIMEOUT,
    Line,
    Results,
    Sink,
    run_node,
    turn_script,
)
from tests.processors.stt.speech import frames, silence, utterance

STATIC = ("Contoso",)
FNOL = ("claim", "deductible")


def switch(phrases: tuple[str, ...], agent: str = "fnol") -> AgentSwitch:
    return AgentSwitch(agent_from="auth", agent_to=agent, reason="test", phrases=phrases)


@pytest.fixture
async def azure_peer(make_peer: PeerFactory, monkeypatch: pytest.MonkeyPatch) -> SpeechPeer:
    peer, host = await make_peer(key=KEY)
    monkeypatch.setenv("AZURE_SPEECH_HOST", host)
    monkeypatch.setenv("AZURE_SPEECH_KEY", KEY)
    return peer


def lists(peer: SpeechPeer) -> dict[int, list[str]]:
    """The phrase list each recognition connection carried (the same in each of its turns:
    after its end of audio the SDK opens one more turn on the connection until stopped)."""
    carried = {(c["connection"], tuple(c["phrases"])) for c in peer.contexts}
    out = {n: list(p) for n, p in carried}
    assert len(out) == len(carried), carried
    return out


def opening(peer: SpeechPeer, connection: int) -> dict[str, object]:
    """The first turn's context on ``connection``."""
    return next(c for c in peer.contexts if c["connection"] == connection)


def finals_of(sink: Sink) -> list[tuple[str, int]]:
    return [(f.text, f.turn) for f in sink.frames if isinstance(f, FinalTranscript)]


async def test_recogniser_restarts_with_a_new_list_and_keeps_the_line(make_peer: PeerFactory) -> None:
    peer, host = await make_peer(key=KEY)
    results = Results()
    rec = AzureRecognizer(AzureSpeechSettings(auth="host", host=host, key=KEY), results, phrases=STATIC)
    await rec.start()
    for chunk in frames(utterance(AGENT) + silence(700)):
        rec.push(chunk)
    await results.wait(lambda: len(results.finals()) == 1)
    assert rec.set_phrases(STATIC) is False  # the list in use: nothing to do
    assert rec.set_phrases((*STATIC, *FNOL)) is True
    for chunk in frames(utterance(CLAIM) + silence(700)):  # pushed while the restart runs: replayed
        rec.push(chunk)
    await results.wait(lambda: len(results.finals()) == 2)
    await rec.close()
    assert results.finals() == ["Yes please transfer me to an agent.", "I want to file a claim for my car accident."]
    assert lists(peer) == {1: ["Contoso"], 2: ["Contoso", "claim", "deductible"]}
    assert opening(peer, 2)["phrases_before"] == 1
    assert (rec.phrase_restarts, rec.restarts, peer.counters.connections["recognition"]) == (1, 0, 2)
    # call-audio time goes on across the restart: the second phrase starts after the first
    finals = [r for r in results.items if r.kind == "final" and r.text]
    assert finals[1].start_ms > finals[0].end_ms


async def test_the_next_turn_carries_the_static_and_the_agents_phrases(azure_peer: SpeechPeer) -> None:
    peer = azure_peer
    script = turn_script(CLAIM)
    script.insert(1, switch(FNOL))  # call start: the entry agent takes the call before the caller speaks
    node, sink = await run_node(STTSettings(engine="azure", phrases=STATIC), script, hold=True)
    (final,) = [f for f in sink.frames if isinstance(f, FinalTranscript)]
    # the audio pushed during the restart reached the service whole (replayed), in other
    # batches than a live line's: pocketsphinx's words may differ slightly
    assert final.turn == 1 and wer(CLAIM, final.text) <= 0.3, final.text
    # the entry agent's list was applied before any audio: connection 1 never opened a turn
    assert lists(peer) == {2: ["Contoso", "claim", "deductible"]}
    assert peer.counters.connections["recognition"] == 2
    # the turn was recognised on the restarted connection, with the agent's list
    assert opening(peer, 2)["phrases_before"] == 0 and peer.phrases == [final.text]
    assert node.azure is not None and node.azure.phrase_restarts == 1
    assert node.azure.phrases == ("Contoso", "claim", "deductible")


def two_turns() -> list[Frame]:
    """The claim as turn 1, then the agent request as turn 2 (turn_script's timing for each)."""
    first, second = turn_script(CLAIM), turn_script(AGENT)[1:]
    offset = sum(len(f.pcm) // 32 for f in first if isinstance(f, InputAudio))
    for i, f in enumerate(second):
        if isinstance(f, TurnStart):
            second[i] = TurnStart(turn=2, at_ms=f.at_ms + offset, stream_ms=f.stream_ms + offset)
        elif isinstance(f, TurnEnd):
            second[i] = TurnEnd(turn=2, at_ms=f.at_ms + offset)
    return first + second


class WatchedLine(Line):
    """Says the script's turns, each after the previous one's final; notes the peer's
    recognition connections as each turn ends. An ``AgentSwitch`` in the script goes out
    once the node shows the turn open (its first interim): the caller is mid-sentence."""

    def __init__(self, script: list[Frame], sink: Sink, peer: SpeechPeer) -> None:
        super().__init__(script, sink, hold=True)
        self.peer = peer
        self.at_turn_end: list[int] = []

    async def run(self) -> None:
        ended = 0
        async with asyncio.timeout(TIMEOUT):
            for frame in self.script:
                if isinstance(frame, TurnStart):
                    await self.finals(ended)
                    self.sink.interim_seen.clear()
                elif isinstance(frame, AgentSwitch | TurnEnd):
                    await self.sink.interim_seen.wait()
                if isinstance(frame, TurnEnd):
                    self.at_turn_end.append(self.peer.counters.connections["recognition"])
                    ended += 1
                await self.push(frame)
            await self.finals(ended)

    async def finals(self, count: int) -> None:
        while len(finals_of(self.sink)) < count:
            self.sink.final_seen.clear()
            await self.sink.final_seen.wait()


async def test_a_switch_mid_turn_applies_after_the_turn(azure_peer: SpeechPeer) -> None:
    peer = azure_peer
    script = two_turns()
    opened = next(i for i, f in enumerate(script) if isinstance(f, TurnStart))
    script.insert(opened + 40, switch(FNOL))  # 800 ms into the caller's first turn
    sink = Sink()
    line = WatchedLine(script, sink, peer)
    node = STTProcessor(STTSettings(engine="azure", phrases=STATIC))
    graph = Graph("azure-stt")
    graph.chain(line, node, sink)
    result = await run_call(graph, timeout=90)
    assert result.errors == ()
    # no restart while the caller spoke; the list applied after turn 1's final
    assert line.at_turn_end == [1, 2]
    (first, _), (second, _) = finals = finals_of(sink)
    assert [turn for _, turn in finals] == [1, 2]
    # The restart came as turn 2's first 200 ms had been pushed (the VAD's start window): the
    # stopped connection finalised that fragment (its result dropped); the new one heard the
    # turn whole from the replay.
    assert peer.phrases[0] == first and peer.phrases[-1] == second and len(peer.phrases) <= 3
    # the turn the switch came in is heard whole (pocketsphinx's words vary with its batches)
    assert wer(CLAIM, first) <= 0.3 and second == "Yes please transfer me to an agent.", finals
    assert lists(peer) == {1: ["Contoso"], 2: ["Contoso", "claim", "deductible"]}
    assert opening(peer, 2)["phrases_before"] == len(peer.phrases) - 1  # only turn 2 on the new one
    assert node.azure is not None and node.azure.phrase_restarts == 1


async def test_a_switch_to_the_same_list_does_not_restart(azure_peer: SpeechPeer) -> None:
    peer = azure_peer
    script = turn_script(AGENT)
    # an agent whose phrases are already the node's, then twice the same agent list
    script[1:1] = [switch(("Contoso",), agent="support"), switch(FNOL), switch(FNOL)]
    node, sink = await run_node(STTSettings(engine="azure", phrases=STATIC), script, hold=True)
    assert finals_of(sink) == [("Yes please transfer me to an agent.", 1)]
    assert lists(peer) == {2: ["Contoso", "claim", "deductible"]}
    assert node.azure is not None and node.azure.phrase_restarts == 1
    assert peer.counters.connections["recognition"] == 2


async def test_embedded_engines_ignore_phrases() -> None:
    script = turn_script(AGENT)
    script.insert(1, switch(FNOL))
    node, sink = await run_node(STTSettings(engine="pocketsphinx", phrases=STATIC), script)
    assert len(finals_of(sink)) == 1 and node.azure is None
