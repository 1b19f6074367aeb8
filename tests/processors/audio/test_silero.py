"""Silero VAD as the VAD node's engine (``engine: silero``)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import CallContext
from pipeline.frames import AudioFormat, Frame, InputAudio, TurnEnd, TurnStart
from pipeline.testing import run_processor
from processors.audio.silero import load_silero, silero_classifier
from processors.audio.vad_node import VADProcessor, VADSettings
from tests.processors.stt.speech import frames, silence, utterance

RATE = 16000
MODEL = load_silero()
pytestmark = pytest.mark.skipif(MODEL is None, reason="pipecat-ai (Silero VAD) not installed")


def audio_frames(pcm: bytes, rate: int = RATE) -> list[Frame]:
    return [AudioFormat(rate), *(InputAudio(chunk) for chunk in frames(pcm))]


def test_silero_hears_speech_and_not_loud_noise() -> None:
    assert MODEL is not None
    classify = silero_classifier(MODEL, RATE)
    speech = utterance("I want to file a claim for my car accident", pad_ms=0)
    voiced = [classify(chunk, RATE) for chunk in frames(speech)]
    assert sum(voiced) > 0.6 * len(voiced)
    noise = (np.random.default_rng(1).normal(0, 0.05 * 32768, RATE * 2)).astype(np.int16).tobytes()  # -26 dBFS hiss
    classify = silero_classifier(MODEL, RATE)
    assert sum(classify(chunk, RATE) for chunk in frames(noise)) == 0


async def test_the_node_marks_one_turn_with_the_silero_engine() -> None:
    pcm = silence(500) + utterance("yes please transfer me to an agent", pad_ms=0) + silence(1500)
    out, result = await run_processor(VADProcessor(VADSettings(engine="silero")), audio_frames(pcm), ctx=CallContext())
    assert result.reason == "eos"
    starts = [f for f in out.seen if isinstance(f, TurnStart)]
    ends = [f for f in out.seen if isinstance(f, TurnEnd)]
    assert [f.turn for f in starts] == [1] and [f.turn for f in ends] == [1]
    assert 480 <= starts[0].at_ms <= 620 and ends[0].reason == "silence"


def test_silero_refuses_a_rate_it_was_not_trained_on() -> None:
    assert MODEL is not None
    with pytest.raises(ValueError, match="8000 or 16000"):
        silero_classifier(MODEL, 48000)


async def test_the_node_names_the_rate_problem() -> None:
    _, result = await run_processor(VADProcessor(VADSettings(engine="silero")), audio_frames(bytes(1920), 48000),
                                    ctx=CallContext())
    assert "Silero VAD needs 8000 or 16000 Hz, got 48000" in result.errors[0].message
