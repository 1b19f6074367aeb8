"""Per-agent voices: the ``voice`` of an agent file reaches the TTS node with the handoff
(``AgentSwitch.voice``), and the Azure engine says that agent's words with it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.orchestrator import Orchestrator, OrchestratorSettings
from agents.registry import AgentRegistry
from pipeline.frames import AgentSwitch, FinalTranscript, ResponseEnd
from pipeline.graph import Graph
from pipeline.runner import run_call
from pipeline.testing import Collector
from processors.azure_speech.peer.synthesis import SynthesisState
from processors.text.sentences_node import SentencesProcessor, SentencesSettings
from processors.tts.azure_engine import AzureTTSSettings
from processors.tts.node import TTSProcessor, TTSSettings
from tests.agents.helpers import AGENTS, StandInEngine, make_store, stand_in_flows, write_agents, write_scenario
from tests.processors.llm.helpers import Lines, wait_until

from ._synthesis_peer import synthesis_peer

VOICED = {**AGENTS, "fnol": AGENTS["fnol"].replace("description: files claims",
                                                 "description: files claims\n        voice: en-GB-RyanNeural")}


@pytest.fixture
async def state(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SynthesisState]:
    async with synthesis_peer() as (peer_state, host):
        monkeypatch.setenv("AZURE_SPEECH_HOST", host)
        monkeypatch.setenv("AZURE_SPEECH_KEY", "peer-key")
        yield peer_state


@pytest.mark.parametrize("mapped", [False, True])
async def test_the_agent_files_voice_says_that_agents_words(tmp_path: Path, state: SynthesisState,
                                                            mapped: bool) -> None:
    agents = write_agents(tmp_path / "agents", VOICED)
    scenario = write_scenario(tmp_path / "scenarios")
    store = make_store()
    brain = Orchestrator(OrchestratorSettings(scenario=str(scenario), agents=str(agents)), engine=StandInEngine(),
                         registry=AgentRegistry(agents, tools=store, poll_s=0, validate_flow=stand_in_flows),
                         tools=store)
    # The pipeline's own mapping wins over the agent file's voice.
    voices = {"fnol": "en-AU-NatashaNeural"} if mapped else {}
    tts = TTSProcessor(TTSSettings(engine="azure", voice="en-US-JennyNeural", fallback=None, prefill_brain=False,
                                   azure=AzureTTSSettings(voices=voices)), name="tts")
    lines, out = Lines(), Collector()
    graph = Graph("voices")
    graph.chain(lines, brain, SentencesProcessor(SentencesSettings(first_clause_min_words=0), name="sentences"), tts, out)
    call = asyncio.ensure_future(run_call(graph))

    def ended(turn: int) -> bool:
        return any(isinstance(f, ResponseEnd) and f.turn == turn for f in out.controls)

    await wait_until(lambda: ended(1))
    await lines.send(FinalTranscript("It is P-100", turn=2))
    await wait_until(lambda: ended(2))
    lines.end()
    await call
    switches = [(e.agent_to, e.voice) for e in out.events if isinstance(e, AgentSwitch)]
    assert switches == [("auth", ""), ("fnol", "en-GB-RyanNeural")]
    fnol = "en-AU-NatashaNeural" if mapped else "en-GB-RyanNeural"
    said = dict(zip(state.texts, state.voices, strict=True))
    assert said == {
        "Welcome to Contoso.": "en-US-JennyNeural",  # auth has no voice of its own: the pipeline's
        "Please say your policy number.": "en-US-JennyNeural",
        # Said by auth, but cut into a clause only after the handoff's AgentSwitch (an
        # out-of-band event) reached the TTS node: it takes the new voice (a known limit).
        "Thank you Jane Doe, you are verified.": fnol,
        "I can help you file a claim.": fnol,
        "Tell me what happened, policy P-100.": fnol,
    }
