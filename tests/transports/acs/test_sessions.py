"""CallSessions on a test clock: calls known from the answer, single-use media tokens, callback
tokens, binding a provisional id, expiry, ending a call and remembering that it ended."""

from __future__ import annotations

import pytest

from pipeline.graph import Graph
from pipeline.runner import CallRunner
from transports.acs.sessions import PROVISIONAL_PREFIX, CallSessions, CallState, SessionCounts, provisional_id


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_call_is_known_from_the_answer_and_its_media_token_is_single_use() -> None:
    sessions = CallSessions(clock=Clock())
    token = sessions.expect("call-1")
    other = sessions.expect("call-2", direction="outbound")
    assert len(token) == 43 and token != other  # 32 random bytes, URL-safe base64
    session = sessions.live("call-1")
    assert session is not None and session.state is CallState.CONNECTING and not session.media_connected
    assert sessions.live("call-2") is not None and sessions.live("call-2").direction == "outbound"  # type: ignore[union-attr]
    assert sessions.counts() == SessionCounts(expected=2, live=2, connected=0, refused=0, expired=0, ended=0)
    assert sessions.claim(token[:-1]) is None
    assert sessions.claim("") is None
    assert sessions.claim("é" * 43) is None  # non-ASCII never raises
    assert sessions.claim(token) is session and session.media_connected
    assert sessions.claim(token) is None  # used
    assert sessions.counts() == SessionCounts(expected=1, live=2, connected=1, refused=4, expired=0, ended=0)


def test_each_call_has_its_own_callback_token_checked_against_the_call() -> None:
    sessions = CallSessions(clock=Clock())
    sessions.expect("call-1")
    sessions.expect("call-2")
    one, two = sessions.live("call-1"), sessions.live("call-2")
    assert one is not None and two is not None
    assert len(one.callback_token) == 43 and one.callback_token != two.callback_token
    assert sessions.callback("call-1", one.callback_token) is one
    assert sessions.callback("call-1", two.callback_token) is None  # another call's token
    assert sessions.callback("call-1", "") is None
    assert sessions.callback("call-1", "é") is None
    assert sessions.callback("call-9", one.callback_token) is None  # a bound call's token names only it
    sessions.expect("call-1")  # a new media token; the callback token stays
    assert sessions.callback("call-1", one.callback_token) is one


def test_an_unclaimed_media_token_expires_and_the_call_is_forgotten() -> None:
    clock = Clock()
    sessions = CallSessions(claim_within_s=30.0, clock=clock)
    early = sessions.expect("call-1")
    clock.now += 29.999
    assert sessions.claim(early) is not None
    late = sessions.expect("call-2")
    session = sessions.live("call-2")
    clock.now += 30.0
    assert sessions.claim(late) is None
    assert sessions.live("call-2") is None and sessions.has_ended("call-2")
    assert session is not None and session.state is CallState.DISCONNECTED
    assert session.error == "the media socket never connected"
    assert sessions.counts() == SessionCounts(expected=0, live=1, connected=1, refused=1, expired=1, ended=1)


def test_expecting_a_call_again_revokes_its_first_token_but_not_once_connected() -> None:
    sessions = CallSessions(clock=Clock())
    first = sessions.expect("call-1")
    second = sessions.expect("call-1")
    assert sessions.counts().expected == 1 and sessions.counts().live == 1
    assert sessions.claim(first) is None
    assert sessions.claim(second) is not None
    with pytest.raises(ValueError, match="call call-1 already has its media socket"):
        sessions.expect("call-1")


def test_end_forgets_a_call_cancels_its_graph_and_remembers_it_ended() -> None:
    clock = Clock()
    sessions = CallSessions(remember_ended_s=600.0, clock=clock)
    session = sessions.claim(sessions.expect("call-1"))
    assert session is not None
    runner = CallRunner(Graph("empty"))
    session.runner = runner
    cancelled: list[str] = []
    runner.cancel = cancelled.append  # type: ignore[method-assign]
    assert sessions.end(session, "hung up", error="")
    assert cancelled == ["hung up"]
    assert session.state is CallState.DISCONNECTED and session.ended_reason == "hung up"
    assert not sessions.end(session, "again")  # twice is harmless; the first reason stays
    assert session.ended_reason == "hung up" and cancelled == ["hung up"]
    assert sessions.live("call-1") is None and sessions.has_ended("call-1")
    assert sessions.counts().ended == 1
    clock.now += 600.0
    assert not sessions.has_ended("call-1")  # forgotten after remember_ended_s


def test_ending_a_call_before_its_socket_revokes_its_media_token() -> None:
    sessions = CallSessions(clock=Clock())
    token = sessions.expect("call-1")
    session = sessions.live("call-1")
    assert session is not None and sessions.end(session, "disconnected")
    assert sessions.claim(token) is None
    assert sessions.counts() == SessionCounts(expected=0, live=0, connected=0, refused=1, expired=0, ended=1)


def test_admit_makes_a_connected_call_without_a_token() -> None:
    sessions = CallSessions(clock=Clock())
    session = sessions.admit("dev-1")
    assert sessions.live("dev-1") is session and session.media_connected and sessions.counts().expected == 0
    with pytest.raises(ValueError, match="already known"):
        sessions.admit("dev-1")


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="claim_within_s must be > 0"):
        CallSessions(claim_within_s=0)
    with pytest.raises(ValueError, match="remember_ended_s must be > 0"):
        CallSessions(remember_ended_s=-1)
    with pytest.raises(ValueError, match="call connection id is empty"):
        CallSessions().expect("")
    with pytest.raises(ValueError, match="call connection id is empty"):
        CallSessions().bind("pending-x", "")


def test_a_call_expected_under_a_provisional_id_is_bound_to_its_real_id() -> None:
    sessions = CallSessions(clock=Clock())
    pending = provisional_id()
    assert pending.startswith(PROVISIONAL_PREFIX) and pending != provisional_id()
    token = sessions.expect(pending)
    assert sessions.bind(pending, "call-1")
    assert sessions.live(pending) is None
    session = sessions.claim(token)
    assert session is not None and session.call_connection_id == "call-1" and sessions.live("call-1") is session
    assert not sessions.bind(pending, "call-1")  # nothing left under the provisional id
    assert sessions.bind("call-1", "call-1")  # already bound: a no-op


def test_a_media_socket_that_wins_the_race_with_the_answer_keeps_its_session() -> None:
    sessions = CallSessions(clock=Clock())
    pending = provisional_id()
    session = sessions.claim(sessions.expect(pending))
    assert session is not None
    assert sessions.bind(pending, "call-1")
    assert sessions.live("call-1") is session and session.call_connection_id == "call-1" and session.media_connected


def test_the_first_callback_can_bind_a_call_before_the_answer_returns() -> None:
    sessions = CallSessions(clock=Clock())
    pending = provisional_id()
    sessions.expect(pending)
    sessions.expect(provisional_id())
    session = sessions.live(pending)
    assert session is not None
    assert sessions.callback("call-1", "a guess") is None and sessions.live(pending) is session
    assert sessions.callback("call-1", session.callback_token) is session
    assert session.call_connection_id == "call-1" and sessions.live(pending) is None
    assert sessions.bind(pending, "call-1") is False and sessions.live("call-1") is session  # the answer, later


def test_iterating_lists_the_known_calls() -> None:
    sessions = CallSessions(clock=Clock())
    sessions.expect("call-1")
    sessions.expect("call-2")
    assert sorted(s.call_connection_id for s in sessions) == ["call-1", "call-2"]
