"""Events on Redis Streams: a capped stream, consumer groups, at-least-once with idempotency keys.

**Publishing** (:class:`RedisStreamsTransport`). Each event is one stream entry
``{"id": <event id>, "type": <event type>, "event": <CloudEvent JSON>}`` added with
``XADD <stream> MAXLEN ~ <maxlen>`` (capped: Redis trims whole macro-nodes, so the stream
holds at least ``maxlen`` entries and a little more). A batch is one round trip: one
``EVALSHA`` of a Lua script (loaded once, and again after a Redis restart) that adds each
event guarded by a marker key ``SET <stream>:seen:<id> NX EX <dedupe_ttl_s>``, so a batch
sent again after a timeout (the bus retries anything it is not sure was delivered) does not
add an event twice while its marker lives. The markers share the stream's hash tag (the
``{...}`` in the default name), so the script runs on Redis Cluster too (a stream name
without one is refused there).

**Consuming** (:class:`StreamConsumer`). Subscribers are consumer groups: each group gets
every event once, shared between its consumers. A consumer first re-reads what was
delivered to it and not acknowledged (``XREADGROUP ... 0``: a consumer that crashed before
``XACK`` gets those again when it restarts under the same name), then new entries (``>``).
``ensure_group`` creates the group at the stream's start (``MKSTREAM``), so a group declared
in config before any call sees every event. Delivery is at least once; the event ``id``
(the fact key) lets a handler drop a copy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cloudevents.core.v1.event import CloudEvent
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from .events import decode, encode

__all__ = ["DEFAULT_STREAM", "RedisStreamsTransport", "StreamConsumer"]

logger = logging.getLogger(__name__)

#: The stream's name; the braces are the Redis Cluster hash tag its marker keys share.
DEFAULT_STREAM = "voicegraph:{events}"

# KEYS[1] the stream, KEYS[2..] one marker per event; ARGV: maxlen, ttl, then id, type, event per event.
# Returns how many events were added (the others were copies).
_ADD_ONCE = """
local added = 0
for i = 2, #KEYS do
  local a = 3 + (i - 2) * 3
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[2]) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'id', ARGV[a], 'type', ARGV[a + 1], 'event', ARGV[a + 2])
    added = added + 1
  end
end
return added
"""


class RedisStreamsTransport:
    """Sends a worker's events to one capped Redis stream (see module docstring)."""

    def __init__(self, redis: Redis | RedisCluster, *, stream: str = DEFAULT_STREAM, maxlen: int = 100_000,
                 dedupe_ttl_s: int = 86_400, groups: Sequence[str] = ()) -> None:
        if maxlen < 1 or dedupe_ttl_s < 1:
            raise ValueError(f"redis events: maxlen and dedupe_ttl_s must be >= 1 (got {maxlen}, {dedupe_ttl_s})")
        if isinstance(redis, RedisCluster) and not re.search(r"\{[^}]+\}", stream):
            raise ValueError(f"redis events: on Redis Cluster the stream name needs a hash tag, like "
                             f"'{DEFAULT_STREAM}'; got {stream!r}")
        self.redis = redis
        self.stream = stream
        self.maxlen = maxlen
        self.dedupe_ttl_s = dedupe_ttl_s
        self.groups = tuple(groups)
        self.added = 0
        self.copies = 0  # events not added again: their marker was there (a retried batch)
        self.round_trips = 0  # requests to Redis (one pipelined batch is one)
        self._sha: str | None = None  # the script's SHA once loaded

    async def send(self, events: Sequence[CloudEvent]) -> None:
        if self._sha is None:  # once per connection life: the declared groups first, so they see every event
            for group in self.groups:
                await ensure_group(self.redis, self.stream, group)
                self.round_trips += 1
            self._sha = str(await self.redis.script_load(_ADD_ONCE))
            self.round_trips += 1
        keys = [self.stream] + [f"{self.stream}:seen:{event.get_id()}" for event in events]
        args: list[Any] = [self.maxlen, self.dedupe_ttl_s]
        for event in events:
            args += [event.get_id(), event.get_type(), encode(event)]
        try:
            added = int(await self.redis.evalsha(self._sha, len(keys), *keys, *args))
        except NoScriptError:  # Redis restarted empty: load the script again; the bus sends the batch again
            self._sha = None
            raise
        finally:
            self.round_trips += 1
        self.added += added
        self.copies += len(events) - added

    async def aclose(self) -> None:
        await self.redis.aclose()


async def ensure_group(redis: Redis | RedisCluster, stream: str, group: str) -> None:
    """Create consumer group ``group`` on ``stream`` from its first entry, unless it exists."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


Handler = Callable[[CloudEvent], Awaitable[None]]


class StreamConsumer:
    """One consumer of a group: reads its pending entries first, then new ones; acks what it handled.

    An entry that is not a valid CloudEvent is logged, counted (``malformed``) and acknowledged,
    so it does not come back forever; a handler that raises leaves its entry pending (it is
    read again at the consumer's next start).
    """

    def __init__(self, redis: Redis | RedisCluster, group: str, name: str, *, stream: str = DEFAULT_STREAM) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.name = name
        self.handled = 0
        self.malformed = 0
        self.failed = 0
        self._backlog: str | None = "0"  # where to read this consumer's pending entries from; None: done

    async def start(self) -> None:
        """Make sure the group exists."""
        await ensure_group(self.redis, self.stream, self.group)

    async def poll(self, handler: Handler, *, count: int = 100, block_ms: int | None = None) -> int:
        """Read up to ``count`` entries, hand each to ``handler``, ack it; how many were handled."""
        entries: list[tuple[Any, dict[Any, Any]]] = []
        while not entries:
            backlog = self._backlog
            reply: Any = await self.redis.xreadgroup(self.group, self.name, {self.stream: backlog or ">"},
                                                     count=count, block=None if backlog else block_ms)
            entries = reply[0][1] if reply else []
            if backlog is None:
                break
            self._backlog = entries[-1][0] if entries else None  # the backlog is read: new entries next
        done = 0
        for entry_id, fields in entries:
            raw = fields.get(b"event", fields.get("event"))
            try:
                event = decode(raw) if raw is not None else None
            except Exception as exc:
                event = None
                logger.warning("stream %s: entry %s is not a CloudEvent (%s): acknowledged and skipped",
                               self.stream, entry_id, exc)
            if event is None:
                self.malformed += 1
                await self.redis.xack(self.stream, self.group, entry_id)
                continue
            try:
                await handler(event)
            except Exception:
                self.failed += 1
                logger.exception("stream %s group %s: handler failed on %s; left pending", self.stream, self.group,
                                 event.get_id())
                continue
            await self.redis.xack(self.stream, self.group, entry_id)
            done += 1
        self.handled += done
        return done
