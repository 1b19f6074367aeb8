"""Barge-in policy on virtual time: when, how fast, and when not."""

from __future__ import annotations

import numpy as np
import pytest

from processors.audio.bargein import BargeIn, BargeInParams, BargeInState, Interrupt, Pause, Resume, content_words
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


# --- false barge-in recovery (confirm_ms set): pause, then interrupt or resume ------------

RECOVER = BargeInParams(confirm_ms=900, min_words=3, resume_ms=600)


def test_recover_pauses_at_the_first_decision_and_resumes_resume_ms_after_a_cough() -> None:
    policy = BargeIn(RECOVER)
    policy.on_bot_started_speaking(0, turn=2)
    assert policy.on_user_speech_started(1000, now_ms=1200) == [Pause(turn=2, at_ms=1200, speech_started_at_ms=1000)]
    assert policy.state is BargeInState.PAUSED
    assert policy.on_user_speech_stopped(1250) == []
    assert policy.tick(1849) == []
    assert policy.tick(1860) == [Resume(turn=2, at_ms=1850)]
    assert policy.state is BargeInState.BOT_SPEAKING
    # The next cough pauses it again: each pause is its own episode.
    assert policy.on_user_speech_started(3000, now_ms=3200) == [Pause(turn=2, at_ms=3200, speech_started_at_ms=3000)]


def test_recover_interrupts_when_speech_outlasts_confirm_ms_even_across_a_short_pause() -> None:
    policy = BargeIn(RECOVER)
    policy.on_bot_started_speaking(0, turn=1)
    policy.on_user_speech_started(1000, now_ms=1200)
    policy.on_user_speech_stopped(1450)  # "No wait," ...
    assert policy.tick(1800) == []  # resume due at 2050: still paused
    assert policy.on_user_speech_started(1850, now_ms=2050) == [
        Interrupt(turn=1, at_ms=1900, speech_started_at_ms=1000)  # 900 ms after the first onset
    ]
    assert policy.on_user_speech_stopped(3000) == [] and policy.tick(9000) == []


def test_recover_interrupts_on_enough_words_and_counts_only_while_paused() -> None:
    policy = BargeIn(RECOVER)
    assert policy.on_words(5, 500) == []  # the bot is silent: nothing to interrupt
    policy.on_bot_started_speaking(600, turn=3)
    policy.on_user_speech_started(1000, now_ms=1200)
    assert policy.on_words(2, 1400) == []
    assert policy.on_words(3, 1500) == [Interrupt(turn=3, at_ms=1500, speech_started_at_ms=1000)]
    assert policy.on_words(9, 1600) == []  # one flush per utterance


def test_a_caller_talking_over_the_bot_for_minutes_is_one_interruption() -> None:
    policy = BargeIn(RECOVER)
    policy.on_bot_started_speaking(0, turn=1)
    events = policy.on_user_speech_started(100, now_ms=300)
    for now in range(320, 180_000, 20):
        events += policy.tick(now)
    events += policy.on_user_speech_stopped(180_000) + policy.on_bot_stopped_speaking(180_020)
    assert events == [Pause(turn=1, at_ms=300, speech_started_at_ms=100),
                      Interrupt(turn=1, at_ms=1000, speech_started_at_ms=100)]
    assert policy.state is BargeInState.BOT_SILENT


def test_a_late_stop_report_still_resolves_the_pause_in_order() -> None:
    policy = BargeIn(RECOVER)
    policy.on_bot_started_speaking(0, turn=1)
    # Nobody ticked: the stop arrives after the pause was due and the speech was short.
    assert policy.on_user_speech_started(1000) == []
    assert policy.on_user_speech_stopped(1300) == [Pause(turn=1, at_ms=1200, speech_started_at_ms=1000)]
    assert policy.on_user_speech_started(2500, now_ms=2700) == [
        Resume(turn=1, at_ms=1900), Pause(turn=1, at_ms=2700, speech_started_at_ms=2500)]


def test_recover_params_are_checked() -> None:
    with pytest.raises(ValueError, match="confirm_ms"):
        BargeInParams(min_speech_ms=200, confirm_ms=100)
    with pytest.raises(ValueError, match="min_words"):
        BargeInParams(min_words=0)
    with pytest.raises(ValueError, match="resume_ms"):
        BargeInParams(resume_ms=-1)


@pytest.mark.parametrize(("text", "count"), [
    ("Uh-huh.", 0), ("Okay, yeah, right.", 0), ("[cough]", 0), ("(coughs) Mm-hmm.", 0), ("*sigh*", 0),
    ("No wait, that's wrong.", 4), ("okay so I need a new date", 6), ("", 0),
])
def test_content_words_leave_out_backchannels_and_noise_tags(text: str, count: int) -> None:
    assert content_words(text) == count


def test_the_callers_turn_ending_while_paused_resumes_at_once_unless_they_still_speak() -> None:
    policy = BargeIn(RECOVER)
    policy.on_bot_started_speaking(0, turn=4)
    policy.on_user_speech_started(1000, now_ms=1200)
    assert policy.on_user_turn_ended(1250) == []  # cut by max length while speaking: still paused
    policy.on_user_speech_stopped(1400)
    assert policy.on_user_turn_ended(1650) == [Resume(turn=4, at_ms=1650)]
    assert policy.on_user_turn_ended(1700) == [] and policy.tick(5000) == []  # once
    assert policy.state is BargeInState.BOT_SPEAKING
