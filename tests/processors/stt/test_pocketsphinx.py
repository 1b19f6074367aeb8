"""PocketsphinxEngine on Piper speech fed in 20 ms frames, as a call delivers it."""

from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pocketsphinx
import pytest

from processors.stt.engine import Hypothesis, RecognizerStream, STTEngine
from processors.stt.pocketsphinx_engine import PocketsphinxEngine, PocketsphinxStream
from processors.stt.wer import word_errors
from tests.processors.stt.speech import SENTENCES, frames, silence, utterance

# Measured on the deterministic test speech: 2 errors in 24 words (WER 0.083): "want to
# follow claim". With Piper's natural noise on, 10 runs gave 0.0-0.29 (median 0.08).
# Bound: the measured value plus a margin of about 4 words.
WER_BOUND = 0.25


@pytest.fixture(scope="module")
def engine() -> PocketsphinxEngine:
    return PocketsphinxEngine()


@pytest.fixture
def stream(engine: PocketsphinxEngine) -> Iterator[PocketsphinxStream]:
    with engine.open_stream() as stream:
        yield stream


def recognise(stream: PocketsphinxStream, pcm: bytes) -> tuple[list[Hypothesis], Hypothesis]:
    interims = [h for h in map(stream.feed, frames(pcm)) if h is not None]
    return interims, stream.finish()


def test_implements_the_engine_protocols(engine: PocketsphinxEngine) -> None:
    assert isinstance(engine, STTEngine)
    assert engine.name == "pocketsphinx"
    assert engine.sample_rate == 16000
    with engine.open_stream() as stream:
        assert isinstance(stream, RecognizerStream)
        assert stream.sample_rate == 16000


def test_word_error_rate_on_three_sentences(stream: PocketsphinxStream) -> None:
    errors = words = 0
    for sentence in SENTENCES:
        _, final = recognise(stream, utterance(sentence))
        e, n = word_errors(sentence, final.text)
        errors, words = errors + e, words + n
    assert errors / words <= WER_BOUND


def test_interim_hypotheses_come_before_the_end_of_speech(stream: PocketsphinxStream) -> None:
    pcm = utterance(SENTENCES[0])
    first_interim_at = None
    interims: list[Hypothesis] = []
    for i, frame in enumerate(frames(pcm)):
        hypothesis = stream.feed(frame)
        if hypothesis is not None:
            interims.append(hypothesis)
            first_interim_at = first_interim_at or (i + 1) * 20
    final = stream.finish()

    assert len(interims) >= 5
    assert all(not h.final and h.confidence == 0.0 for h in interims)
    # Each interim differs from the one before (only changes are reported).
    assert all(a.text != b.text for a, b in itertools.pairwise(interims))
    # The first words show up within the first half of the 3 s utterance.
    assert first_interim_at is not None and first_interim_at < len(pcm) // 32 // 2
    assert "accident" in interims[-1].text
    assert final.final and "claim for my car accident" in final.text


def test_final_times_and_confidence(stream: PocketsphinxStream) -> None:
    pcm = utterance(SENTENCES[2])  # 300 ms silence, ~1.9 s of speech, 300 ms silence
    _, final = recognise(stream, pcm)
    fed_ms = len(pcm) // 32
    assert final.text == "yes please transfer me to an agent"
    assert 200 <= final.start_ms <= 400  # measured 320
    assert fed_ms - 500 <= final.end_ms <= fed_ms - 200  # measured fed - 375
    assert 0.5 <= final.confidence <= 1.0  # mean word posterior, measured 0.85


def test_reset_drops_the_audio_fed_so_far(stream: PocketsphinxStream) -> None:
    for frame in frames(utterance(SENTENCES[0])):
        stream.feed(frame)
    stream.reset()
    _, final = recognise(stream, utterance(SENTENCES[2]))
    assert final.text == "yes please transfer me to an agent"


def test_reset_mid_word_then_continue(stream: PocketsphinxStream) -> None:
    stream.feed(utterance(SENTENCES[0])[:16000])  # half a second, cut mid-speech
    stream.reset()
    _, final = recognise(stream, utterance(SENTENCES[1]))
    assert word_errors(SENTENCES[1], final.text)[0] <= 1


def test_streams_are_independent(engine: PocketsphinxEngine) -> None:
    with engine.open_stream() as one, engine.open_stream() as two:
        for a, b in zip(frames(utterance(SENTENCES[2])), frames(utterance(SENTENCES[1])), strict=False):
            one.feed(a)
            two.feed(b)
        for frame in frames(utterance(SENTENCES[1])[len(utterance(SENTENCES[2])) :]):
            two.feed(frame)
        assert one.finish().text == "yes please transfer me to an agent"
        assert word_errors(SENTENCES[1], two.finish().text)[0] <= 1


def test_finish_on_nothing_is_an_empty_final(stream: PocketsphinxStream) -> None:
    assert stream.finish() == Hypothesis("", True, 0.0, 0, 0)
    assert stream.feed(b"") is None
    assert stream.finish() == Hypothesis("", True, 0.0, 0, 0)


def test_too_short_and_silent_utterances_are_empty(stream: PocketsphinxStream) -> None:
    assert stream.feed(silence(40)) is None
    assert stream.finish() == Hypothesis("", True, 0.0, 0, 40)
    _, final = recognise(stream, silence(1000))
    assert final == Hypothesis("", True, 0.0, 0, 1000)


def test_odd_byte_count_is_rejected(stream: PocketsphinxStream) -> None:
    with pytest.raises(ValueError, match="even number of bytes, got 641"):
        stream.feed(bytes(641))
    # The stream is still usable afterwards.
    _, final = recognise(stream, utterance(SENTENCES[2]))
    assert final.text == "yes please transfer me to an agent"


def test_closed_streams_return_their_decoder(engine: PocketsphinxEngine) -> None:
    stream = engine.open_stream()
    stream.feed(utterance(SENTENCES[1])[:32000])  # an utterance is open: a decoder is borrowed
    idle = engine.idle_decoders
    stream.close()  # close mid-utterance
    assert stream.closed
    assert engine.idle_decoders == idle + 1
    with pytest.raises(RuntimeError, match="closed"):
        stream.feed(bytes(640))
    # A dropped stream is recycled by the garbage collector too.
    dropped = engine.open_stream()
    dropped.feed(utterance(SENTENCES[1])[:32000])
    assert engine.idle_decoders == idle
    del dropped
    gc.collect()
    assert engine.idle_decoders == idle + 1
    # The recycled decoder recognises cleanly: no left-over utterance or channel mean.
    with engine.open_stream() as reused:
        _, final = recognise(reused, utterance(SENTENCES[2]))
    assert final.text == "yes please transfer me to an agent"


class RecordingDecoder:
    """A real pocketsphinx Decoder that records how its channel mean is read and set."""

    def __init__(self, decoder: pocketsphinx.Decoder, log: list[tuple[str, str]]) -> None:
        self._decoder = decoder
        self._log = log

    def get_cmn(self) -> str:
        cmn: str = self._decoder.get_cmn()
        self._log.append(("get", cmn))
        return cmn

    def set_cmn(self, cmn: str) -> None:
        self._log.append(("set", cmn))
        self._decoder.set_cmn(cmn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._decoder, name)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """Records the thread that builds each pocketsphinx decoder from now on."""
    threads: list[threading.Thread] = []
    real = pocketsphinx.Decoder

    def counting(**config: Any) -> Any:
        threads.append(threading.current_thread())
        return real(**config)

    monkeypatch.setattr(pocketsphinx, "Decoder", counting)
    return threads


def test_a_reused_decoder_recognises_like_a_fresh_one() -> None:
    engine = PocketsphinxEngine(prewarm=1)
    pcm = silence(400) + utterance(SENTENCES[0], pad_ms=0)

    def heard() -> Hypothesis:
        with engine.open_stream() as stream:
            return recognise(stream, pcm)[1]

    fresh = heard()
    # Another caller's half utterance, then the same audio again on the same decoder.
    with engine.open_stream() as other:
        other.feed(pcm[:16000])
        other.reset()
    assert heard() == fresh
    assert engine.idle_decoders == 1


def test_opening_streams_builds_and_borrows_no_decoder(built: list[threading.Thread]) -> None:
    engine = PocketsphinxEngine(prewarm=0)
    streams = [engine.open_stream() for _ in range(5)]
    assert built == [] and engine.idle_decoders == 0
    for stream in streams:
        stream.feed(silence(40))  # shorter than the shortest utterance: still no decoder
        assert stream.finish() == Hypothesis("", True, 0.0, 0, 40)
        stream.close()
    assert built == []


def test_a_decoder_is_held_only_while_an_utterance_is_open(built: list[threading.Thread]) -> None:
    engine = PocketsphinxEngine(prewarm=1)
    assert len(built) == 1 and engine.idle_decoders == 1
    one, two = engine.open_stream(), engine.open_stream()
    # Two calls speaking one after the other share the one decoder.
    _, first = recognise(one, utterance(SENTENCES[2]))
    assert engine.idle_decoders == 1
    _, second = recognise(two, utterance(SENTENCES[2]))
    assert first.text == second.text == "yes please transfer me to an agent"
    assert len(built) == 1
    # Two speaking at once need two; both come back when their utterances end.
    one.feed(utterance(SENTENCES[0])[:16000])
    two.feed(utterance(SENTENCES[1])[:16000])
    assert len(built) == 2 and engine.idle_decoders == 0
    one.finish()
    two.reset()
    assert engine.idle_decoders == 2
    one.close()
    two.close()


def test_each_stream_keeps_its_own_channel_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[tuple[str, str]] = []
    real = pocketsphinx.Decoder
    monkeypatch.setattr(pocketsphinx, "Decoder", lambda **config: RecordingDecoder(real(**config), log))
    engine = PocketsphinxEngine(prewarm=1)
    one, two = engine.open_stream(), engine.open_stream()
    recognise(one, utterance(SENTENCES[0]))
    recognise(two, utterance(SENTENCES[1]))  # the same decoder, another caller
    recognise(one, utterance(SENTENCES[2]))
    one_left, two_left, _ = (cmn for op, cmn in log if op == "get")
    # A new caller starts from the configured mean (the front end is reset on every
    # borrow); a caller's next turn from the mean its previous turn left.
    assert [cmn for op, cmn in log if op == "set"] == [one_left]
    assert two_left != one_left
    one.close()
    two.close()
