"""The live ACS calls of one worker: who may connect a media socket, and what is running.

When the control plane answers a call it asks ACS to stream the call's media to
``/acs/media?token=...``; the token comes from :meth:`CallSessions.expect`. It is
unguessable (``secrets.token_urlsafe(32)``), single-use, and expires if no socket claims
it within ``claim_within_s`` (a call answered and never connected leaves nothing behind).
When the answer returns the call's connection id, :meth:`~CallSessions.bind` names the
session with it (see there why it is issued under a provisional id). The media route
:meth:`~CallSessions.claim` s it when the socket connects, records the
call's graph, runner and task on the :class:`CallSession`, and :meth:`~CallSessions.end` s
it when the call is over.

State is small and per call, in memory; expiry is checked lazily on each ``expect`` and
``claim`` (no timer task). Time comes from an injectable clock (seconds, default
``time.monotonic``), so expiry is tested without waiting. Later issues keep this state in
Redis behind the same few methods.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.graph import Graph
from pipeline.runner import CallResult, CallRunner

__all__ = ["CallSession", "CallSessions", "SessionCounts"]


@dataclass(slots=True, kw_only=True, eq=False)
class CallSession:
    """One call of this worker: expected (token issued) or live (socket connected)."""

    call_connection_id: str
    #: When the token stops being accepted (the registry's clock, seconds).
    expires_at: float
    #: The running call, set by the media route once the socket is claimed.
    graph: Graph | None = None
    runner: CallRunner | None = None
    task: asyncio.Task[None] | None = None
    #: How the call ended, once it has.
    result: CallResult | None = None
    _token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCounts:
    """Calls now (``expected``, ``live``) and totals since start: media sockets ``connected``
    (claimed or admitted), tokens ``refused`` and ``expired``, live sessions ``ended``."""

    expected: int
    live: int
    connected: int
    refused: int
    expired: int
    ended: int


def _key(token: str) -> str:
    # Tokens are found by their hash, then compared in constant time: a dict lookup on the
    # token itself would leak, through timing, how much of a guess matched.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class CallSessions:
    """The registry of this worker's calls (see module docstring)."""

    def __init__(self, *, claim_within_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        if claim_within_s <= 0:
            raise ValueError(f"claim_within_s must be > 0, got {claim_within_s}")
        self.claim_within_s = claim_within_s
        self._clock = clock
        self._expected: dict[str, CallSession] = {}  # by the token's hash
        self._live: dict[str, CallSession] = {}  # by call connection id
        self._resumable: dict[str, CallSession] = {}  # live sessions, by their media token's hash
        self._connected = self._refused = self._expired = self._ended = 0

    def expect(self, call_connection_id: str) -> str:
        """Issue the single-use token with which the call's media socket must connect.

        A second ``expect`` for a call not yet connected revokes the first token.
        """
        if not call_connection_id:
            raise ValueError("expect: the call connection id is empty")
        now = self._clock()
        self._purge(now)
        for key, waiting in list(self._expected.items()):
            if waiting.call_connection_id == call_connection_id:
                del self._expected[key]
        token = secrets.token_urlsafe(32)
        self._expected[_key(token)] = CallSession(
            call_connection_id=call_connection_id, expires_at=now + self.claim_within_s, _token=token)
        return token

    def bind(self, provisional_id: str, call_connection_id: str) -> bool:
        """Rename the call expected (or already live) under ``provisional_id`` to its real id.

        ACS wants the media URL, token included, in the answer request, and only the answer's
        response carries the call connection id: the token is issued under a provisional id
        and bound here when the response comes. The media socket may win that race; the live
        session is then renamed. Returns ``False`` if nothing is known under
        ``provisional_id`` (the token expired, or the call has already ended).
        """
        if not call_connection_id:
            raise ValueError("bind: the call connection id is empty")
        self._purge(self._clock())
        for waiting in self._expected.values():
            if waiting.call_connection_id == provisional_id:
                waiting.call_connection_id = call_connection_id
                return True
        live = self._live.pop(provisional_id, None)
        if live is None:
            return False
        live.call_connection_id = call_connection_id
        previous = self._live.get(call_connection_id)
        if previous is not None:
            self.end(previous, "replaced by a new media socket")
        self._live[call_connection_id] = live
        return True

    def claim(self, token: str) -> CallSession | None:
        """The expected call for ``token``, now live; ``None`` if the token is unknown,
        used or expired (counted as refused)."""
        self._purge(self._clock())
        session = self._expected.get(_key(token))
        if session is None or not hmac.compare_digest(session._token.encode(), token.encode("utf-8", "surrogatepass")):
            self._refused += 1
            return None
        del self._expected[_key(token)]
        self._resumable[_key(token)] = session
        return self._go_live(session)

    def resume(self, token: str) -> CallSession | None:
        """The live call whose media socket connected with ``token``: ACS reconnecting it
        after a drop (the media URL is the same). ``None`` if no live call has that token
        (never issued, or the call has ended); not counted as refused, :meth:`claim` is
        asked next."""
        session = self._resumable.get(_key(token))
        if session is None or not hmac.compare_digest(session._token.encode(), token.encode("utf-8", "surrogatepass")):
            return None
        return session if self._live.get(session.call_connection_id) is session else None

    def admit(self, call_connection_id: str) -> CallSession:
        """A live session without a token: only for the media route's development switch."""
        return self._go_live(CallSession(call_connection_id=call_connection_id, expires_at=self._clock()))

    def live(self, call_connection_id: str) -> CallSession | None:
        """The live session of a call, if it is connected."""
        return self._live.get(call_connection_id)

    def end(self, session: CallSession, reason: str = "ended") -> bool:
        """Forget a live session; a call still running is cancelled with ``reason``.

        Returns whether the session was live (ending twice is harmless).
        """
        if self._live.get(session.call_connection_id) is not session:
            return False
        del self._live[session.call_connection_id]
        if session._token:
            self._resumable.pop(_key(session._token), None)
            session._token = ""
        self._ended += 1
        if session.result is None and session.runner is not None:
            session.runner.cancel(reason)
        return True

    def counts(self) -> SessionCounts:
        """How many calls are expected and live now, and the totals so far."""
        self._purge(self._clock())
        return SessionCounts(expected=len(self._expected), live=len(self._live), connected=self._connected,
                             refused=self._refused, expired=self._expired, ended=self._ended)

    def _go_live(self, session: CallSession) -> CallSession:
        previous = self._live.get(session.call_connection_id)
        if previous is not None:  # the call reconnected: the old socket's call ends
            self.end(previous, "replaced by a new media socket")
        self._live[session.call_connection_id] = session
        self._connected += 1
        return session

    def _purge(self, now: float) -> None:
        for key, session in list(self._expected.items()):
            if session.expires_at <= now:
                del self._expected[key]
                self._expired += 1
