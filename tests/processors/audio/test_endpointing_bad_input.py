"""End of turn under bad input: continuous noise, and a caller who never stops (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.frames import TurnStart, UserStoppedSpeaking
from processors.audio.vad_node import VADSettings
from tests.processors.audio.test_turn_model import HAVE_SMART_TURN, run, turn_ends

RATE = 16000


def white_noise(seconds: float, rms: float = 3000.0) -> bytes:
    rng = np.random.default_rng(7)
    return (rng.standard_normal(int(RATE * seconds)) * rms).astype(np.int16).tobytes()


async def test_continuous_noise_is_one_turn_cut_at_the_maximum_and_no_more_while_it_lasts() -> None:
    # webrtcvad takes loud white noise for speech: the endpointing must not end a turn
    # every max_turn_ms (each would cancel the answer to the last one) nor stay stuck.
    out = await run(white_noise(12.0), VADSettings(max_turn_ms=5000))
    starts = [(f.turn, f.at_ms) for f in out.seen if isinstance(f, TurnStart)]
    assert starts == [(1, 0.0)]
    assert [(e.turn, e.at_ms, e.reason) for e in turn_ends(out)] == [(1, 5000.0, "max_duration")]
    # The "speech" only stops when the line goes quiet at the end of the call (12 s).
    assert [e.at_ms for e in out.events if isinstance(e, UserStoppedSpeaking)] == [12000.0]


@pytest.mark.skipif(not HAVE_SMART_TURN, reason="pipecat-ai (the test extra) ships the Silero model")
async def test_silero_hears_no_speech_in_continuous_noise() -> None:
    out = await run(white_noise(6.0), VADSettings(engine="silero", max_turn_ms=5000))
    assert [f for f in out.seen if isinstance(f, TurnStart)] == [] and turn_ends(out) == []


async def test_a_turn_cut_at_the_maximum_has_a_turn_model_verdict_only_at_real_pauses() -> None:
    asked: list[int] = []

    def model(audio: np.ndarray) -> float:
        asked.append(len(audio))
        return 1.0

    out = await run(white_noise(8.0), VADSettings(max_turn_ms=5000), model=model)
    assert [(e.at_ms, e.reason) for e in turn_ends(out)] == [(5000.0, "max_duration")]
    assert asked == []  # no pause in the noise: the model was never asked
