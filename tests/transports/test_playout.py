"""Playout: lead buffer, paced frames, end of response, flush and what was heard."""

import pytest

from pipeline.errors import FrameError
from transports.playout import Playout, PlayoutStarted, PlayoutStopped

RATE = 16000
MS = RATE * 2 // 1000  # bytes per ms


def audio(ms: int, value: int = 1000) -> bytes:
    return (value.to_bytes(2, "little", signed=True)) * (RATE * ms // 1000)


def test_waits_for_lead_then_plays_whole_frames_and_stops_at_the_end() -> None:
    p = Playout(RATE, frame_ms=20, lead_ms=60)
    p.add_text(1, "Hello there.")
    p.add_audio(1, audio(40))
    assert p.next_frame() == (None, [])  # 40 ms < 60 ms lead
    p.add_audio(1, audio(50))
    frame, events = p.next_frame()
    assert events == [PlayoutStarted(1)] and frame is not None and len(frame) == 20 * MS
    assert p.playing and p.buffered_ms == 70
    p.end_response(1)
    out = [p.next_frame() for i in range(4)]
    assert [len(f) if f else 0 for f, _ in out] == [20 * MS, 20 * MS, 20 * MS, 20 * MS]  # last one padded
    assert out[3][1] == [PlayoutStopped(1, played_ms=90.0, interrupted=False, heard_text="Hello there.")]
    assert p.idle and p.next_frame() == (None, [])


def test_end_of_response_plays_short_audio_without_waiting_for_lead() -> None:
    p = Playout(RATE, lead_ms=100)
    p.add_audio(3, audio(20))
    p.end_response(3)
    frame, events = p.next_frame()
    assert frame is not None and events[0] == PlayoutStarted(3)
    assert events[1].interrupted is False and events[1].played_ms == 20.0


def test_flush_drops_everything_and_reports_the_heard_words() -> None:
    p = Playout(RATE, lead_ms=0)
    p.add_text(2, "The first clause is here,")
    p.add_audio(2, audio(100))
    p.add_text(2, "and the second one is longer.")
    p.add_audio(2, audio(200))
    for _ in range(8):  # play 160 ms: all of clause 1 and 60 of 200 ms of clause 2
        p.next_frame()
    events = p.flush(2)
    assert events == [PlayoutStopped(2, played_ms=160.0, interrupted=True,
                                     heard_text="The first clause is here, and the")]
    assert p.idle and p.buffered_ms == 0 and p.next_frame() == (None, [])
    assert p.flush(2) == []  # nothing current: a second flush is a no-op


def test_flush_of_an_older_turn_leaves_a_newer_answer_alone() -> None:
    p = Playout(RATE, lead_ms=0)
    p.add_audio(5, audio(100))
    assert p.flush(4) == [] and p.buffered_ms == 100


def test_a_newer_turn_waits_until_the_one_playing_has_played_out() -> None:
    p = Playout(RATE, lead_ms=0)
    p.add_text(1, "Welcome.")
    p.add_audio(1, audio(40))
    p.end_response(1)
    p.add_text(2, "This call is recorded.")  # a second bot utterance, on a turn of its own
    p.add_audio(2, audio(40))
    p.end_response(2)
    assert p.turn == 1 and p.buffered_ms == 40 and not p.idle
    out = [p.next_frame() for _ in range(5)]
    assert [f is not None for f, _ in out] == [True, True, True, True, False]
    assert [e for _, e in out] == [
        [PlayoutStarted(1)],
        [PlayoutStopped(1, played_ms=40.0, interrupted=False, heard_text="Welcome.")],
        [PlayoutStarted(2)],
        [PlayoutStopped(2, played_ms=40.0, interrupted=False, heard_text="This call is recorded.")],
        [],
    ]
    assert p.idle


def test_a_flush_drops_the_turn_playing_and_the_turns_waiting_up_to_it() -> None:
    p = Playout(RATE, lead_ms=0)
    p.add_text(1, "One two three four.")
    p.add_audio(1, audio(100))
    p.add_text(2, "Next.")
    p.add_audio(2, audio(40))
    p.add_audio(3, audio(40))
    p.next_frame()
    assert p.flush(2) == [PlayoutStopped(1, played_ms=20.0, interrupted=True, heard_text="One"),
                          PlayoutStopped(2, played_ms=0.0, interrupted=True, heard_text="")]
    assert p.turn == 3 and p.buffered_ms == 40  # turn 3 was not flushed: it plays next
    assert p.next_frame()[1] == [PlayoutStarted(3)]


def test_bad_audio_and_settings() -> None:
    p = Playout(RATE)
    with pytest.raises(FrameError, match="even byte count"):
        p.add_audio(1, b"\x00")
    with pytest.raises(ValueError):
        Playout(RATE, frame_ms=0)


def test_bot_speech_of_turn_0_is_refused() -> None:
    p = Playout(RATE)
    with pytest.raises(FrameError, match=r"turn 0.*ctx\.next_turn"):
        p.add_text(0, "Welcome to the claims line.")
    with pytest.raises(FrameError, match="turn 0"):
        p.add_audio(0, audio(20))
    assert p.idle and p.turn == 0


def test_a_greeting_on_turn_1_can_be_flushed_and_reports_what_was_heard() -> None:
    p = Playout(RATE, lead_ms=0)
    p.add_text(1, "Welcome to the claims line.")
    p.add_audio(1, audio(200))
    for _ in range(5):
        p.next_frame()
    assert p.flush(1) == [PlayoutStopped(1, played_ms=100.0, interrupted=True, heard_text="Welcome to")]  # "the" was cut off mid-word


def test_a_turn_that_played_out_is_not_flushed_again() -> None:
    p = Playout(RATE, lead_ms=0)
    p.add_text(1, "Short.")
    p.add_audio(1, audio(20))
    p.end_response(1)
    frame, events = p.next_frame()
    assert frame is not None
    assert events == [PlayoutStarted(1), PlayoutStopped(1, played_ms=20.0, interrupted=False, heard_text="Short.")]
    assert p.flush(1) == []  # a late barge-in finds nothing playing: no second stop event


def test_audio_of_a_flushed_or_older_turn_never_plays() -> None:
    p = Playout(RATE, lead_ms=0)
    p.add_audio(2, audio(40))
    p.flush(2)
    p.add_audio(2, audio(40))
    assert p.idle  # a straggler of the flushed turn
    p.add_audio(4, audio(40))
    p.add_audio(3, audio(40))
    assert p.turn == 4 and p.buffered_ms == 40 and p.next_frame()[1] == [PlayoutStarted(4)]  # 3 is older
    assert p.flush(3) == [] and p.buffered_ms == 20


def test_a_flush_before_anything_played_reports_nothing_heard() -> None:
    p = Playout(RATE, lead_ms=60)
    p.add_text(5, "Your policy number is")
    p.add_audio(5, audio(40))  # under the lead: not playing yet
    assert p.next_frame() == (None, [])
    assert p.flush(5) == [PlayoutStopped(5, played_ms=0.0, interrupted=True, heard_text="")]
