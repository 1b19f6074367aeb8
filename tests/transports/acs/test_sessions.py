"""CallSessions on a test clock: single-use tokens, expiry, revocation, ending a live call."""

from __future__ import annotations

import pytest

from pipeline.graph import Graph
from pipeline.runner import CallRunner
from transports.acs.sessions import CallSessions, SessionCounts


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_single_use_and_unguessable() -> None:
    sessions = CallSessions(clock=Clock())
    token = sessions.expect("call-1")
    other = sessions.expect("call-2")
    assert len(token) == 43 and token != other  # 32 random bytes, URL-safe base64
    assert sessions.claim(token[:-1]) is None
    assert sessions.claim("") is None
    assert sessions.claim("é" * 43) is None  # non-ASCII never raises
    session = sessions.claim(token)
    assert session is not None and session.call_connection_id == "call-1"
    assert sessions.live("call-1") is session
    assert sessions.claim(token) is None  # used
    assert sessions.counts() == SessionCounts(expected=1, live=1, connected=1, refused=4, expired=0, ended=0)


def test_an_unclaimed_token_expires_on_the_clock() -> None:
    clock = Clock()
    sessions = CallSessions(claim_within_s=30.0, clock=clock)
    early = sessions.expect("call-1")
    clock.now += 29.999
    assert sessions.claim(early) is not None
    late = sessions.expect("call-2")
    clock.now += 30.0
    assert sessions.claim(late) is None
    assert sessions.counts() == SessionCounts(expected=0, live=1, connected=1, refused=1, expired=1, ended=0)


def test_expecting_a_call_again_revokes_its_first_token() -> None:
    sessions = CallSessions(clock=Clock())
    first = sessions.expect("call-1")
    second = sessions.expect("call-1")
    assert sessions.counts().expected == 1
    assert sessions.claim(first) is None
    assert sessions.claim(second) is not None


def test_end_forgets_a_live_call_and_cancels_it_if_it_still_runs() -> None:
    sessions = CallSessions(clock=Clock())
    session = sessions.claim(sessions.expect("call-1"))
    assert session is not None
    runner = CallRunner(Graph("empty"))
    session.runner = runner
    cancelled: list[str] = []
    runner.cancel = cancelled.append  # type: ignore[method-assign]
    assert sessions.end(session, "hung up by the control plane")
    assert cancelled == ["hung up by the control plane"]
    assert not sessions.end(session)  # twice is harmless
    assert sessions.live("call-1") is None
    assert sessions.counts().ended == 1


def test_a_reconnected_call_ends_the_old_session() -> None:
    sessions = CallSessions(clock=Clock())
    old = sessions.claim(sessions.expect("call-1"))
    new = sessions.claim(sessions.expect("call-1"))
    assert old is not None and new is not None and old is not new
    assert sessions.live("call-1") is new
    assert not sessions.end(old)  # already ended when the new one came
    assert sessions.counts() == SessionCounts(expected=0, live=1, connected=2, refused=0, expired=0, ended=1)


def test_admit_makes_a_live_session_without_a_token() -> None:
    sessions = CallSessions(clock=Clock())
    session = sessions.admit("dev-1")
    assert sessions.live("dev-1") is session and sessions.counts().expected == 0


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="claim_within_s must be > 0"):
        CallSessions(claim_within_s=0)
    with pytest.raises(ValueError, match="call connection id is empty"):
        CallSessions().expect("")


def test_a_token_issued_under_a_provisional_id_is_bound_to_the_answered_call() -> None:
    sessions = CallSessions(clock=Clock())
    token = sessions.expect("incoming-1")
    assert sessions.bind("incoming-1", "call-1")
    session = sessions.claim(token)
    assert session is not None and session.call_connection_id == "call-1"
    assert sessions.live("call-1") is session and sessions.live("incoming-1") is None
    assert not sessions.bind("incoming-1", "call-1")  # nothing left under the provisional id


def test_a_media_socket_that_wins_the_race_with_the_answer_is_renamed_live() -> None:
    clock = Clock()
    sessions = CallSessions(claim_within_s=30.0, clock=clock)
    session = sessions.claim(sessions.expect("incoming-1"))
    assert session is not None and session.call_connection_id == "incoming-1"
    assert sessions.bind("incoming-1", "call-1")
    assert sessions.live("call-1") is session and session.call_connection_id == "call-1"
    assert sessions.live("incoming-1") is None
    assert sessions.end(session) and sessions.counts().live == 0
    sessions.expect("incoming-2")
    clock.now += 30.0
    assert not sessions.bind("incoming-2", "call-2")  # expired before the answer came
    with pytest.raises(ValueError, match="call connection id is empty"):
        sessions.bind("incoming-3", "")
