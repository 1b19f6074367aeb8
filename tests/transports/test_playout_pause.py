"""Playout pause/resume (false barge-in): quiet at once, play on from the same sample."""

from transports.playout import Playout, PlayoutStarted, PlayoutStopped

RATE = 16000
MS = RATE * 2 // 1000  # bytes per ms


def ramp(ms: int, start: int = 0) -> bytes:
    """Each sample a different value, so the resumed position is visible byte for byte."""
    n = RATE * ms // 1000
    return b"".join(((start + i) % 30000).to_bytes(2, "little", signed=True) for i in range(n))


def test_pause_stops_frames_and_resume_plays_on_from_the_same_sample() -> None:
    p = Playout(RATE, frame_ms=20, lead_ms=0)
    pcm = ramp(200)
    p.add_text(1, "One two three four five.")
    p.add_audio(1, pcm)
    played = [p.next_frame()[0] for _ in range(3)]  # 60 ms out
    assert p.pause(1) is True and p.paused
    assert [p.next_frame() for _ in range(10)] == [(None, [])] * 10  # quiet while paused
    p.add_audio(1, ramp(40, start=RATE * 200 // 1000))  # TTS still arriving: kept
    assert p.buffered_ms == 180
    assert p.resume(1) == []
    p.end_response(1)
    rest: list[bytes] = []
    events = []
    while True:
        frame, evs = p.next_frame()
        events += evs
        if frame is None:
            break
        rest.append(frame)
    assert b"".join(played + rest) == pcm + ramp(40, start=RATE * 200 // 1000)  # nothing lost, nothing twice
    assert events == [PlayoutStopped(1, played_ms=240.0, interrupted=False, heard_text="One two three four five.")]


def test_flush_while_paused_reports_what_was_heard_up_to_the_pause() -> None:
    p = Playout(RATE, lead_ms=0)
    p.add_text(2, "The first clause is here,")
    p.add_audio(2, ramp(100))
    p.add_text(2, "and the second one is longer.")
    p.add_audio(2, ramp(200))
    for _ in range(8):  # 160 ms played
        p.next_frame()
    assert p.pause(2)
    for _ in range(20):  # a second of pause plays nothing and counts nothing as heard
        p.next_frame()
    assert p.flush(2) == [PlayoutStopped(2, played_ms=160.0, interrupted=True,
                                         heard_text="The first clause is here, and the")]
    assert not p.paused and p.idle


def test_pause_holds_the_turns_waiting_behind_and_a_response_that_ended_meanwhile() -> None:
    p = Playout(RATE, lead_ms=0)
    p.add_audio(1, ramp(40))
    assert p.next_frame()[1] == [PlayoutStarted(1)]
    assert p.pause(1)
    p.end_response(1)
    p.add_audio(2, ramp(20))  # the next turn waits for turn 1, which is paused
    p.end_response(2)
    assert [p.next_frame() for _ in range(5)] == [(None, [])] * 5
    assert p.resume(1) == []
    frame, events = p.next_frame()  # the last 20 ms of turn 1, then it stops
    assert frame is not None and events == [PlayoutStopped(1, played_ms=40.0, interrupted=False, heard_text="")]
    frame, events = p.next_frame()
    assert frame is not None and events[0] == PlayoutStarted(2) and events[1].turn == 2


def test_pause_of_a_turn_that_is_not_playing_is_refused() -> None:
    p = Playout(RATE, lead_ms=0)
    assert p.pause(3) is False and not p.paused  # nothing at all
    p.add_audio(4, ramp(20))
    assert p.pause(3) is False  # an older turn
    assert p.pause(4) is False and p.paused  # current, but nothing went out yet: nothing to clear
    assert p.resume(3) == [] and p.paused  # not the paused turn
    assert p.resume(4) == [] and not p.paused


def test_a_response_that_ended_empty_while_paused_stops_on_resume() -> None:
    p = Playout(RATE, lead_ms=60)
    p.add_text(5, "Hi.")
    p.pause(5)
    p.end_response(5)
    assert p.next_frame() == (None, [])
    assert p.resume(5) == []  # nothing played: no event, but the turn is over
    assert p.idle
    p.add_audio(6, ramp(20))
    p.end_response(6)
    assert p.next_frame()[1][0] == PlayoutStarted(6)
