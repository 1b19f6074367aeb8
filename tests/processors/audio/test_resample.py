"""Resampler: pass-through, bad input, round trip, seamless chunking, measured delay."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processors.audio.resample import (
    INPUT_QUALITY,
    OUTPUT_QUALITY,
    Quality,
    Resampler,
    measure_delay_ms,
)


def sine(freq: float, rate: int, seconds: float, amplitude: float = 10_000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16).tobytes()


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float64)


def stream(resampler: Resampler, pcm: bytes, chunk_bytes: int) -> bytes:
    out = b"".join(resampler.process(pcm[i : i + chunk_bytes]) for i in range(0, len(pcm), chunk_bytes))
    return out + resampler.flush()


def rms_db(x: np.ndarray) -> float:
    return 20 * math.log10(float(np.sqrt(np.mean(x**2))))


def test_same_rate_is_a_passthrough_returning_the_input_object() -> None:
    resampler = Resampler(16000, 16000)
    pcm = sine(440, 16000, 0.02)
    assert resampler.process(pcm) is pcm
    assert resampler.flush() == b""
    assert resampler.passthrough is True
    assert resampler.delay_ms == 0.0
    assert resampler.max_delay_ms == 0.0


def test_odd_byte_count_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="not a whole number of 16-bit samples"):
        Resampler(8000, 16000).process(b"\x00\x01\x02")
    # Also in pass-through mode: a bad chunk must not travel further down the graph.
    with pytest.raises(ValueError, match="641 bytes"):
        Resampler(16000, 16000).process(bytes(641))


@pytest.mark.parametrize(("in_rate", "out_rate"), [(44100, 16000), (16000, 11025), (0, 8000)])
def test_unsupported_rate_is_rejected(in_rate: int, out_rate: int) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        Resampler(in_rate, out_rate)


def test_unknown_quality_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown quality 'best'"):
        Resampler(8000, 16000, "best")  # type: ignore[arg-type]


def test_empty_chunk_gives_empty_output() -> None:
    assert Resampler(8000, 16000).process(b"") == b""


@pytest.mark.parametrize("quality", ["LQ", "HQ"])
def test_round_trip_16k_48k_16k_keeps_length_energy_and_waveform(quality: Quality) -> None:
    original = sine(440, 16000, 1.0)
    up = Resampler(16000, 48000, quality)
    down = Resampler(48000, 16000, quality)
    out = b""
    for i in range(0, len(original), 640):  # 20 ms chunks, as from a caller
        out += down.process(up.process(original[i : i + 640]))
    out += down.process(up.flush()) + down.flush()

    x, y = samples(original), samples(out)
    assert abs(len(y) - len(x)) <= 3
    middle = slice(1600, 14400)  # skip the filters' edges
    assert abs(rms_db(y[middle]) - rms_db(x[middle])) < 1.0
    # soxr is phase-aligned: the round trip matches the input sample for sample.
    error = y[middle] - x[middle]
    snr_db = rms_db(x[middle]) - rms_db(error)
    assert snr_db > 40.0


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "quality"),
    [(16000, 48000, "HQ"), (48000, 16000, "LQ"), (8000, 16000, "LQ"), (22050, 8000, "HQ"), (24000, 16000, "HQ")],
)
def test_chunked_output_equals_one_shot_output(in_rate: int, out_rate: int, quality: Quality) -> None:
    pcm = sine(440, in_rate, 0.5)
    one_shot = Resampler(in_rate, out_rate, quality)
    whole = samples(one_shot.process(pcm) + one_shot.flush())
    chunked = Resampler(in_rate, out_rate, quality)
    rng = np.random.default_rng(7)
    out = b""
    position = 0
    while position < len(pcm):  # irregular chunks, down to a single sample
        size = 2 * int(rng.integers(1, 700))
        out += chunked.process(pcm[position : position + size])
        position += size
    parts = samples(out + chunked.flush())
    assert len(parts) == len(whole)
    # soxr's block arithmetic may round differently: at most 2 LSB (-84 dBFS), no click.
    assert np.max(np.abs(parts - whole)) <= 2


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "quality"),
    [(16000, 48000, OUTPUT_QUALITY), (8000, 16000, INPUT_QUALITY), (22050, 16000, OUTPUT_QUALITY)],
)
def test_resampled_sine_has_no_jump_at_chunk_borders(in_rate: int, out_rate: int, quality: Quality) -> None:
    amplitude, freq = 10_000.0, 1000.0
    resampler = Resampler(in_rate, out_rate, quality)
    y = samples(stream(resampler, sine(freq, in_rate, 1.0, amplitude), chunk_bytes=2 * in_rate // 50))
    steady = y[out_rate // 10 : -out_rate // 10]
    # The steepest step of a clean sine between two output samples; a click would be
    # several times larger.
    steepest = 2 * amplitude * math.sin(math.pi * freq / out_rate)
    assert np.max(np.abs(np.diff(steady))) <= steepest * 1.02 + 2


def test_flush_returns_the_tail_and_starts_a_new_stream() -> None:
    resampler = Resampler(16000, 48000, "HQ")
    pcm = sine(440, 16000, 0.1)
    first = resampler.process(pcm)
    tail = resampler.flush()
    assert len(first) + len(tail) == 2 * 4800
    assert len(tail) > 0
    # A second stream after flush converts to the same length again.
    assert len(resampler.process(pcm) + resampler.flush()) == 2 * 4800


def test_reset_drops_the_held_audio() -> None:
    resampler = Resampler(16000, 48000, "HQ")
    resampler.process(sine(440, 16000, 0.1))
    resampler.reset()
    assert resampler.flush() == b""


def test_measured_delay_matches_the_documented_trade_off() -> None:
    hq = Resampler(48000, 16000, "HQ")
    assert 15.0 < hq.delay_ms < 30.0  # the "~21 ms" of soxr HQ
    assert hq.max_delay_ms >= hq.delay_ms
    for in_rate, out_rate in [(8000, 16000), (48000, 16000), (24000, 16000), (22050, 8000)]:
        lq_mean, _ = measure_delay_ms(in_rate, out_rate, "LQ")
        hq_mean, _ = measure_delay_ms(in_rate, out_rate, "HQ")
        qq_mean, _ = measure_delay_ms(in_rate, out_rate, "QQ")
        assert qq_mean < 1.0 < lq_mean < hq_mean
    assert INPUT_QUALITY == "LQ"
    assert OUTPUT_QUALITY == "HQ"
