"""Barge-in policy on virtual time: when, how fast, and when not."""

from __future__ import annotations

import numpy as np
import pytest

from processors.audio.bargein import BargeIn, BargeInParams, BargeInState, Interrupt
from processors.audio.vad import SpeechStarted, SpeechStopped, Vad, VadParams


def test_caller_speech_over_the_bot_interrupts_when_the_vad_reports_it() -> None:
    policy = BargeIn()
    assert policy.on_bot_started_speaking(0, turn=3) == []
    # The VAD reports at 1200 the speech that began at 1000.
    assert policy.on_user_speech_started(1000, now_ms=1200) == [
        Interrupt(turn=3, at_ms=1200, speech_started_at_ms=1000)
    ]
    assert policy.state is BargeInState.INTERRUPTED


def test_decision_by_tick_comes_exactly_min_speech_after_onset() -> None:
    policy = BargeIn(BargeInParams(min_speech_ms=200))
    states = [policy.state]
    events = []
    for call in (
        lambda: policy.on_bot_started_speaking(0, turn=1),
        lambda: policy.on_user_speech_started(1000),
        lambda: policy.tick(1100),
        lambda: policy.tick(1199),
        lambda: policy.tick(1200),
        lambda: policy.tick(1220),
        lambda: policy.on_bot_stopped_speaking(1300),
    ):
        events += call()
        states.append(policy.state)
    assert events == [Interrupt(turn=1, at_ms=1200, speech_started_at_ms=1000)]
    assert states == [
        BargeInState.BOT_SILENT,
        BargeInState.BOT_SPEAKING,
        BargeInState.OVERLAP,
        BargeInState.OVERLAP,
        BargeInState.OVERLAP,
        BargeInState.INTERRUPTED,
        BargeInState.INTERRUPTED,
        BargeInState.BOT_SILENT,
    ]


def test_a_100_ms_cough_does_not_interrupt() -> None:
    policy = BargeIn()
    policy.on_bot_started_speaking(0, turn=1)
    assert policy.on_user_speech_started(1000) == []
    assert policy.tick(1080) == []
    assert policy.on_user_speech_stopped(1100) == []
    assert policy.tick(5000) == []
    assert policy.state is BargeInState.BOT_SPEAKING


def test_speech_while_the_bot_is_silent_does_not_interrupt() -> None:
    policy = BargeIn()
    assert policy.on_user_speech_started(1000, now_ms=1200) == []
    assert policy.tick(3000) == []
    assert policy.on_user_speech_stopped(3000) == []
    assert policy.state is BargeInState.BOT_SILENT


def test_bot_stopping_before_the_decision_cancels_it() -> None:
    policy = BargeIn()
    policy.on_bot_started_speaking(0, turn=1)
    policy.on_user_speech_started(1000)
    assert policy.on_bot_stopped_speaking(1100) == []
    assert policy.tick(1500) == []


def test_speech_long_enough_is_caught_even_if_the_tick_was_late() -> None:
    policy = BargeIn()
    policy.on_bot_started_speaking(0, turn=1)
    policy.on_user_speech_started(1000)
    assert policy.on_user_speech_stopped(1500) == [Interrupt(turn=1, at_ms=1200, speech_started_at_ms=1000)]


def test_caller_already_speaking_when_the_bot_starts_interrupts_at_bot_start() -> None:
    policy = BargeIn()
    policy.on_user_speech_started(1000, now_ms=1200)
    assert policy.on_bot_started_speaking(1500, turn=2) == [
        Interrupt(turn=2, at_ms=1500, speech_started_at_ms=1000)
    ]


def test_uninterruptible_prompt_is_not_interrupted() -> None:
    policy = BargeIn()
    policy.set_uninterruptible(True, at_ms=0)
    policy.on_bot_started_speaking(0, turn=1)
    assert policy.on_user_speech_started(1000, now_ms=1200) == []
    assert policy.tick(1800) == []
    assert policy.on_user_speech_stopped(1900) == []
    assert policy.on_bot_stopped_speaking(4000) == []
    assert policy.uninterruptible is True


def test_speech_continuing_past_an_uninterruptible_part_interrupts_when_it_ends() -> None:
    policy = BargeIn()
    policy.set_uninterruptible(True, at_ms=0)
    policy.on_bot_started_speaking(0, turn=1)
    policy.on_user_speech_started(1000, now_ms=1200)
    assert policy.tick(1400) == []
    assert policy.set_uninterruptible(False, at_ms=1500) == [
        Interrupt(turn=1, at_ms=1500, speech_started_at_ms=1000)
    ]


def test_only_one_interrupt_per_bot_utterance() -> None:
    policy = BargeIn()
    policy.on_bot_started_speaking(0, turn=1)
    first = policy.on_user_speech_started(1000, now_ms=1200)
    assert first == [Interrupt(turn=1, at_ms=1200, speech_started_at_ms=1000)]
    # More speech over the same utterance (its audio is still draining): nothing.
    assert policy.on_user_speech_stopped(1500) == []
    assert policy.on_user_speech_started(1600, now_ms=1800) == []
    assert policy.tick(2500) == []
    policy.on_user_speech_stopped(2600)
    # The next utterance can be interrupted again.
    policy.on_bot_stopped_speaking(2700)
    policy.on_bot_started_speaking(4000, turn=2)
    assert policy.on_user_speech_started(5000, now_ms=5200) == [
        Interrupt(turn=2, at_ms=5200, speech_started_at_ms=5000)
    ]


def test_min_speech_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="min_speech_ms"):
        BargeInParams(min_speech_ms=-1)


def _drive(speech: tuple[int, int], min_speech_ms: float = 200.0) -> list[tuple[float, Interrupt]]:
    """Bot speaks from 0 ms; the caller's audio has speech in ``speech``; VAD feeds policy."""
    rate = 16000
    pcm = np.zeros(3 * rate, dtype=np.int16)
    pcm[speech[0] * rate // 1000 : speech[1] * rate // 1000] = 3000
    data = pcm.tobytes()
    vad = Vad(VadParams(start_ms=200), rate, classifier=lambda frame, _: any(frame))
    policy = BargeIn(BargeInParams(min_speech_ms=min_speech_ms))
    log = [(0.0, event) for event in policy.on_bot_started_speaking(0, turn=7)]
    for i in range(0, len(data), 640):
        now = (i + 640) / 32
        for vad_event in vad.feed(data[i : i + 640], now):
            if isinstance(vad_event, SpeechStarted):
                log += [(now, e) for e in policy.on_user_speech_started(vad_event.at_ms, now_ms=now)]
            elif isinstance(vad_event, SpeechStopped):
                log += [(now, e) for e in policy.on_user_speech_stopped(vad_event.at_ms)]
        log += [(now, e) for e in policy.tick(now)]
    return log


def test_with_the_vad_the_decision_comes_within_one_start_window_of_onset() -> None:
    log = _drive(speech=(1000, 2000))
    assert log == [(1200.0, Interrupt(turn=7, at_ms=1200.0, speech_started_at_ms=1000.0))]
    fed_at, interrupt = log[0]
    assert fed_at - interrupt.speech_started_at_ms <= VadParams().start_ms


def test_with_the_vad_a_cough_never_interrupts() -> None:
    assert _drive(speech=(1000, 1100)) == []
