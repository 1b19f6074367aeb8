"""The worker's data tier: memories, event bus, recorder, and what each call is attached to.

One :class:`DataTier` per worker process, built from the environment and the side-car
config (:func:`data_tier_from_env`, blocking: call it at start-up or in a thread), put in
place with :func:`install`, started with the worker (``await tier.start()``) and closed
with it (``await tier.aclose()``, which flushes what was accepted). ``current()`` is the
installed tier, or an in-process default with nothing to start.

Every call, whatever its transport, is attached the same way before its graph runs::

    attached = attach_call(graph, ctx, CallMeta(caller=..., pipeline=graph.name, transport="acs"))
    result = await CallRunner(graph, ctx).run()
    await attached.end(result.reason, report)      # CallEnded, then every sink flushed

``attach_call`` makes the call's :class:`~processors.sidecars.facts.CallFacts` (stamped on
the call's clock, in ms since the attach), one sink per consumer (the event bus when it
publishes anywhere, then each per-call sink factory: live state, history), the
:class:`~processors.sidecars.tap.FactTap` that feeds it, and the recorder when recording is
on; and it hands every node with a ``use_memory(short_term=, long_term=, caller_id=)``
method (the orchestrator) the tier's memories and the caller's id. Nothing in it does I/O.

**Configuration.** A YAML file (``VOICEGRAPH_SIDECARS``, else ``./config/sidecars.yaml``,
else the built-in ``config/sidecars.yaml``; see that file for every key) and the
environment, which wins:

* ``VOICEGRAPH_EVENTS``: the publisher, ``inprocess`` (default), ``redis`` or ``eventgrid``;
* ``REDIS_URL``: the Redis of the ``redis`` publisher (and of the live state);
  ``VOICEGRAPH_REDIS_CLUSTER=1``: it is a Redis Cluster;
* ``EVENTGRID_ENDPOINT`` and ``EVENTGRID_KEY``: the ``eventgrid`` publisher's topic (no key:
  ``DefaultAzureCredential``);
* ``VOICEGRAPH_RECORDINGS``: a folder: record every call there (``0`` / empty: off).

A bad value is a :class:`~pipeline.errors.ConfigError` naming the file or the variable, at
start-up, never during a call.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.config import load_yaml
from pipeline.context import CallContext
from pipeline.errors import ConfigError
from pipeline.graph import Graph

from .events import EVENT_TYPES, EventBus, EventTransport, InProcessTransport, Subscriber
from .facts import CallFacts, FactSink, RecordingStarted
from .history import history_from_env
from .live import LiveState, live_state_from_env
from .recording import CallRecording
from .tap import CallMeta, FactTap

__all__ = [
    "AttachedCall",
    "DataTier",
    "EventsConfig",
    "SidecarsConfig",
    "SinkFactory",
    "SubscriberSpec",
    "attach_call",
    "current",
    "data_tier_from_env",
    "install",
    "load_sidecars",
]

#: Makes a call's sink for one consumer (live state, history): ``factory(call_id, meta)``.
SinkFactory = Callable[[str, CallMeta], FactSink]

_PUBLISHERS = ("inprocess", "redis", "eventgrid")


class Service(Protocol):
    """A worker-wide component the tier starts and closes (a store with its own task)."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class SubscriberSpec:
    """A subscriber declared in config: ``use`` (``module:function``) for the in-process bus,
    or only a ``name`` (a consumer group) for Redis Streams."""

    name: str
    use: str = ""
    types: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class EventsConfig:
    """Where the seven events go (see ``config/sidecars.yaml``)."""

    publisher: str = "inprocess"
    source: str = "/voicegraph"
    queue: int = 10_000
    batch: int = 100
    stream: str = "voicegraph:{events}"
    maxlen: int = 100_000
    subscribers: tuple[SubscriberSpec, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SidecarsConfig:
    """The side-car config file, parsed."""

    events: EventsConfig = field(default_factory=EventsConfig)
    recordings: Path | None = None  # record every call into this folder
    file: str = ""


class AttachedCall:
    """One call's data-tier handle: its facts, the tap feeding them, its recorder."""

    __slots__ = ("_announced", "_clock", "_started_ns", "facts", "recording", "tap")

    def __init__(self, facts: CallFacts, tap: FactTap, recording: CallRecording | None, ctx: CallContext,
                 started_ns: int) -> None:
        self.facts = facts
        self.tap = tap
        self.recording = recording
        self._clock = ctx.clock
        self._started_ns = started_ns
        self._announced: set[str] = set()

    def recording_started(self, recording_id: str, *, location: str = "", source: str = "acs") -> None:
        """A recording of this call started elsewhere (ACS server-side recording): emit
        ``RecordingStarted`` once per recording id (a pause and resume is not a new one)."""
        if recording_id in self._announced:
            return
        self._announced.add(recording_id)
        self.facts.emit(RecordingStarted, recording_id=recording_id, location=location or recording_id,
                        source=source)

    async def end(self, reason: str, report: dict[str, Any] | None = None) -> None:
        """Emit ``CallEnded`` (with ``report``), finish the recording, flush and close every sink."""
        if self.recording is not None:
            await self.recording.aclose()
        self.tap.end(reason, (self._clock.now_ns() - self._started_ns) / 1e6, report)
        await self.facts.aclose()


class DataTier:
    """A worker's data tier (see module docstring).

    ``short_term`` and ``long_term`` are the agents' memories (``agents.memory`` protocols:
    live state, history) when the stores are configured, else None.
    """

    def __init__(self, *, short_term: Any = None, long_term: Any = None, events: EventBus | None = None,
                 sinks: list[SinkFactory] | None = None, services: list[Service] | None = None,
                 recordings: Path | None = None, worker: str | None = None, live: LiveState | None = None) -> None:
        # An agents.memory.ShortTermMemory / LongTermMemory, or None: the agents keep their own
        # in-process memory. Typed Any because processors/ may not import agents/ (the layers
        # import downward only); the agents check the protocol when they take it.
        self.short_term = short_term
        self.long_term = long_term
        #: The live state (in-process, or shared on Redis): the ACS route finds moved calls in it.
        self.live = live
        self.events = events
        self.sinks = list(sinks or ())
        self.services = list(services or ())
        self.recordings = recordings
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.started = False

    async def start(self) -> None:
        """Start the worker-wide parts (event bus, stores' tasks)."""
        if self.started:
            return
        self.started = True
        for service in self.services:
            await service.start()
        if self.events is not None:
            await self.events.start()

    async def aclose(self) -> None:
        """Flush and close them (each within its own bounded wait)."""
        if self.events is not None:
            await self.events.aclose()
        for service in reversed(self.services):
            await service.aclose()
        self.started = False

    def attach_call(self, graph: Graph, ctx: CallContext, meta: CallMeta) -> AttachedCall:
        """Attach a call's graph (before it runs) to the tier; see module docstring."""
        started_ns = ctx.clock.now_ns()
        clock = ctx.clock
        sinks: list[FactSink] = []
        if self.events is not None:
            sinks.append(self.events.sink())
        sinks += [make(ctx.call_id, meta) for make in self.sinks]
        facts = CallFacts(ctx.call_id, sinks, lambda: (clock.now_ns() - started_ns) / 1e6)
        worker_meta = meta if meta.worker else dataclasses.replace(meta, worker=self.worker)
        tap = FactTap(graph, facts, worker_meta)
        for node in graph.nodes.values():
            # A brain with memories (the orchestrator) gets the worker's and the caller's id:
            # duck-typed, as processors/ may not import agents/.
            use_memory = getattr(node, "use_memory", None)
            if use_memory is not None:
                use_memory(short_term=self.short_term, long_term=self.long_term, caller_id=meta.caller)
        recording = (CallRecording.attach(graph, ctx, facts, self.recordings, started_ns=started_ns)
                     if self.recordings is not None else None)
        return AttachedCall(facts, tap, recording, ctx, started_ns)


_current: DataTier | None = None


def current() -> DataTier:
    """The installed tier, or an in-process default (no events published, nothing recorded)."""
    global _current
    if _current is None:
        _current = DataTier()
    return _current


def install(tier: DataTier | None) -> DataTier | None:
    """Make ``tier`` the worker's (None: back to the default); returns the previous one."""
    global _current
    previous, _current = _current, tier
    return previous


def attach_call(graph: Graph, ctx: CallContext, meta: CallMeta) -> AttachedCall:
    """Attach a call to the worker's tier (:meth:`DataTier.attach_call` of :func:`current`)."""
    return current().attach_call(graph, ctx, meta)


# --- configuration -------------------------------------------------------------------------


def sidecars_file(environ: Mapping[str, str]) -> Path | None:
    """The side-car config file to read, or None when there is none."""
    given = environ.get("VOICEGRAPH_SIDECARS", "").strip()
    if given:
        return Path(given)
    for folder in (Path.cwd() / "config", Path(__file__).resolve().parents[2] / "config"):
        if (folder / "sidecars.yaml").is_file():
            return folder / "sidecars.yaml"
    return None


def load_sidecars(path: Path | None) -> SidecarsConfig:
    """Parse the side-car config (blocking); ``ConfigError`` naming the file and the key."""
    if path is None:
        return SidecarsConfig()
    file = str(path)
    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError("the side-car config must be a mapping (events:, recordings:)", file=file)
    unknown = set(raw) - {"events", "recordings"}
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} (known: events, recordings)", file=file)
    ev = raw.get("events") or {}
    if not isinstance(ev, dict):
        raise ConfigError("events: must be a mapping", file=file)
    known = {"publisher", "source", "queue", "batch", "stream", "maxlen", "subscribers"}
    if set(ev) - known:
        raise ConfigError(f"events: unknown keys {sorted(set(ev) - known)} (known: {', '.join(sorted(known))})",
                          file=file)
    subs = []
    for i, item in enumerate(ev.get("subscribers") or ()):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ConfigError(f"events.subscribers[{i}]: needs a name (and use: module:function, types: [...])",
                              file=file)
        types = tuple(str(t) for t in item.get("types") or ())
        bad = set(types) - set(EVENT_TYPES.values())
        if bad:
            raise ConfigError(f"events.subscribers[{i}] ({item['name']}): unknown event types {sorted(bad)} "
                              f"(known: {', '.join(sorted(EVENT_TYPES.values()))})", file=file)
        subs.append(SubscriberSpec(name=item["name"], use=str(item.get("use") or ""), types=types))
    try:
        events = EventsConfig(publisher=str(ev.get("publisher", "inprocess")),
                              source=str(ev.get("source", "/voicegraph")), queue=int(ev.get("queue", 10_000)),
                              batch=int(ev.get("batch", 100)), stream=str(ev.get("stream", "voicegraph:{events}")),
                              maxlen=int(ev.get("maxlen", 100_000)), subscribers=tuple(subs))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"events: {exc}", file=file) from None
    if events.publisher not in _PUBLISHERS:
        raise ConfigError(f"events.publisher: {events.publisher!r} is not one of {', '.join(_PUBLISHERS)}", file=file)
    if min(events.queue, events.batch, events.maxlen) < 1:
        raise ConfigError("events: queue, batch and maxlen must be >= 1", file=file)
    folder = raw.get("recordings")
    return SidecarsConfig(events=events, recordings=Path(folder) if folder else None, file=file)


def data_tier_from_env(environ: Mapping[str, str] | None = None) -> DataTier:
    """The worker's tier from the environment and the side-car config (blocking; see module docstring)."""
    env = os.environ if environ is None else environ
    config = load_sidecars(sidecars_file(env))
    publisher = env.get("VOICEGRAPH_EVENTS", "").strip() or config.events.publisher
    if publisher not in _PUBLISHERS:
        raise ConfigError(f"environment variable VOICEGRAPH_EVENTS: {publisher!r} is not one of "
                          f"{', '.join(_PUBLISHERS)}")
    bus = _event_bus(publisher, config, env)
    recordings = config.recordings
    given = env.get("VOICEGRAPH_RECORDINGS")
    if given is not None:
        recordings = Path(given) if given.strip() not in ("", "0") else None
    # The live state is the agents' short-term memory (a StateStore, which the orchestrator
    # adapts: processors/ may not import agents/); the history their long-term memory.
    live = live_state_from_env(env)
    history = history_from_env(env)
    return DataTier(short_term=live, long_term=history, events=bus, recordings=recordings, live=live,
                    sinks=[lambda call_id, meta: live.sink(call_id), lambda call_id, meta: history.sink(call_id)],
                    services=[live, history], worker=live.worker)


def _event_bus(publisher: str, config: SidecarsConfig, env: Mapping[str, str]) -> EventBus | None:
    ev = config.events
    transport: EventTransport
    if publisher == "inprocess":
        if not ev.subscribers:
            return None  # nobody listens: no events are made at all
        inproc = InProcessTransport()
        for sub in ev.subscribers:
            inproc.subscribe(sub.name, _import_subscriber(sub, config.file), sub.types)
        transport = inproc
    elif publisher == "redis":
        url = env.get("REDIS_URL", "").strip()
        if not url:
            raise ConfigError("the redis event publisher needs REDIS_URL (e.g. redis://localhost:6379/0)")
        cluster = env.get("VOICEGRAPH_REDIS_CLUSTER", "").strip().lower()
        if cluster not in ("", "0", "1", "false", "true"):
            raise ConfigError(f"environment variable VOICEGRAPH_REDIS_CLUSTER: {cluster!r} is not 0/1/true/false")
        from redis.asyncio import Redis
        from redis.asyncio.cluster import RedisCluster

        from .events_redis import RedisStreamsTransport

        client: Any
        try:
            client = RedisCluster.from_url(url) if cluster in ("1", "true") else Redis.from_url(url)
        except ValueError as exc:
            raise ConfigError(f"environment variable REDIS_URL: {exc}") from None
        try:
            transport = RedisStreamsTransport(client, stream=ev.stream, maxlen=ev.maxlen,
                                              groups=[s.name for s in ev.subscribers])
        except ValueError as exc:
            raise ConfigError(f"events.stream: {exc}", file=config.file or None) from None
    else:
        endpoint = env.get("EVENTGRID_ENDPOINT", "").strip()
        if not endpoint:
            raise ConfigError("the eventgrid event publisher needs EVENTGRID_ENDPOINT (the topic's URL)")
        from .events_eventgrid import EventGridTransport

        try:
            transport = EventGridTransport(endpoint, env.get("EVENTGRID_KEY") or None)
        except ValueError as exc:
            raise ConfigError(f"environment variable EVENTGRID_ENDPOINT: {exc}") from None
    return EventBus(transport, source=ev.source, maxsize=ev.queue, batch=ev.batch)


def _import_subscriber(sub: SubscriberSpec, file: str) -> Subscriber:
    module, _, name = sub.use.partition(":")
    if not module or not name:
        raise ConfigError(f"events subscriber {sub.name}: use must be 'module:function', got {sub.use!r}", file=file)
    try:
        handler = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"events subscriber {sub.name}: cannot import {sub.use}: {exc}", file=file) from None
    if not callable(handler):
        raise ConfigError(f"events subscriber {sub.name}: {sub.use} is not callable", file=file)
    return handler  # type: ignore[no-any-return]
