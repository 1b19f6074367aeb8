"""The speech peer on a free port of 127.0.0.1 for the TTS tests, eSpeak saying the words."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from processors.azure_speech.peer.app import SpeechPeer
from processors.azure_speech.peer.synthesis import SynthesisState, synthesis_state
from tests.azure_speech.conftest import serve


@asynccontextmanager
async def synthesis_peer(**kwargs: Any) -> AsyncIterator[tuple[SynthesisState, str]]:
    """Yields (the peer's synthesis state, its ``ws://`` host for ``SpeechConfig(host=...)``);
    ``state.peer`` is the ``SpeechPeer`` (settings, faults, counters). ``kwargs`` go to it."""
    peer = SpeechPeer(**kwargs)
    state = synthesis_state(peer)
    state.settings.engine = "espeak"
    try:
        async with serve(peer.app) as port:
            yield state, f"ws://127.0.0.1:{port}"
    finally:
        state.release.set()
