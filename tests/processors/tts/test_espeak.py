"""EspeakEngine: libespeak-ng from the espeakng-loader wheel, in-process via ctypes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from processors.tts import espeak_engine
from processors.tts.engine import TTSEngine
from processors.tts.espeak_engine import EspeakEngine

SENTENCE = "I want to file a claim for my car accident."
LONG_TEXT = " ".join(f"This is sentence number {n} of a long answer." for n in range(40))


@pytest.fixture(scope="module")
def engine() -> EspeakEngine:
    return EspeakEngine()


def speak(engine: EspeakEngine, text: str) -> bytes:
    return b"".join(engine.synthesize(text))


def test_implements_the_engine_protocol(engine: EspeakEngine) -> None:
    assert isinstance(engine, TTSEngine)
    assert engine.name == "espeak"
    assert engine.sample_rate == 22050  # as returned by espeak_Initialize


def test_sentence_duration_and_level_are_plausible(engine: EspeakEngine) -> None:
    audio = np.frombuffer(speak(engine, SENTENCE), dtype=np.int16)
    # 10 words at 175 wpm plus the end-of-sentence pause: measured 2.83 s.
    assert 2.0 <= len(audio) / engine.sample_rate <= 3.6
    assert 1000 <= np.sqrt(np.mean(audio.astype(np.float64) ** 2)) <= 10000  # measured ~2900


def test_one_chunk_per_sentence(engine: EspeakEngine) -> None:
    chunks = list(engine.synthesize("Hello there. How can I help? I am listening!"))
    assert len(chunks) == 3


def test_output_varies_only_slightly_between_calls(engine: EspeakEngine) -> None:
    # libespeak-ng carries generator state (pitch flutter phase, noise) from one call to
    # the next, so the same text is not bit-exact twice: measured within +-0.5% in length.
    lengths = [len(speak(engine, SENTENCE)) for _ in range(4)]
    assert max(lengths) <= 1.02 * min(lengths)


def test_speaking_rate_is_applied_per_engine(engine: EspeakEngine) -> None:
    fast = EspeakEngine(rate=300)
    normal_before = len(speak(engine, SENTENCE))
    fast_length = len(speak(fast, SENTENCE))
    # Settings are process-global in libespeak-ng; each call must re-apply its own.
    assert len(speak(engine, SENTENCE)) == pytest.approx(normal_before, rel=0.02)
    assert fast_length < 0.75 * normal_before


@pytest.mark.parametrize("text", ["", "   \n\t ", "<speak></speak>", "**  __ ``", "<br/>"])
def test_empty_text_yields_nothing(engine: EspeakEngine, text: str) -> None:
    assert list(engine.synthesize(text)) == []


def test_markup_is_not_spoken(engine: EspeakEngine) -> None:
    plain = speak(engine, "Your claim is approved. See the claims page.")
    marked_up = speak(
        engine,
        "<speak>## Your **claim** is <b>approved</b>.\n\nSee the [claims page](https://example.com/claims).</speak>",
    )
    # Same words, so the same length; spoken markup ("asterisk", a URL) would add seconds.
    assert len(marked_up) == pytest.approx(len(plain), rel=0.02)


def test_first_chunk_comes_before_the_second_sentence_and_close_stops_there(
    engine: EspeakEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    synthesised: list[str] = []
    real = EspeakEngine._synthesize_sentence

    def counting(self: EspeakEngine, sentence: str) -> bytes:
        synthesised.append(sentence)
        return real(self, sentence)

    monkeypatch.setattr(EspeakEngine, "_synthesize_sentence", counting)
    generator = engine.synthesize(LONG_TEXT)
    first = next(generator)
    assert len(first) > 0 and synthesised == ["This is sentence number 0 of a long answer."]
    assert not espeak_engine._LOCK.locked()  # never held while a chunk is out
    generator.close()
    assert len(synthesised) == 1
    with pytest.raises(StopIteration):
        next(generator)


def test_concurrent_calls_do_not_mix_audio(engine: EspeakEngine) -> None:
    # Texts of clearly different lengths: audio delivered to the wrong caller, or split
    # between callers, would show up as a wrong length.
    texts = [" ".join(["claim"] * n) + "." for n in (1, 3, 6, 10, 15)]
    expected = [len(speak(engine, t)) for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda t: len(speak(engine, t)), texts * 4))
    assert results == pytest.approx(expected * 4, rel=0.02)


def test_a_generator_paused_mid_text_does_not_block_others(engine: EspeakEngine) -> None:
    paused = engine.synthesize(LONG_TEXT)
    next(paused)  # holds no lock between chunks
    with ThreadPoolExecutor(max_workers=1) as pool:
        audio = pool.submit(speak, engine, SENTENCE).result(timeout=5)
    assert len(audio) > 0
    paused.close()


def test_unknown_voice_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown eSpeak voice 'xx-nope'"):
        EspeakEngine(voice="xx-nope")
