"""Endpointing on virtual time: exact turn ends, pauses, max duration, strategies."""

from __future__ import annotations

import numpy as np
import pytest

from processors.audio.endpointing import (
    Endpointing,
    EndpointingEvent,
    EndpointingParams,
    EndReason,
    ModelSilence,
    TurnEnded,
    TurnSnapshot,
    TurnStarted,
    TurnState,
)
from processors.audio.vad import SpeechStarted, Vad, VadParams


def test_turn_ends_exactly_one_silence_window_after_the_speech_stop() -> None:
    machine = Endpointing(EndpointingParams(silence_ms=600))
    assert machine.on_speech_started(1000) == [TurnStarted(turn_id=1, at_ms=1000)]
    assert machine.turn_id == 1
    assert machine.on_speech_stopped(2000) == []
    assert machine.deadline_ms == 2600
    assert machine.tick(2599.9) == []
    assert machine.tick(2600) == [TurnEnded(turn_id=1, at_ms=2600, reason=EndReason.SILENCE)]
    assert machine.turn_id is None
    assert machine.tick(5000) == []


def test_a_late_tick_reports_the_true_end_time() -> None:
    machine = Endpointing()
    machine.on_speech_started(1000)
    machine.on_speech_stopped(2000)
    assert machine.tick(3000) == [TurnEnded(turn_id=1, at_ms=2600, reason="silence")]


def test_a_pause_shorter_than_the_window_continues_the_turn() -> None:
    machine = Endpointing()
    states = [machine.state]
    events: list[EndpointingEvent] = []
    for call in (
        lambda: machine.on_speech_started(1000),
        lambda: machine.on_speech_stopped(2000),
        lambda: machine.tick(2300),
        lambda: machine.on_speech_started(2500),  # 500 ms pause < 600 ms window
        lambda: machine.on_speech_stopped(3000),
        lambda: machine.tick(3600),
        lambda: machine.on_speech_started(5000),
    ):
        events += call()
        states.append(machine.state)
    assert events == [
        TurnStarted(turn_id=1, at_ms=1000),
        TurnEnded(turn_id=1, at_ms=3600, reason=EndReason.SILENCE),
        TurnStarted(turn_id=2, at_ms=5000),
    ]
    assert states == [
        TurnState.IDLE,
        TurnState.SPEAKING,
        TurnState.PAUSED,
        TurnState.PAUSED,
        TurnState.SPEAKING,
        TurnState.PAUSED,
        TurnState.IDLE,
        TurnState.SPEAKING,
    ]


def test_speech_resuming_at_the_deadline_is_a_new_turn_even_without_a_tick() -> None:
    machine = Endpointing()
    machine.on_speech_started(1000)
    machine.on_speech_stopped(2000)
    assert machine.on_speech_started(2600) == [
        TurnEnded(turn_id=1, at_ms=2600, reason=EndReason.SILENCE),
        TurnStarted(turn_id=2, at_ms=2600),
    ]


def test_a_very_long_utterance_is_cut_at_max_duration() -> None:
    machine = Endpointing(EndpointingParams(max_turn_ms=30_000))
    machine.on_speech_started(1000)
    assert machine.tick(30_999) == []
    assert machine.tick(31_000) == [TurnEnded(turn_id=1, at_ms=31_000, reason=EndReason.MAX_DURATION)]
    assert machine.state is TurnState.CUT_OFF
    # The rest of that speech opens no turn; the next onset after it stops does.
    assert machine.tick(40_000) == []
    assert machine.on_speech_stopped(45_000) == []
    assert machine.state is TurnState.IDLE
    assert machine.on_speech_started(46_000) == [TurnStarted(turn_id=2, at_ms=46_000)]


def test_max_duration_wins_when_it_falls_inside_the_silence_window() -> None:
    machine = Endpointing(EndpointingParams(max_turn_ms=10_000))
    machine.on_speech_started(0)
    machine.on_speech_stopped(9_800)  # silence deadline 10_400 is past the max
    assert machine.tick(10_400) == [TurnEnded(turn_id=1, at_ms=10_000, reason=EndReason.MAX_DURATION)]
    assert machine.state is TurnState.IDLE


def test_turn_ids_come_from_the_given_allocator() -> None:
    ids = iter([41, 42, 43])
    machine = Endpointing(next_turn=lambda: next(ids))
    starts = []
    for t in (0, 2000, 4000):
        starts += machine.on_speech_started(t)
        machine.on_speech_stopped(t + 500)
        machine.tick(t + 1500)
    assert [e.turn_id for e in starts] == [41, 42, 43]


def test_transcripts_are_collected_into_the_turn_end() -> None:
    machine = Endpointing()
    machine.on_speech_started(0)
    machine.on_transcript("my account", final=True, at_ms=800)
    machine.on_transcript("number is", final=False, at_ms=900)
    machine.on_speech_stopped(1000)
    assert machine.tick(1600) == [
        TurnEnded(turn_id=1, at_ms=1600, reason=EndReason.SILENCE, transcript="my account number is")
    ]
    # A late final of the ended turn opens nothing.
    assert machine.on_transcript("number is five", final=True, at_ms=1700) == []
    assert machine.state is TurnState.IDLE


def test_a_complete_turn_ends_after_the_short_window_and_says_the_model_ended_it() -> None:
    machine = Endpointing(strategy=ModelSilence(complete_ms=250, incomplete_ms=1500))
    machine.on_speech_started(0)
    machine.on_speech_stopped(1000)
    assert machine.deadline_ms == 1600  # no answer yet: the base window
    assert machine.on_end_of_turn_probability(0.9, at_ms=1200) == []
    assert machine.deadline_ms == 1250
    assert machine.tick(1249) == []
    assert machine.tick(1250) == [TurnEnded(turn_id=1, at_ms=1250, reason=EndReason.MODEL)]


def test_an_incomplete_turn_waits_the_long_window_then_ends_on_silence() -> None:
    machine = Endpointing(strategy=ModelSilence(complete_ms=250, incomplete_ms=1500))
    machine.on_speech_started(0)
    machine.on_speech_stopped(1000)
    machine.on_end_of_turn_probability(0.2, at_ms=1300)
    assert machine.tick(2499) == []
    assert machine.tick(2500) == [TurnEnded(turn_id=1, at_ms=2500, reason=EndReason.SILENCE)]


def test_a_mid_sentence_pause_judged_incomplete_is_bridged_and_a_new_verdict_is_needed() -> None:
    """"my policy number is ... four five six": the pause is not cut, the end is fast."""
    machine = Endpointing(strategy=ModelSilence(complete_ms=250, incomplete_ms=1500))
    machine.on_speech_started(0)
    machine.on_speech_stopped(1300)
    machine.on_end_of_turn_probability(0.3, at_ms=1600)  # "my policy number is"
    assert machine.on_speech_started(2100) == []  # 800 ms pause: same turn
    assert machine.tick(2900) == []  # the old verdict's deadline (2800) is gone
    machine.on_speech_stopped(3000)
    assert machine.deadline_ms == 3600  # base window until the model answers again
    assert machine.on_end_of_turn_probability(0.99, at_ms=3300) == [
        TurnEnded(turn_id=1, at_ms=3300, reason=EndReason.MODEL)  # 3250 is past: ends on the answer
    ]


def test_a_model_verdict_no_shorter_than_the_base_window_is_a_silence_end() -> None:
    machine = Endpointing(EndpointingParams(silence_ms=200), strategy=ModelSilence(complete_ms=250))
    machine.on_speech_started(0)
    machine.on_speech_stopped(1000)
    machine.on_end_of_turn_probability(1.0, at_ms=1100)
    assert machine.tick(1250) == [TurnEnded(turn_id=1, at_ms=1250, reason=EndReason.SILENCE)]


def test_a_late_model_answer_ends_the_turn_when_it_arrives_not_in_the_past() -> None:
    machine = Endpointing(strategy=ModelSilence(complete_ms=200, incomplete_ms=1500))
    machine.on_speech_started(0)
    machine.on_speech_stopped(1000)
    assert machine.on_end_of_turn_probability(1.0, at_ms=1450) == [
        TurnEnded(turn_id=1, at_ms=1450, reason=EndReason.MODEL)
    ]


def test_a_model_answer_while_the_caller_speaks_is_ignored() -> None:
    machine = Endpointing(strategy=ModelSilence())
    machine.on_speech_started(0)
    machine.on_end_of_turn_probability(1.0, at_ms=500)
    machine.on_speech_stopped(1000)
    assert machine.deadline_ms == 1600


def test_model_silence_rejects_a_complete_window_longer_than_the_incomplete_one() -> None:
    with pytest.raises(ValueError, match="complete_ms"):
        ModelSilence(complete_ms=2000, incomplete_ms=1500)
    with pytest.raises(ValueError, match="threshold"):
        ModelSilence(threshold=1.0)


def test_probability_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="probability"):
        Endpointing().on_end_of_turn_probability(1.5, at_ms=0)


def test_a_custom_strategy_sees_the_transcript() -> None:
    class QuestionsEndFast:
        def silence_ms(self, turn: TurnSnapshot, base_ms: float) -> float:
            return 250.0 if turn.transcript.endswith("?") else base_ms

    machine = Endpointing(strategy=QuestionsEndFast())
    machine.on_speech_started(0)
    machine.on_speech_stopped(1000)
    machine.on_transcript("can you hear me?", final=True, at_ms=1100)
    assert machine.tick(1250) == [
        TurnEnded(turn_id=1, at_ms=1250, reason=EndReason.SILENCE, transcript="can you hear me?")
    ]


def test_reset_drops_the_turn_without_an_event() -> None:
    machine = Endpointing()
    machine.on_speech_started(0)
    machine.reset()
    assert machine.state is TurnState.IDLE
    assert machine.tick(60_000) == []
    assert machine.on_speech_started(61_000) == [TurnStarted(turn_id=2, at_ms=61_000)]


def test_invalid_params_are_rejected() -> None:
    with pytest.raises(ValueError, match="silence_ms"):
        EndpointingParams(silence_ms=0)
    with pytest.raises(ValueError, match="max_turn_ms"):
        EndpointingParams(max_turn_ms=-1)


def test_vad_and_endpointing_together_on_virtual_time() -> None:
    """Two bursts 300 ms apart are one turn; it ends 600 ms after the last stop."""
    rate = 16000
    pcm = np.zeros(5 * rate, dtype=np.int16)
    pcm[rate * 1 : rate * 2] = 3000  # 1000-2000 ms
    pcm[int(rate * 2.3) : rate * 3] = 3000  # 2300-3000 ms
    data = pcm.tobytes()
    vad = Vad(VadParams(start_ms=200, stop_ms=300), rate, classifier=lambda frame, _: any(frame))
    machine = Endpointing(EndpointingParams(silence_ms=600))
    log: list[tuple[float, EndpointingEvent]] = []
    for i in range(0, len(data), 640):
        now = (i + 640) / 32  # ms at the end of this 20 ms chunk
        for vad_event in vad.feed(data[i : i + 640], now):
            if isinstance(vad_event, SpeechStarted):
                out = machine.on_speech_started(vad_event.at_ms)
            else:
                out = machine.on_speech_stopped(vad_event.at_ms)
            log += [(now, event) for event in out]
        log += [(now, event) for event in machine.tick(now)]
    assert log == [
        (1200.0, TurnStarted(turn_id=1, at_ms=1000.0)),
        (3600.0, TurnEnded(turn_id=1, at_ms=3600.0, reason=EndReason.SILENCE)),
    ]
