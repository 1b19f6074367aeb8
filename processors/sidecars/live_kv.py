"""The live state's vocabulary: its keys, its retention, its commands, and an in-process
key-value store that applies them with Redis's semantics.

The live-state store (:mod:`processors.sidecars.live`) turns each fact and each saved
agent state into a short list of :class:`Cmd` s (field updates and appends, never a
rewrite of the session). The same list is applied to :class:`MemoryKV` (the embedded
store, and each worker's copy of its own calls) and, when Redis is configured, sent to
Redis by the write-behind writer (:mod:`processors.sidecars.live_redis`). One vocabulary
means the in-process store has the same TTL semantics as Redis, checked by the same tests.

Keys (``prefix`` defaults to ``vg``; ``<id>`` is the call id, escaped, inside a Redis
Cluster hash tag so that one call's keys live in one slot and a call's writes go to one
node)::

    vg:call:{<id>}:session     hash    session state: caller, pipeline, worker, agent, turn...  24 h
    vg:call:{<id>}:transcript  stream  the live transcript, one entry per line                   1 h
    vg:call:{<id>}:context     hash    the agent state: agent, memory, caller, failures, agents  session + 1 h
    vg:call:{<id>}:slots       hash    the slots, one field each (JSON values)                   session + 1 h
    vg:call:{<id>}:turns       stream  the orchestrator's turns (short-term memory)              session + 1 h
    vg:sessions                zset    call ids by start time, for `voicegraph sessions`         24 h
    vg:media:<sha256 of token> hash    the call a media token belongs to (a reconnection)       24 h
    vg:live:{<id>}             channel every fact of the call, as JSON (live views)

"Session + 1 h": while the call is live its context is kept as long as its session
(24 h, renewed by every write); when the call ends it expires one hour later. Every write
of a key renews its TTL (an ``EXPIRE`` follows it in the same round trip).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote

__all__ = ["END_SCRIPT", "Cmd", "LiveKeys", "MemoryKV", "Retention", "StreamId", "newer_id"]

logger = logging.getLogger(__name__)

_PLAIN_ID = re.compile(r"[A-Za-z0-9._:@+-]{1,200}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """How long live state is kept (seconds): the architecture's figures by default."""

    session_s: int = 24 * 3600
    transcript_s: int = 3600
    context_after_end_s: int = 3600  # the conversation context: the session, plus this after the call ends

    @property
    def context_live_s(self) -> int:
        """The context's TTL while the call is live: as long as its session, and the grace after it."""
        return self.session_s + self.context_after_end_s


class LiveKeys:
    """The key names (see module docstring)."""

    def __init__(self, prefix: str = "vg") -> None:
        self.prefix = prefix
        self.index = f"{prefix}:sessions"

    @staticmethod
    def escape(call_id: str) -> str:
        """``call_id`` as it appears in keys: as is when plain, else percent-escaped (no braces,
        spaces or control characters reach a key or break the hash tag)."""
        if _PLAIN_ID.fullmatch(call_id):
            return call_id
        return quote(call_id, safe="")[:600]

    def _call(self, call_id: str, kind: str) -> str:
        return f"{self.prefix}:call:{{{self.escape(call_id)}}}:{kind}"

    def session(self, call_id: str) -> str:
        return self._call(call_id, "session")

    def transcript(self, call_id: str) -> str:
        return self._call(call_id, "transcript")

    def context(self, call_id: str) -> str:
        return self._call(call_id, "context")

    def slots(self, call_id: str) -> str:
        return self._call(call_id, "slots")

    def turns(self, call_id: str) -> str:
        return self._call(call_id, "turns")

    def media(self, token: str) -> str:
        """Where a live call's media token leads (by the token's hash: the token is never stored)."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.prefix}:media:{digest}"

    def channel(self, call_id: str) -> str:
        return f"{self.prefix}:live:{{{self.escape(call_id)}}}"

    def of_call(self, call_id: str) -> tuple[str, ...]:
        """The call's keys, the session first."""
        return (self.session(call_id), self.transcript(call_id), self.context(call_id), self.slots(call_id),
                self.turns(call_id))


class Cmd(NamedTuple):
    """One write: ``op`` is a Redis command name; ``args`` its arguments after the key.

    ``HSET key {field: value}``, ``HDEL key (fields)``, ``XADD key (id, {field: value}, maxlen)``,
    ``EXPIRE key seconds``, ``ZADD key {member: score}``, ``ZREMRANGEBYSCORE key until`` (the
    members scored ``until`` or lower), ``PUBLISH channel message``,
    ``DEL key``, and ``END session (worker, ended_at, reason, seconds, *context keys)``: mark
    the call ended and let its context expire, only if ``worker`` still has the call (a
    call taken over by another worker is not ended by the one it left; a script in Redis).
    """

    op: str
    key: str
    args: Any = None


#: The ``END`` command in Redis (atomic; one call's keys share a slot, so it runs on a Cluster).
END_SCRIPT = """
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'ended', 'ended_at', ARGV[2], 'end_reason', ARGV[3])
for i = 2, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"""


class StreamId(NamedTuple):
    """A stream entry id ``<ms>-<seq>``: explicit, so that a write sent twice (a retry after
    a lost reply) is refused by Redis as not newer, never added twice."""

    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    @classmethod
    def parse(cls, text: str | bytes) -> StreamId:
        raw = text.decode() if isinstance(text, bytes) else text
        ms, _, seq = raw.partition("-")
        return cls(int(ms), int(seq or 0))


@dataclass(slots=True)
class _Entry:
    value: Any  # dict (hash, zset), list of (StreamId, dict) (stream)
    expires_at: float | None = None


class MemoryKV:
    """Hashes, streams and sorted sets with TTLs and pub/sub, in this process (see module
    docstring). ``clock`` is in seconds (``time.monotonic`` in production); expired keys are
    gone on the next read or write, as in Redis."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._data: dict[str, _Entry] = {}
        self._subscribers: dict[str, list[asyncio.Queue[str]]] = {}
        self.duplicates = 0  # stream entries refused as not newer (a retried write)
        self.dropped_messages = 0  # pub/sub messages a slow subscriber missed
        self._writes = 0

    # -- writes -----------------------------------------------------------------------------

    def apply(self, cmd: Cmd) -> None:
        """Apply one write."""
        now = self._clock()
        self._writes += 1
        if self._writes % 1024 == 0:
            self._sweep(now)
        op, key, args = cmd
        if op == "PUBLISH":
            self.publish(key, str(args))
            return
        entry = self._live(key, now)
        if op == "HSET":
            if entry is None:
                entry = self._data[key] = _Entry({})
            entry.value.update(args)
        elif op == "HDEL":
            if entry is not None:
                for name in args:
                    entry.value.pop(name, None)
                if not entry.value:
                    del self._data[key]
        elif op == "XADD":
            entry_id, fields, maxlen = args
            if entry is None:
                entry = self._data[key] = _Entry([])
            stream: list[tuple[StreamId, dict[str, str]]] = entry.value
            if stream and stream[-1][0] >= entry_id:
                self.duplicates += 1
                return
            stream.append((entry_id, dict(fields)))
            if maxlen and len(stream) > maxlen:
                del stream[: len(stream) - maxlen]
        elif op == "ZADD":
            if entry is None:
                entry = self._data[key] = _Entry({})
            entry.value.update(args)
        elif op == "ZREMRANGEBYSCORE":
            if entry is not None:
                for member in [m for m, score in entry.value.items() if score <= args]:
                    del entry.value[member]
        elif op == "EXPIRE":
            if entry is not None:
                entry.expires_at = now + float(args)
        elif op == "DEL":
            self._data.pop(key, None)
        elif op == "END":
            worker, ended_at, reason, seconds, *others = args
            if entry is None or entry.value.get("worker") != worker:
                return
            entry.value.update(state="ended", ended_at=ended_at, end_reason=reason)
            for other in others:
                self.apply(Cmd("EXPIRE", other, seconds))
        else:
            raise ValueError(f"MemoryKV: unknown command {op}")

    def publish(self, channel: str, message: str) -> int:
        """Hand ``message`` to the channel's subscribers (a full subscriber misses it, counted)."""
        queues = self._subscribers.get(channel, [])
        for queue in queues:
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self.dropped_messages += 1
        return len(queues)

    def subscribe(self, channel: str, maxsize: int = 1024) -> asyncio.Queue[str]:
        """A queue that receives the channel's messages from now on (``unsubscribe`` it)."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize)
        self._subscribers.setdefault(channel, []).append(queue)
        return queue

    def unsubscribe(self, channel: str, queue: asyncio.Queue[str]) -> None:
        queues = self._subscribers.get(channel, [])
        if queue in queues:
            queues.remove(queue)
        if not queues:
            self._subscribers.pop(channel, None)

    # -- reads ------------------------------------------------------------------------------

    def hgetall(self, key: str) -> dict[str, str]:
        entry = self._live(key, self._clock())
        return dict(entry.value) if entry is not None else {}

    def xrange(self, key: str) -> list[tuple[StreamId, dict[str, str]]]:
        entry = self._live(key, self._clock())
        return [(i, dict(f)) for i, f in entry.value] if entry is not None else []

    def zrange(self, key: str) -> list[tuple[str, float]]:
        """Members by score, lowest first."""
        entry = self._live(key, self._clock())
        if entry is None:
            return []
        pairs = sorted((score, member) for member, score in entry.value.items())
        return [(member, score) for score, member in pairs]

    def zrem(self, key: str, member: str) -> None:
        entry = self._live(key, self._clock())
        if entry is not None:
            entry.value.pop(member, None)

    def ttl(self, key: str) -> float:
        """Seconds left: -2 when the key does not exist, -1 when it never expires (as Redis)."""
        entry = self._live(key, self._clock())
        if entry is None:
            return -2
        return -1 if entry.expires_at is None else entry.expires_at - self._clock()

    def keys(self) -> list[str]:
        now = self._clock()
        return [key for key in list(self._data) if self._live(key, now) is not None]

    def forget(self, keys: Mapping[str, object] | tuple[str, ...]) -> None:
        """Drop ``keys`` from this copy only (a worker's copy of a call it no longer runs)."""
        for key in keys:
            self._data.pop(key, None)

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
            del self._data[key]
            return None
        return entry

    def _sweep(self, now: float) -> None:
        expired = [k for k, e in self._data.items() if e.expires_at is not None and e.expires_at <= now]
        for key in expired:
            del self._data[key]


def newer_id(last: StreamId | None, ms: int, seq: int) -> StreamId:
    """A stream id after ``last`` for a write at ``ms`` with the caller's sequence number ``seq``."""
    if last is None or ms > last.ms:
        return StreamId(ms, seq)
    return StreamId(last.ms, max(seq, last.seq + 1))

