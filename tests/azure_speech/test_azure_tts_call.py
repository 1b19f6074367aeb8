"""A whole spoken call (``voicegraph call``) with the bot's voice from Azure TTS, through the
real SDK against the peer: the caller barges in on a streamed answer and the service is
stopped mid-clause."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn

from processors.azure_speech.peer.app import SpeechPeer
from processors.azure_speech.peer.synthesis import SynthesisState, synthesis_state
from voicegraph.cli import main


@pytest.fixture
def threaded_peer() -> Iterator[tuple[SynthesisState, str]]:
    """The speech peer in a thread of its own (``voicegraph call`` runs its own loop)."""
    peer = SpeechPeer(key="peer-key")
    app = peer.app
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    state = synthesis_state(peer)
    state.settings.engine = "espeak"
    try:
        yield state, f"ws://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        server.force_exit = True
        thread.join(10)
        sock.close()


def test_barge_in_stops_azure_synthesis_mid_clause(threaded_peer: tuple[SynthesisState, str],
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    state, host = threaded_peer
    state.peer.settings.pace = True  # 100 ms audio messages at the pace of speech
    monkeypatch.setenv("AZURE_SPEECH_HOST", host)
    monkeypatch.setenv("AZURE_SPEECH_KEY", "peer-key")
    monkeypatch.setenv("VOICEGRAPH__TTS__ENGINE", "azure")
    monkeypatch.setenv("VOICEGRAPH__TTS__PREFILL_BRAIN", "false")  # every clause streamed, none from the cache
    code = main(["call", "--say", "I want to file a claim for my car accident", "--say", "that is all for today, goodbye",
                 "--interrupt-after", "800", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["errors"] == [] and report["ended"] == "eos"
    greeting, answer, goodbye = report["turns"]
    assert [t["interrupted"] for t in report["turns"]] == [True, True, False]
    assert greeting["bot_heard_text"].startswith("Thank you for")
    assert answer["bot_text"].startswith("I am sorry to hear about your accident.")
    assert 700 <= answer["bot_audio_ms"] <= 1500
    assert goodbye["bot_text"] == goodbye["bot_heard_text"] == "Thank you for calling. Goodbye!"
    # The caller talked over the greeting and over the answer. The greeting's first piece was
    # stopped mid-stream at the service and the rest never asked for. The answer is paused first
    # (barge-in recovery) and flushed once the caller's words prove an interruption: a piece
    # being made then is stopped at the service, and no piece after the flush is asked for.
    texts = state.texts
    assert texts[:2] == ["Thank you for calling Contoso insurance.", "I am sorry to hear"]
    assert texts[-2:] == ["Thank you for calling.", "Goodbye!"]
    assert set(texts[2:-2]) <= {"about your accident.", "I can start a claim for you right away."}
    assert "First, what is your policy number?" not in texts
    assert state.stopped >= 1 and state.stopped + state.completed == len(texts)
