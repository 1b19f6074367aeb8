"""The text end-of-turn judge (rules table) and its endpointing on virtual time."""

from __future__ import annotations

import pytest

from processors.audio.endpointing import (
    Endpointing,
    EndpointingParams,
    EndReason,
    ModelSilence,
    TurnEnded,
    TurnStarted,
)
from processors.audio.text_turn import TextSilence, TextVerdict, judge_turn

C, INC, U = TextVerdict.COMPLETE, TextVerdict.INCOMPLETE, TextVerdict.UNSURE


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("", U),  # rule 1: no words
        ("  ", U),
        ("I would like to um", INC),  # rule 2: filler
        ("uh", INC),
        ("my policy number is four five six", INC),  # rule 3: dictation after a cue
        ("my phone number is five five five", INC),
        ("it is spelled S M I", INC),
        ("the reference is 4 5", INC),
        ("My postcode is LS1.", INC),  # the STT writes a code as one token
        ("my policy number is 456", INC),
        ("I was born in nineteen eighty", C),  # a number not being dictated
        ("my policy number is", INC),  # rule 4: copula
        ("I would like to", INC),  # preposition / infinitive marker
        ("I was calling because", INC),  # conjunction
        ("the account is in the name of", INC),
        ("my date of birth is the", INC),  # article
        ("I want to change my", INC),  # possessive
        ("yes and", INC),
        ("I'm", INC),  # contraction ending in an auxiliary
        ("I don't know what", INC),  # rule 5: open question word
        ("yes", C),  # rule 6: acknowledgement
        ("No.", C),
        ("Okay", C),
        ("I would like to change my address.", C),  # rule 7: ends a clause
        ("my card was stolen", C),
        ("what is my balance", C),
        ("John Smith", U),  # rule 8: short, not an acknowledgement
        ("Leeds", U),
    ],
)
def test_the_rules_table(text: str, verdict: TextVerdict) -> None:
    assert judge_turn(text) is verdict


def _machine(*, model: ModelSilence | None = None) -> Endpointing:
    return Endpointing(EndpointingParams(silence_ms=600),
                       strategy=TextSilence(complete_ms=250, incomplete_ms=1500, model=model))


def test_complete_words_end_the_turn_250_ms_after_the_stop() -> None:
    machine = _machine()
    assert machine.on_speech_started(1000) == [TurnStarted(turn_id=1, at_ms=1000)]
    assert machine.on_words("I would like to change my address", heard_ms=2100, at_ms=2100) == []
    assert machine.on_speech_stopped(2000) == []  # confirmed later, stamped at the true stop
    assert machine.tick(2249) == []
    assert machine.tick(2260) == [TurnEnded(turn_id=1, at_ms=2250, reason=EndReason.TEXT,
                                            transcript="")]


def test_incomplete_words_wait_1500_ms_and_a_resumption_keeps_the_turn() -> None:
    machine = _machine()
    machine.on_speech_started(1000)
    machine.on_words("my policy number is", heard_ms=2000, at_ms=2040)
    machine.on_speech_stopped(2000)
    assert machine.deadline_ms == 3500
    assert machine.tick(2800) == []  # an 800 ms pause is not cut
    assert machine.on_speech_started(2800) == []
    machine.on_words("my policy number is four five six", heard_ms=3600, at_ms=3600)
    machine.on_speech_stopped(3500)
    assert machine.deadline_ms == 5000  # dictation after "number is": still incomplete
    assert machine.tick(5000) == [TurnEnded(turn_id=1, at_ms=5000, reason=EndReason.SILENCE)]


def test_stale_words_fall_back_to_the_silence_window() -> None:
    machine = _machine()
    machine.on_speech_started(1000)
    # The STT had heard only up to 1500 ms: those words say nothing of the end at 2000.
    machine.on_words("I would like to change my address", heard_ms=1500, at_ms=2300)
    machine.on_speech_stopped(2000)
    assert machine.deadline_ms == 2600
    assert machine.tick(2599) == []
    assert machine.tick(2600) == [TurnEnded(turn_id=1, at_ms=2600, reason=EndReason.SILENCE)]


def test_words_from_before_a_resumption_are_stale_for_the_next_pause() -> None:
    machine = _machine()
    machine.on_speech_started(1000)
    machine.on_words("yes", heard_ms=1400, at_ms=1400)
    machine.on_speech_stopped(1300)
    assert machine.deadline_ms == 1550  # "yes" complete
    assert machine.on_speech_started(1500) == []  # "... and also my address changed"
    machine.on_speech_stopped(3000)
    assert machine.deadline_ms == 3600  # "yes" was heard before this stop: silence window


def test_late_words_resize_the_window_but_never_into_the_past() -> None:
    machine = _machine()
    machine.on_speech_started(1000)
    machine.on_speech_stopped(2000)
    assert machine.deadline_ms == 2600  # no words yet: silence window
    ended = machine.on_words("my card was stolen", heard_ms=2100, at_ms=2400)
    assert ended == [TurnEnded(turn_id=1, at_ms=2400, reason=EndReason.TEXT)]


def test_no_words_at_all_is_silence_only() -> None:
    machine = _machine()
    machine.on_speech_started(1000)
    machine.on_speech_stopped(2000)
    assert machine.tick(2600) == [TurnEnded(turn_id=1, at_ms=2600, reason=EndReason.SILENCE)]


def test_a_caller_who_never_stops_is_cut_at_the_max_turn_length() -> None:
    machine = Endpointing(EndpointingParams(max_turn_ms=30_000), strategy=TextSilence())
    machine.on_speech_started(0)
    machine.on_words("and then and then and", heard_ms=29_000, at_ms=29_000)
    assert machine.tick(30_000) == [TurnEnded(turn_id=1, at_ms=30_000, reason=EndReason.MAX_DURATION)]


def test_with_smart_turn_a_sure_text_wins_and_an_unsure_one_defers_to_the_model() -> None:
    machine = _machine(model=ModelSilence(complete_ms=250, incomplete_ms=1500))
    machine.on_speech_started(1000)
    machine.on_words("my policy number is", heard_ms=2100, at_ms=2100)
    machine.on_speech_stopped(2000)
    machine.on_end_of_turn_probability(0.9, at_ms=2200)  # the model is fooled by the pitch
    assert machine.deadline_ms == 3500
    machine.on_speech_started(3000)
    machine.on_words("John Smith", heard_ms=4100, at_ms=4100)  # unsure text: the model decides
    machine.on_speech_stopped(4000)
    assert machine.deadline_ms == 4600  # model not asked yet for this pause: silence window
    assert machine.on_end_of_turn_probability(0.9, at_ms=4200) == []
    assert machine.tick(4300) == [TurnEnded(turn_id=1, at_ms=4250, reason=EndReason.MODEL)]


def test_a_greeting_alone_is_unsure_callers_go_on() -> None:
    """'Hello, <pause> this is Jane Doe': the greeting must not end the turn early."""
    assert judge_turn("Hello?").name == "UNSURE" and judge_turn("hi").name == "UNSURE"
    assert judge_turn("Yes.").name == "COMPLETE"
