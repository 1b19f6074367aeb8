"""Vad on virtual time: exact event times, state sequences, volume floor, webrtcvad."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processors.audio.vad import (
    SpeechStarted,
    SpeechStopped,
    Vad,
    VadEvent,
    VadParams,
    VadState,
)

RATE = 16000
LOUD = 3000  # about -21 dBFS: a normal speaking level


def loud_is_speech(frame: bytes, sample_rate: int) -> bool:
    """Injected classifier: a frame is speech iff it is not digital silence."""
    return any(frame)


def always_speech(frame: bytes, sample_rate: int) -> bool:
    return True


def timeline(spans: list[tuple[int, int]], total_ms: int, level: int = LOUD) -> bytes:
    """PCM with a constant ``level`` inside the ``[start, end)`` ms spans, zeros elsewhere."""
    pcm = np.zeros(total_ms * RATE // 1000, dtype=np.int16)
    for start, end in spans:
        pcm[start * RATE // 1000 : end * RATE // 1000] = level
    return pcm.tobytes()


class Recorder:
    """Feeds a Vad chunk by chunk on virtual time; records events and states."""

    def __init__(self, vad: Vad) -> None:
        self.vad = vad
        self.events: list[tuple[float, VadEvent]] = []  # (time fed, event)
        self.states: list[tuple[float, VadState]] = [(0.0, vad.state)]

    def run(self, pcm: bytes, chunk_ms: float = 20.0, start_ms: float = 0.0) -> None:
        bytes_per_ms = 2 * RATE / 1000
        position = 0
        size = round(chunk_ms * bytes_per_ms)
        while position < len(pcm):
            chunk = pcm[position : position + size]
            position += len(chunk)
            now = start_ms + position / bytes_per_ms
            self.feed(chunk, now)

    def feed(self, chunk: bytes, now: float) -> None:
        for event in self.vad.feed(chunk, now):
            self.events.append((now, event))
        if self.vad.state is not self.states[-1][1]:
            self.states.append((now, self.vad.state))


def make_vad(**overrides: float) -> Vad:
    params = VadParams(**overrides)  # type: ignore[arg-type]
    return Vad(params, RATE, classifier=loud_is_speech)


def test_speech_from_1000_to_2000_gives_exact_events_and_state_sequence() -> None:
    recorder = Recorder(make_vad(start_ms=200, stop_ms=300))
    recorder.run(timeline([(1000, 2000)], 3000))
    assert recorder.events == [
        (1200.0, SpeechStarted(at_ms=1000.0)),  # fed the frame ending at 1200
        (2300.0, SpeechStopped(at_ms=2000.0)),  # 300 ms of silence confirmed at 2300
    ]
    assert recorder.states == [
        (0.0, VadState.QUIET),
        (1020.0, VadState.STARTING),
        (1200.0, VadState.SPEAKING),
        (2020.0, VadState.STOPPING),
        (2300.0, VadState.QUIET),
    ]


@pytest.mark.parametrize("chunk_ms", [10.0, 20.0, 30.0, 7.0, 125.0, 3000.0])
def test_chunk_size_does_not_change_event_times(chunk_ms: float) -> None:
    recorder = Recorder(make_vad())
    recorder.run(timeline([(1000, 2000)], 3000), chunk_ms=chunk_ms)
    assert [event for _, event in recorder.events] == [
        SpeechStarted(at_ms=1000.0),
        SpeechStopped(at_ms=2000.0),
    ]
    # Each event is reported by the first feed that contains the frame completing it.
    fed = [now for now, _ in recorder.events]
    assert fed == [
        pytest.approx(min(3000.0, math.ceil(1200 / chunk_ms) * chunk_ms)),
        pytest.approx(min(3000.0, math.ceil(2300 / chunk_ms) * chunk_ms)),
    ]


def test_a_cough_shorter_than_the_start_window_is_not_speech() -> None:
    recorder = Recorder(make_vad(start_ms=200))
    recorder.run(timeline([(1000, 1100)], 2000))
    assert recorder.events == []
    # 100 ms of speech, then 3 silent frames exceed the 2 tolerated misses.
    assert recorder.states == [
        (0.0, VadState.QUIET),
        (1020.0, VadState.STARTING),
        (1160.0, VadState.QUIET),
    ]


def test_a_dropped_frame_inside_the_start_window_is_tolerated() -> None:
    recorder = Recorder(make_vad(start_ms=200))
    recorder.run(timeline([(1000, 1100), (1120, 2000)], 3000))
    assert recorder.events[0] == (1200.0, SpeechStarted(at_ms=1000.0))


def test_a_short_pause_inside_speech_does_not_stop_it() -> None:
    recorder = Recorder(make_vad(stop_ms=300))
    recorder.run(timeline([(1000, 1500), (1600, 2000)], 3000))
    assert recorder.events == [
        (1200.0, SpeechStarted(at_ms=1000.0)),
        (2300.0, SpeechStopped(at_ms=2000.0)),
    ]
    # The pause opens a stop window; the 4th voiced frame (3 are tolerated) closes it.
    assert recorder.states == [
        (0.0, VadState.QUIET),
        (1020.0, VadState.STARTING),
        (1200.0, VadState.SPEAKING),
        (1520.0, VadState.STOPPING),
        (1680.0, VadState.SPEAKING),
        (2020.0, VadState.STOPPING),
        (2300.0, VadState.QUIET),
    ]


def test_audio_below_min_volume_is_silence_even_if_the_classifier_says_speech() -> None:
    vad = Vad(VadParams(min_volume=-50.0), RATE, classifier=always_speech)
    level = round(32768 * 10 ** (-60 / 20))  # -60 dBFS
    recorder = Recorder(vad)
    recorder.run(timeline([(0, 2000)], 2000, level=level))
    assert recorder.events == []
    assert recorder.states == [(0.0, VadState.QUIET)]


def test_leftover_samples_are_kept_for_the_next_frame() -> None:
    classified: list[int] = []

    def count(frame: bytes, rate: int) -> bool:
        classified.append(len(frame))
        return True

    vad = Vad(VadParams(), RATE, classifier=count)
    pcm = timeline([(0, 60)], 60)
    vad.feed(pcm[: 2 * 480], 30.0)  # 30 ms: one whole frame, 10 ms left over
    assert len(classified) == 1
    vad.feed(pcm[2 * 480 :], 60.0)  # 30 ms more: with the 10 left over, two frames
    assert classified == [640, 640, 640]


def test_close_stops_open_speech() -> None:
    vad = make_vad()
    vad.feed(timeline([(0, 1000)], 1000), 1000.0)
    assert vad.speaking is True
    assert vad.close(1000.0) == [SpeechStopped(at_ms=1000.0)]
    assert vad.state is VadState.QUIET
    assert vad.close(1100.0) == []


def test_close_during_stop_window_reports_the_silence_start() -> None:
    vad = make_vad()
    vad.feed(timeline([(0, 1000)], 1100), 1100.0)
    assert vad.state is VadState.STOPPING
    assert vad.close(1100.0) == [SpeechStopped(at_ms=1000.0)]


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_webrtcvad_detects_a_synthetic_vowel(rate: int) -> None:
    """The default classifier on a harmonic, formant-shaped signal (a sung /a/)."""
    t = np.arange(rate) / rate
    voice = np.zeros_like(t)
    for k in range(1, 40):
        freq = 120.0 * k
        if freq > rate / 2 - 200:
            break
        gain = sum(1 / (1 + ((freq - formant) / 80) ** 2) for formant in (700, 1200, 2600)) + 0.05
        voice += gain * np.sin(2 * np.pi * freq * t + k)
    voice = voice / np.abs(voice).max() * 8000
    pcm = np.concatenate([np.zeros(rate), voice, np.zeros(rate)]).astype(np.int16).tobytes()
    vad = Vad(VadParams(), rate)
    events: list[VadEvent] = []
    step = 2 * rate // 50
    for i in range(0, len(pcm), step):
        events += vad.feed(pcm[i : i + step], (i + step) / (2 * rate) * 1000)
    assert len(events) == 2
    started, stopped = events
    assert isinstance(started, SpeechStarted)
    assert isinstance(stopped, SpeechStopped)
    assert 1000.0 <= started.at_ms <= 1040.0
    assert 2000.0 <= stopped.at_ms <= 2100.0  # webrtcvad adds a little hangover


def test_digital_silence_never_reaches_the_classifier() -> None:
    calls: list[int] = []

    def counting(frame: bytes, sample_rate: int) -> bool:
        calls.append(len(frame))
        return True

    vad = Vad(VadParams(), RATE, classifier=counting)
    vad.feed(timeline([(0, 40)], 100), 100.0)
    assert calls == [640, 640]  # only the two loud frames


@pytest.mark.parametrize("rate", [11025, 22050, 24000, 44100])
def test_unsupported_sample_rate_is_rejected(rate: int) -> None:
    with pytest.raises(ValueError, match=f"unsupported sample rate {rate}"):
        Vad(VadParams(), rate)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"aggressiveness": 4}, "aggressiveness"),
        ({"frame_ms": 25}, "frame_ms"),
        ({"start_ms": 0}, "positive"),
        ({"min_ratio": 0.2}, "min_ratio"),
    ],
)
def test_invalid_params_are_rejected(overrides: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VadParams(**overrides)  # type: ignore[arg-type]


def test_odd_byte_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a whole number"):
        make_vad().feed(b"\x00", 0.0)


def test_defaults_are_the_documented_telephony_tuning() -> None:
    assert VadParams() == VadParams(
        aggressiveness=2, start_ms=200.0, stop_ms=300.0, min_volume=-50.0, frame_ms=20, min_ratio=0.8
    )
