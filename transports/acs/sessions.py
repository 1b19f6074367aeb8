"""The ACS calls of one worker, from the moment we answer or dial them until they end.

A call is known as soon as the control plane answers or dials it
(:meth:`CallSessions.expect`), not only once its media socket connects: callbacks about
it (connected, participants, recording, transfer, disconnected) arrive before, during and
after the media. Each :class:`CallSession` keeps the little state a call needs: its
:class:`CallState` (``connecting -> connected -> disconnected``), the server call id
(recording needs it), the participants of the latest ``ParticipantsUpdated``, the
recording's id and state, and the link to its media: the graph, runner and task the media
route records once the socket is claimed.

Two unguessable tokens (``secrets.token_urlsafe(32)``) are issued per call:

- the media token, in the ``/acs/media?token=...`` URL: the media route
  :meth:`~CallSessions.claim` s it when ACS connects the socket; from then on it only
  :meth:`~CallSessions.resume` s the same live call (ACS reconnecting a dropped socket uses
  the same URL; the route allows one socket at a time), and it dies with the call. A call
  whose socket has not connected within ``claim_within_s`` is forgotten (a call answered
  and never streamed leaves nothing behind);
- the callback token, in the ``/acs/callbacks?token=...`` URL: every callback of the call
  carries it, and :meth:`~CallSessions.callback` checks it in constant time.

ACS wants both URLs in the answer or create request, and only the response carries the
call connection id, so a call is expected under a provisional id and
:meth:`~CallSessions.bind` s to its real id when the response comes (or when its first
callback does, whichever is first). :meth:`~CallSessions.end` forgets a call and cancels
its graph if it still runs; the id is remembered for ``remember_ended_s`` so that a late
or repeated callback (a ``CallConnected`` after the ``CallDisconnected``) is recognised and
cannot revive it.

State is small, per call and in memory; expiry is checked lazily on each call of the
registry (no timer task), on an injectable clock (seconds, default ``time.monotonic``).
Later issues keep it in Redis behind the same methods: :meth:`expect`, :meth:`bind`,
:meth:`claim`, :meth:`resume`, :meth:`admit`, :meth:`live`, :meth:`callback`, :meth:`has_ended`,
:meth:`end`, :meth:`counts`.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pipeline.graph import Graph
from pipeline.runner import CallResult, CallRunner

__all__ = ["PROVISIONAL_PREFIX", "CallSession", "CallSessions", "CallState", "SessionCounts", "provisional_id"]

logger = logging.getLogger(__name__)

#: Event ids remembered per call to drop duplicates (ACS retries; a call sees tens of events).
SEEN_EVENTS_PER_CALL = 256
#: Ended call ids remembered at most (oldest forgotten first), whatever their age.
MAX_ENDED_REMEMBERED = 100_000
#: The prefix of the provisional ids under which calls are expected until bound.
PROVISIONAL_PREFIX = "pending-"


def provisional_id() -> str:
    """A fresh provisional id to :meth:`~CallSessions.expect` a call under until it is bound."""
    return f"{PROVISIONAL_PREFIX}{secrets.token_hex(16)}"


class CallState(enum.StrEnum):
    """Where a call is: ``connecting`` (answered or dialled), ``connected`` (ACS said
    ``CallConnected``), ``disconnected`` (ended, for whatever reason)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


@dataclass(slots=True, kw_only=True, eq=False)
class CallSession:
    """One call of this worker (see module docstring). Only the registry and the callback
    handler change ``state``; the media route sets ``graph``, ``runner``, ``task`` and
    ``result``."""

    call_connection_id: str
    #: ``inbound`` (answered) or ``outbound`` (dialled).
    direction: str = "inbound"
    #: The pipeline the call runs (a name under ``config/pipelines``); None: the media route's default.
    pipeline: str | None = None
    state: CallState = CallState.CONNECTING
    #: When the media token stops being accepted (the registry's clock, seconds).
    expires_at: float = 0.0
    server_call_id: str = ""
    correlation_id: str = ""
    #: Raw ids of the participants, from the ``ParticipantsUpdated`` with the highest
    #: ``participants_sequence`` seen (-1: none yet).
    participants: tuple[str, ...] = ()
    participants_sequence: int = -1
    #: The recording started on this call, and its state (``active`` / ``inactive``).
    recording_id: str = ""
    recording_state: str = ""
    #: The time (Unix seconds) of the ``RecordingStateChanged`` that set ``recording_state``.
    recording_state_at: float = float("-inf")
    #: Whether a media socket has claimed the call (it stays True after the socket goes).
    media_connected: bool = False
    #: The running call, set by the media route once the socket is claimed.
    graph: Graph | None = None
    runner: CallRunner | None = None
    task: asyncio.Task[None] | None = None
    #: How the graph ended, once it has.
    result: CallResult | None = None
    #: Why the call ended, once it has; ``error`` is set when it ended on a failure.
    ended_reason: str = ""
    error: str = ""
    _media_token: str = field(default="", repr=False)
    _callback_token: str = field(default="", repr=False)
    _seen: OrderedDict[str, None] = field(default_factory=OrderedDict, repr=False)

    @property
    def callback_token(self) -> str:
        """The token the call's callback URL carries (not to be logged)."""
        return self._callback_token

    def first_time(self, event_id: str) -> bool:
        """Whether the event ``event_id`` is new for this call (and remember it if it is)."""
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        if len(self._seen) > SEEN_EVENTS_PER_CALL:
            self._seen.popitem(last=False)
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCounts:
    """Calls now and totals since start.

    Now: ``live`` calls known (answered or dialled, not ended), of which ``expected`` wait
    for their media socket. Totals: media sockets ``connected`` (claimed or admitted),
    media tokens ``refused`` and ``expired``, calls ``ended``.
    """

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


def _same(expected: str, given: str) -> bool:
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


class CallSessions:
    """The registry of this worker's calls (see module docstring)."""

    def __init__(self, *, claim_within_s: float = 30.0, remember_ended_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if claim_within_s <= 0:
            raise ValueError(f"claim_within_s must be > 0, got {claim_within_s}")
        if remember_ended_s <= 0:
            raise ValueError(f"remember_ended_s must be > 0, got {remember_ended_s}")
        self.claim_within_s = claim_within_s
        self.remember_ended_s = remember_ended_s
        self._clock = clock
        self._calls: dict[str, CallSession] = {}  # by call connection id (or provisional id)
        self._media: dict[str, CallSession] = {}  # by the media token's hash, until claimed
        self._resumable: dict[str, CallSession] = {}  # calls with their socket, by the media token's hash
        self._ended: OrderedDict[str, float] = OrderedDict()  # call id -> when it ended
        self._connected = self._refused = self._expired = self._ended_count = 0
        self._watchers: list[Callable[[CallSession], None]] = []

    def expect(self, call_connection_id: str, *, direction: str = "inbound", pipeline: str | None = None) -> str:
        """Know the call from now on and issue the single-use media token its socket must bring.

        The call's callback token is issued with it (:attr:`CallSession.callback_token`).
        Expecting a call again before its socket connected revokes its first media token;
        a call whose socket has connected cannot be expected again (``ValueError``).
        """
        if not call_connection_id:
            raise ValueError("expect: the call connection id is empty")
        now = self._clock()
        self._purge(now)
        session = self._calls.get(call_connection_id)
        if session is None:
            session = CallSession(call_connection_id=call_connection_id, direction=direction, pipeline=pipeline,
                                  _callback_token=secrets.token_urlsafe(32))
            self._calls[call_connection_id] = session
        elif session.media_connected:
            raise ValueError(f"expect: call {call_connection_id} already has its media socket")
        else:
            self._media.pop(_key(session._media_token), None)
        session._media_token = secrets.token_urlsafe(32)
        session.expires_at = now + self.claim_within_s
        self._media[_key(session._media_token)] = session
        return session._media_token

    def bind(self, provisional_id: str, call_connection_id: str) -> bool:
        """Rename the call known under ``provisional_id`` to its real id (see module docstring).

        Binding a call to the id it already has is a no-op. Returns ``False`` if no call is
        known under ``provisional_id`` (its media token expired, or it has ended).
        """
        if not call_connection_id:
            raise ValueError("bind: the call connection id is empty")
        self._purge(self._clock())
        session = self._calls.pop(provisional_id, None)
        if session is None:
            return call_connection_id in self._calls and provisional_id == call_connection_id
        previous = self._calls.get(call_connection_id)
        if previous is not None and previous is not session:
            self.end(previous, "replaced by a call with the same id")
        session.call_connection_id = call_connection_id
        self._calls[call_connection_id] = session
        return True

    def claim(self, token: str) -> CallSession | None:
        """The expected call for media ``token``, now with its socket; ``None`` if the token
        is unknown, used or expired (counted as refused)."""
        self._purge(self._clock())
        session = self._media.get(_key(token))
        if session is None or not _same(session._media_token, token):
            self._refused += 1
            return None
        del self._media[_key(token)]
        self._resumable[_key(token)] = session  # the token stays the call's, for ACS to reconnect with
        session.media_connected = True
        self._connected += 1
        return session

    def resume(self, token: str) -> CallSession | None:
        """The live call whose media socket connected with ``token``: ACS reconnecting it
        after a drop (the media URL is the same). ``None`` if no live call has that token
        (never issued, or the call has ended); not counted as refused, :meth:`claim` is
        asked next."""
        session = self._resumable.get(_key(token))
        if session is None or not _same(session._media_token, token):
            return None
        return session if self._calls.get(session.call_connection_id) is session else None

    def admit(self, call_connection_id: str) -> CallSession:
        """A call with its socket and without a token: only for the development switch."""
        if call_connection_id in self._calls:
            raise ValueError(f"admit: call {call_connection_id} is already known")
        session = CallSession(call_connection_id=call_connection_id, media_connected=True,
                              expires_at=self._clock())
        self._calls[call_connection_id] = session
        self._connected += 1
        return session

    def live(self, call_connection_id: str) -> CallSession | None:
        """The call, if this worker knows it and it has not ended."""
        self._purge(self._clock())
        return self._calls.get(call_connection_id)

    def __iter__(self) -> Iterator[CallSession]:
        """The calls known now (a snapshot)."""
        self._purge(self._clock())
        return iter(list(self._calls.values()))

    def callback(self, call_connection_id: str, token: str) -> CallSession | None:
        """The call a callback with ``token`` is about, if ``token`` is that call's.

        A call still under its provisional id (the first callback beat the answer's
        response) is found by the token and bound to ``call_connection_id`` here.
        ``None`` if the token is not that call's, or no call has it.
        """
        self._purge(self._clock())
        session = self._calls.get(call_connection_id)
        if session is not None:
            return session if _same(session._callback_token, token) else None
        for pending in list(self._calls.values()):  # calls not yet bound are few and brief
            if pending.call_connection_id.startswith(PROVISIONAL_PREFIX) and _same(pending._callback_token, token):
                self.bind(pending.call_connection_id, call_connection_id)
                return pending
        return None

    def has_ended(self, call_connection_id: str) -> bool:
        """Whether the call ended recently (within ``remember_ended_s``) on this worker."""
        self._purge(self._clock())
        return call_connection_id in self._ended

    def end(self, session: CallSession, reason: str = "ended", *, error: str = "") -> bool:
        """Forget a call; its graph, if it still runs, is cancelled with ``reason``.

        Returns whether the call was known (ending twice is harmless: the first reason stays).
        """
        if self._calls.get(session.call_connection_id) is not session:
            return False
        del self._calls[session.call_connection_id]
        self._media.pop(_key(session._media_token), None)
        self._resumable.pop(_key(session._media_token), None)
        session._media_token = ""
        self._ended[session.call_connection_id] = self._clock()
        while len(self._ended) > MAX_ENDED_REMEMBERED:
            self._ended.popitem(last=False)
        self._ended_count += 1
        session.state = CallState.DISCONNECTED
        session.ended_reason, session.error = reason, error
        if session.result is None and session.runner is not None:
            session.runner.cancel(reason)
        return True

    def watch(self, callback: Callable[[CallSession], None]) -> None:
        """Call ``callback(session)`` each time a call's graph is built, before it runs: the
        moment to probe it (a ``CallRecorder``, a live view) without missing a frame."""
        self._watchers.append(callback)

    def starting(self, session: CallSession) -> None:
        """The media route built ``session``'s graph and runs it next: tell the watchers."""
        for watcher in self._watchers:
            watcher(session)

    def counts(self) -> SessionCounts:
        """How many calls are known and waiting for media now, and the totals so far."""
        self._purge(self._clock())
        return SessionCounts(expected=len(self._media), live=len(self._calls), connected=self._connected,
                             refused=self._refused, expired=self._expired, ended=self._ended_count)

    def _purge(self, now: float) -> None:
        for key, session in list(self._media.items()):
            if session.expires_at <= now:
                del self._media[key]
                self._expired += 1
                logger.warning("call %s: its media socket did not connect within %g s; forgetting the call",
                               session.call_connection_id, self.claim_within_s)
                self.end(session, "the media socket never connected", error="the media socket never connected")
        while self._ended:
            call_id, when = next(iter(self._ended.items()))
            if when + self.remember_ended_s > now:
                break
            del self._ended[call_id]
