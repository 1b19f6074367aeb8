"""Live state of the calls: session, live transcript, context, agent, slots, affinity.

:class:`LiveState` is the worker's live-state store. It consumes a call's facts (a
:class:`LiveSink` per call, from :meth:`LiveState.sink`, is the call's
:class:`~processors.sidecars.facts.FactSink`) and it keeps the orchestrator's short-term
memory (``save_state``/``load_state``/``drop_state``; ``agents.memory.StoreShortTerm``
makes it an ``agents.memory.ShortTermMemory``), so the agent in charge, the slots and the
context of a call live where any worker can find them.

Every fact and every saved state becomes a few field updates and appends
(:mod:`processors.sidecars.live_writes`; :mod:`processors.sidecars.live_kv` lists the keys
and their retention): the session is never rewritten. They are applied at once to this
worker's copy (:class:`MemoryKV`), and, with Redis configured, queued for Redis
(:class:`~processors.sidecars.live_redis.RedisWriter`): ``offer`` and ``save`` never wait
for storage, and a call goes on from the worker's copy while Redis is away. The embedded
default (no ``REDIS_URL``) is the worker's copy alone, with the same keys and TTL semantics.

With Redis, the copy holds only the calls this worker runs (forgotten once a call ended
and its writes were flushed); reads of other calls (``load`` of a call taken over from
another worker, ``sessions``, ``transcript``) go to Redis within ``read_timeout_s``.
Affinity: the session's ``worker`` field names the worker running the call; a worker
that takes a call over (:meth:`LiveState.adopt`) writes its name there, and the worker
the call left does not mark it ended (the ``END`` command checks the field).

Live views: :meth:`LiveState.watch` yields the call's facts as they are written (Redis
pub/sub on ``vg:live:{<id>}``, or in-process queues).

Configuration (:func:`live_state_from_env`): ``REDIS_URL`` (``redis://``, ``rediss://`` or
``unix://``) switches to Redis; ``VOICEGRAPH_REDIS_CLUSTER=1`` uses Redis Cluster at that
URL (a call's keys share one slot; live-view messages are published beside the pipeline,
which a Cluster refuses them in); ``VOICEGRAPH_REDIS_PREFIX`` (``vg``) prefixes the keys;
``VOICEGRAPH_LIVE_BUFFER`` (10000) bounds the writes waiting for Redis;
``VOICEGRAPH_WORKER`` names this worker (``host:pid``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.errors import ConfigError

from .facts import Fact
from .live_kv import Cmd, LiveKeys, MemoryKV, Retention, StreamId
from .live_redis import RedisWriter, WriterStats
from .live_writes import MAX_TEXT, MAX_TRANSCRIPT, AgentStateLike, CallTrack, LiveWrites

__all__ = ["MAX_TEXT", "MAX_TRANSCRIPT", "LiveSink", "LiveState", "LiveView", "default_worker",
           "live_state_from_env"]

logger = logging.getLogger(__name__)


def default_worker() -> str:
    """This worker's name: ``VOICEGRAPH_WORKER``, else ``host:pid``."""
    return os.environ.get("VOICEGRAPH_WORKER") or f"{socket.gethostname()}:{os.getpid()}"


class LiveSink:
    """One call's :class:`~processors.sidecars.facts.FactSink` into the live state."""

    __slots__ = ("call_id", "state")

    def __init__(self, state: LiveState, call_id: str) -> None:
        self.state = state
        self.call_id = call_id

    def offer(self, fact: Fact) -> None:
        self.state.offer(fact)

    async def aclose(self) -> None:
        await self.state.call_done(self.call_id)


class LiveView:
    """The facts of one call as they are written (see :meth:`LiveState.watch`)."""

    def __init__(self, state: LiveState, channel: str) -> None:
        self._state = state
        self._channel = channel
        self._queue: asyncio.Queue[str] | None = None
        self._pubsub: Any = None

    async def __aenter__(self) -> LiveView:
        if self._state.redis is None:
            self._queue = self._state.copy.subscribe(self._channel)
        else:
            self._pubsub = self._state.redis.pubsub()
            await self._pubsub.subscribe(self._channel)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._queue is not None:
            self._state.copy.unsubscribe(self._channel, self._queue)
            self._queue = None
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None

    def __aiter__(self) -> LiveView:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._queue is not None:
            data: dict[str, Any] = json.loads(await self._queue.get())
            return data
        if self._pubsub is None:
            raise StopAsyncIteration
        while True:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is not None and message.get("type") == "message":
                data = json.loads(message["data"])
                return data


class LiveState:
    """The worker's live-state store (see module docstring). ``redis`` is a ``redis.asyncio``
    client (or Cluster client); without it the store is in-process."""

    def __init__(self, *, redis: Any = None, keys: LiveKeys | None = None, retention: Retention | None = None,
                 worker: str | None = None, clock: Callable[[], float] = time.monotonic,
                 max_pending: int = 10_000, flush_timeout_s: float = 2.0, read_timeout_s: float = 1.0,
                 op_timeout_s: float = 2.0) -> None:
        self.keys = keys or LiveKeys()
        self.retention = retention or Retention()
        self.worker = worker or default_worker()
        self.copy = MemoryKV(clock)
        self.writes = LiveWrites(self.keys, self.retention, self.worker, self.copy)
        self.redis = redis
        cluster = redis is not None and type(redis).__name__ == "RedisCluster"
        self.writer = (RedisWriter(redis, max_pending=max_pending, op_timeout_s=op_timeout_s, cluster=cluster)
                       if redis is not None else None)
        if self.writer is not None:
            self.writer.on_back = self._resync
        self.flush_timeout_s = flush_timeout_s
        self.read_timeout_s = read_timeout_s
        self._tracks: dict[str, CallTrack] = {}
        self.read_errors = 0  # reads Redis did not answer in time or refused (the caller got None/[])
        self.duplicates = 0  # facts offered again (not written again)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start writing to Redis (nothing to do in-process)."""
        if self.writer is not None:
            self.writer.start()

    async def aclose(self) -> None:
        """Flush what waits for Redis (bounded) and close the client."""
        if self.writer is not None:
            await self.writer.aclose(self.flush_timeout_s)
            await self.redis.aclose()

    @property
    def truncated(self) -> int:
        """Transcript lines cut to ``MAX_TEXT`` so far."""
        return self.writes.truncated

    def stats(self) -> WriterStats | None:
        """The Redis writer's counters (None in-process)."""
        return self.writer.stats() if self.writer is not None else None

    # -- facts --------------------------------------------------------------------------------

    def sink(self, call_id: str) -> LiveSink:
        """The call's fact sink (``aclose`` it when the call ends)."""
        return LiveSink(self, call_id)

    def offer(self, fact: Fact) -> None:
        """Write ``fact`` (O(its fields); never waits). A fact already written (its ``seq`` not
        after the call's last) is skipped and counted: its key is the idempotency key."""
        track = self._track(fact.call_id)
        if fact.seq <= track.seq:
            self.duplicates += 1
            return
        track.seq = fact.seq
        self._write(fact.call_id, self.writes.fact(fact, track))

    async def call_done(self, call_id: str) -> None:
        """The call ended: flush its writes (bounded); with Redis, forget this worker's copy."""
        self._tracks.pop(call_id, None)
        if self.writer is None:
            return
        if not await self.writer.flush(self.flush_timeout_s):
            logger.warning("call %s: its live state is still waiting for Redis after %.1f s (kept queued)",
                           call_id, self.flush_timeout_s)
        self.copy.forget(self.keys.of_call(call_id))

    # -- calls moving between workers ------------------------------------------------------------

    def share_media(self, token: str, call_id: str) -> None:
        """The call's media socket connected here with ``token``: let any worker find the call
        by it (only the token's hash is stored) and record this worker as running it."""
        media, session = self.keys.media(token), self.keys.session(call_id)
        life = self.retention.session_s
        self._write(call_id, [Cmd("HSET", session, {"call_id": call_id, "worker": self.worker, "state": "live"}),
                              Cmd("EXPIRE", session, life)])
        if self.writer is not None:  # only other workers ask for it (media_call reads Redis): not in the copy
            self.writer.push(call_id, [Cmd("HSET", media, {"call_id": call_id}), Cmd("EXPIRE", media, life)])

    async def media_call(self, token: str) -> str | None:
        """The live call whose media socket connected with ``token`` on any worker; None when the
        token is unknown, its call has ended, or Redis does not answer (in-process: always None)."""
        if self.redis is None:
            return None
        call_id: str | None = await self._read("media token", self.redis.hget(self.keys.media(token), "call_id"), None)
        if not call_id:
            return None
        session: dict[str, str] = await self._read(f"session {call_id}", self.redis.hgetall(self.keys.session(call_id)),
                                                   {})
        return call_id if session.get("state") == "live" else None

    def adopt(self, call_id: str) -> None:
        """This worker takes ``call_id`` over from another (its media reconnected here): the
        call's affinity moves here now; its next ``CallStarted`` keeps the call's start time."""
        self._track(call_id).adopted = True
        session = self.keys.session(call_id)
        self._write(call_id, [Cmd("HSET", session, {"worker": self.worker, "state": "live",
                                                    "resumed_at": f"{time.time():.3f}"}),
                              Cmd("EXPIRE", session, self.retention.session_s)])

    def end_call(self, call_id: str, reason: str) -> None:
        """The call ended on this worker: mark it ended (its media token dies with it) unless
        another worker has taken it over. The same write as its ``CallEnded`` fact."""
        keys = self.keys
        self._write(call_id, [Cmd("END", keys.session(call_id), (
            self.worker, f"{time.time():.3f}", reason, self.retention.context_after_end_s, keys.context(call_id),
            keys.slots(call_id), keys.turns(call_id)))])

    # -- the orchestrator's short-term memory ---------------------------------------------------

    async def save_state(self, call_id: str, state: AgentStateLike, turn: dict[str, Any] | None = None) -> None:
        """Store ``state`` as field updates (and ``turn`` as an append); never waits for Redis."""
        cmds = self.writes.state(call_id, state, turn, self._track(call_id))
        if cmds:
            self._write(call_id, cmds)

    async def load_state(self, call_id: str) -> dict[str, Any] | None:
        """The call's agent state and turns, as ``{"call_id", "state", "turns", "agents"}``
        (the fields of ``agents.memory.CallMemory``): this worker's copy, else Redis (the call
        ran on another worker); None when nothing is stored or Redis does not answer in time."""
        keys = self.keys
        context = self.copy.hgetall(keys.context(call_id))
        slots = self.copy.hgetall(keys.slots(call_id))
        turns = self.copy.xrange(keys.turns(call_id))
        if not context and not turns and self.redis is not None:
            if self.writer is not None and self.writer.down:  # no waiting on a Redis we know is away
                self._read_failed(f"load {call_id}", ConnectionError("Redis is unavailable"))
                return None
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    pipe = self.redis.pipeline(transaction=False)
                    pipe.hgetall(keys.context(call_id))
                    pipe.hgetall(keys.slots(call_id))
                    pipe.xrange(keys.turns(call_id))
                    context, slots, raw_turns = await pipe.execute()
            except Exception as exc:
                self._read_failed(f"load {call_id}", exc)
                return None
            turns = [(StreamId.parse(i), f) for i, f in raw_turns]
            self._seed(call_id, context, slots, turns)
        if not context and not turns:
            return None
        state = {"agent": context.get("agent", ""), "slots": {k: json.loads(v) for k, v in slots.items()},
                 "memory": json.loads(context.get("memory", "{}")), "caller": json.loads(context.get("caller", "{}")),
                 "failures": json.loads(context.get("failures", "{}"))}
        return {"call_id": call_id, "state": state, "turns": [json.loads(f["turn"]) for _, f in turns],
                "agents": json.loads(context.get("agents", "[]"))}

    async def drop_state(self, call_id: str) -> None:
        """Forget the call's context, slots and turns (the session and transcript keep their TTLs)."""
        keys = self.keys
        self._write(call_id, [Cmd("DEL", keys.context(call_id)), Cmd("DEL", keys.slots(call_id)),
                              Cmd("DEL", keys.turns(call_id))])

    # -- reads for views and tools --------------------------------------------------------------

    async def session(self, call_id: str) -> dict[str, str]:
        """The call's session hash (empty if unknown or expired): from Redis when configured
        (another worker may run the call now), else, or when Redis does not answer, this copy."""
        key = self.keys.session(call_id)
        if self.redis is not None:
            found: dict[str, str] | None = await self._read(f"session {call_id}", self.redis.hgetall(key), None)
            if found is not None:
                return found
        return self.copy.hgetall(key)

    async def transcript(self, call_id: str) -> list[dict[str, str]]:
        """The call's live transcript, oldest line first (``id`` is the stream entry id); from
        Redis when configured, else, or when Redis does not answer, this copy."""
        key = self.keys.transcript(call_id)
        entries: list[tuple[Any, dict[str, str]]] | None = None
        if self.redis is not None:
            entries = await self._read(f"transcript {call_id}", self.redis.xrange(key), None)
        if entries is None:
            entries = list(self.copy.xrange(key))
        return [{"id": str(i), **fields} for i, fields in entries]

    async def sessions(self) -> list[dict[str, str]]:
        """The live sessions (state ``live``), oldest first; stale index entries are pruned."""
        index = self.keys.index
        if self.redis is None:
            members = [m for m, _ in self.copy.zrange(index)]
            found = [self.copy.hgetall(self.keys.session(m)) for m in members]
        else:
            members = await self._read("sessions", self.redis.zrange(index, 0, -1), [])
            pipe = self.redis.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(self.keys.session(member))
            found = await self._read("sessions", pipe.execute(), []) if members else []
        live = []
        for member, session in zip(members, found, strict=False):
            if session.get("state") == "live":
                live.append(session)
            elif not session:  # expired: the index forgets it
                if self.redis is None:
                    self.copy.zrem(index, member)
                else:
                    await self._read("sessions", self.redis.zrem(index, member), 0)
        return live

    async def worker_of(self, call_id: str) -> str | None:
        """The worker running ``call_id`` (the affinity), if the call is live."""
        session = await self.session(call_id)
        return session.get("worker") if session.get("state") == "live" else None

    def watch(self, call_id: str) -> LiveView:
        """A live view of the call: ``async with live.watch(id) as view: async for fact in view``
        yields the facts written from the moment the view is entered (JSON data, see ``fact_data``)."""
        return LiveView(self, self.keys.channel(call_id))

    # -- internals --------------------------------------------------------------------------

    def _track(self, call_id: str) -> CallTrack:
        track = self._tracks.get(call_id)
        if track is None:
            track = self._tracks[call_id] = CallTrack()
        return track

    def _write(self, call_id: str, cmds: list[Cmd]) -> None:
        for cmd in cmds:
            self.copy.apply(cmd)
        if self.writer is not None:
            self.writer.push(call_id, cmds)

    def _seed(self, call_id: str, context: dict[str, str], slots: dict[str, str],
              turns: list[tuple[StreamId, dict[str, str]]]) -> None:
        """Copy a call read from Redis into this worker's copy (the base of later field updates)."""
        life = self.retention.context_live_s
        keys = self.keys
        for key, value in ((keys.context(call_id), context), (keys.slots(call_id), slots)):
            if value:
                self.copy.apply(Cmd("HSET", key, value))
                self.copy.apply(Cmd("EXPIRE", key, life))
        for entry_id, fields in turns:
            self.copy.apply(Cmd("XADD", keys.turns(call_id), (entry_id, fields, 0)))
        track = self._track(call_id)
        track.turn_count = len(turns)
        track.turns = turns[-1][0] if turns else None

    def _resync(self) -> None:
        """Redis is back after writes were lost: re-send those calls' hashes whole, from this copy."""
        assert self.writer is not None
        lost, self.writer.lost_calls = self.writer.lost_calls, set()
        for call_id in lost:
            cmds: list[Cmd] = []
            for key, life in ((self.keys.session(call_id), self.retention.session_s),
                              (self.keys.context(call_id), self.retention.context_live_s),
                              (self.keys.slots(call_id), self.retention.context_live_s)):
                value = self.copy.hgetall(key)
                if value:
                    cmds += [Cmd("HSET", key, value), Cmd("EXPIRE", key, life)]
            if cmds:
                logger.info("call %s: re-sending its live state after lost writes", call_id)
                self.writer.push(call_id, cmds)

    async def _read(self, what: str, pending: Any, default: Any) -> Any:
        try:
            async with asyncio.timeout(self.read_timeout_s):
                return await pending
        except Exception as exc:
            self._read_failed(what, exc)
            return default

    def _read_failed(self, what: str, exc: Exception) -> None:
        self.read_errors += 1
        logger.warning("live state: Redis did not answer (%s: %s: %s)", what, type(exc).__name__, exc)


def live_state_from_env(environ: Mapping[str, str] | None = None) -> LiveState:
    """The worker's live state as the environment configures it (see module docstring);
    a :class:`~pipeline.errors.ConfigError` naming the variable when a value is bad."""
    env = os.environ if environ is None else environ
    url = env.get("REDIS_URL", "").strip()
    prefix = env.get("VOICEGRAPH_REDIS_PREFIX", "vg").strip()
    if not prefix or any(c in prefix for c in " {}\n\r\t"):
        raise ConfigError(f"VOICEGRAPH_REDIS_PREFIX: {prefix!r} is not a usable key prefix (no spaces or braces)")
    raw_bound = env.get("VOICEGRAPH_LIVE_BUFFER", "10000").strip()
    try:
        bound = int(raw_bound)
    except ValueError:
        bound = 0
    if bound < 1:
        raise ConfigError(f"VOICEGRAPH_LIVE_BUFFER: {raw_bound!r} is not a whole number >= 1")
    worker = env.get("VOICEGRAPH_WORKER", "").strip() or None
    if not url:
        return LiveState(keys=LiveKeys(prefix), worker=worker)
    scheme = url.partition("://")[0].lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"REDIS_URL: the scheme must be redis://, rediss:// or unix://, got {scheme + '://'!r}")
    cluster = env.get("VOICEGRAPH_REDIS_CLUSTER", "").strip().lower()
    if cluster not in ("", "0", "1", "false", "true"):
        raise ConfigError(f"VOICEGRAPH_REDIS_CLUSTER: {cluster!r} is not 0/1/true/false")
    try:
        if cluster in ("1", "true"):
            from redis.asyncio.cluster import RedisCluster

            client: Any = RedisCluster.from_url(url, decode_responses=True)
        else:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # No retries inside the client: the writer retries with its own backoff, in order. No
            # CLIENT SETINFO at connect: a round trip less before a write after an outage. No
            # socket timeout: every call here runs under its own asyncio timeout (the writer's
            # op_timeout_s, the reads' read_timeout_s), and redis-py would add one per reply read
            # (a timer per command of a pipeline).
            client = Redis.from_url(url, decode_responses=True, socket_connect_timeout=2.0, socket_timeout=None,
                                    retry=Retry(NoBackoff(), 0), driver_info=None)
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL: {exc}") from None
    return LiveState(redis=client, keys=LiveKeys(prefix), worker=worker, max_pending=bound)
