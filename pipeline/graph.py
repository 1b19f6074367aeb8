"""Graph: a call's DAG of named processors, validated when it is built.

Edges are of two kinds:

* links (``a -> b``): the main path. ``a`` awaits ``b`` directly (or ``b``'s queue
  when ``b`` waits on I/O), so backpressure flows upstream.
* taps (``a ~> t``): side-cars. ``t`` gets copies of what ``a`` pushes through a bounded
  queue with an overflow policy; ``a`` never waits for ``t``.

A duplex node (a transport) is a source on its outgoing side and a sink on its incoming
side, so ``caller -> vad -> stt -> brain -> tts -> caller`` is not a cycle.

``validate()`` raises ``ConfigError`` naming the node (and YAML file and line when the
graph came from config) for: cycles, dangling nodes, taps on duplex nodes, and links
where nothing the upstream node can emit is consumed by the downstream one.
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .bus import Message, MessageType
from .context import CallContext
from .errors import ConfigError
from .framequeue import FrameQueue, Overflow
from .frames import DataFrame, ErrorEvent, EventFrame, FlushStart, Frame
from .processor import Processor

__all__ = ["Edge", "Graph", "PathLatency"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    """One edge; ``line`` is its line in the pipeline YAML (0 when built in code)."""

    src: str
    dst: str
    tap: bool = False
    maxsize: int = 256
    overflow: Overflow = "drop_oldest"
    line: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PathLatency:
    """Latency budget of one source-to-sink path (GStreamer's latency query)."""

    path: tuple[str, ...]
    min_ms: float
    max_ms: float


class Graph:
    """Named processors and the edges between them."""

    def __init__(self, name: str = "pipeline", *, file: str | None = None) -> None:
        self.name = name
        self.file = file
        self.nodes: dict[str, Processor] = {}
        self.edges: list[Edge] = []
        self.node_lines: dict[str, int] = {}
        self._event_watchers: list[Callable[[EventFrame], None]] = []
        self._pending: collections.deque[EventFrame] = collections.deque()
        self._broadcasting = False
        self._order: list[Processor] = []
        self._wired = False
        self.ctx: CallContext | None = None

    # --- building ----------------------------------------------------------------------

    def add(self, node: Processor, *, line: int = 0) -> Processor:
        """Add a node; its name must be unique."""
        if node.name in self.nodes:
            raise self._error(f"duplicate node name '{node.name}'", node.name, line)
        self.nodes[node.name] = node
        self.node_lines[node.name] = line
        return node

    def link(self, src: Processor | str, dst: Processor | str, *, line: int = 0) -> None:
        """Add a main-path edge ``src -> dst``."""
        self.edges.append(Edge(src=self._name(src), dst=self._name(dst), line=line))

    def chain(self, *nodes: Processor | str) -> None:
        """Add nodes not yet in the graph, and link them one after the other."""
        for node in nodes:
            if isinstance(node, Processor) and node.name not in self.nodes:
                self.add(node)
        for src, dst in itertools.pairwise(nodes):
            self.link(src, dst)

    def tap(
        self,
        src: Processor | str,
        dst: Processor | str,
        *,
        maxsize: int = 256,
        overflow: Overflow = "drop_oldest",
        line: int = 0,
    ) -> None:
        """Add a side-car edge: ``dst`` gets copies of what ``src`` pushes, never blocking it."""
        if isinstance(dst, Processor) and dst.name not in self.nodes:
            self.add(dst)
        self.edges.append(
            Edge(src=self._name(src), dst=self._name(dst), tap=True, maxsize=maxsize, overflow=overflow, line=line)
        )

    def probe(self, node: str, callback: Callable[[Frame], object]) -> None:
        """Call ``callback(frame)`` for every frame ``node`` pushes downstream (watch only)."""
        self._node(node, 0)._observers.append(callback)

    def watch_events(self, callback: Callable[[EventFrame], None]) -> None:
        """Call ``callback(event)`` for every out-of-band event, after the nodes saw it."""
        self._event_watchers.append(callback)

    # --- queries -----------------------------------------------------------------------

    def successors(self, name: str, *, taps: bool = True) -> list[str]:
        return [e.dst for e in self.edges if e.src == name and (taps or not e.tap)]

    def predecessors(self, name: str, *, taps: bool = True) -> list[str]:
        return [e.src for e in self.edges if e.dst == name and (taps or not e.tap)]

    @property
    def sources(self) -> list[Processor]:
        """Nodes that produce frames of their own (transports, file players)."""
        return [n for n in self.nodes.values() if n.is_source()]

    @property
    def sinks(self) -> list[Processor]:
        """Nodes where frames end: no outgoing edge, or the playback side of a transport."""
        out = []
        for name, node in self.nodes.items():
            if node.duplex:
                if self.predecessors(name):
                    out.append(node)
            elif not self.successors(name, taps=False):
                out.append(node)
        return out

    def topological_order(self) -> list[Processor]:
        """Nodes, every one after the nodes that feed it (duplex incoming sides ignored)."""
        self._check_structure()
        indegree = {name: 0 for name in self.nodes}
        for edge in self.edges:
            if not self.nodes[edge.dst].duplex:
                indegree[edge.dst] += 1
        ready = collections.deque(name for name, d in indegree.items() if d == 0)
        order: list[str] = []
        while ready:
            name = ready.popleft()
            order.append(name)
            for dst in self.successors(name):
                if self.nodes[dst].duplex:
                    continue
                indegree[dst] -= 1
                if indegree[dst] == 0:
                    ready.append(dst)
        if len(order) != len(self.nodes):
            stuck = [n for n in self.nodes if n not in order]
            cycle = self._find_cycle(stuck)
            raise self._error(f"cycle: {' -> '.join(cycle)}", cycle[0], self.node_lines.get(cycle[0], 0))
        return [self.nodes[n] for n in order]

    def latency_budget(self) -> list[PathLatency]:
        """Sum each node's (min, max) latency along every source-to-sink path."""
        paths: list[PathLatency] = []
        starts = [n.name for n in self.nodes.values() if n.duplex or not self.predecessors(n.name)]

        def walk(name: str, path: tuple[str, ...], lo: float, hi: float) -> None:
            node = self.nodes[name]
            nlo, nhi = node.latency_ms()
            lo, hi = lo + nlo, hi + nhi
            nxt = [] if (node.duplex and path) else self.successors(name, taps=False)
            if not nxt:
                paths.append(PathLatency(path=path + (name,), min_ms=lo, max_ms=hi))
            for dst in nxt:
                walk(dst, path + (name,), lo, hi)

        for start in starts:
            walk(start, (), 0.0, 0.0)
        return paths

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart (taps dotted)."""
        lines = ["flowchart LR"]
        for name, node in self.nodes.items():
            lines.append(f'    {_mid(name)}["{name}<br/><small>{type(node).__name__}</small>"]')
        for edge in self.edges:
            arrow = "-.->" if edge.tap else "-->"
            lines.append(f"    {_mid(edge.src)} {arrow} {_mid(edge.dst)}")
        return "\n".join(lines) + "\n"

    # --- validation --------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ``ConfigError`` for the first structural or type problem found."""
        self._check_structure()
        order = self.topological_order()
        emits: dict[str, set[type[DataFrame]]] = {}
        for node in order:
            incoming: set[type[DataFrame]] = set()
            for edge in self.edges:
                if edge.dst == node.name and not node.duplex:
                    incoming |= emits.get(edge.src, set())
            passthrough = {t for t in incoming if not _handled(t, node.consumes)}
            emits[node.name] = set(node.produces) | (set() if node.duplex else passthrough)
        for node in order:  # duplex nodes were visited before their inputs were known
            for edge in self.edges:
                if edge.src != node.name:
                    continue
                dst = self.nodes[edge.dst]
                if not dst.consumes:
                    continue
                out = emits.get(edge.src, set())
                if not any(_compatible(t, dst.consumes) for t in out):
                    raise self._error(
                        f"edge {edge.src} {'~>' if edge.tap else '->'} {edge.dst}: "
                        f"'{edge.dst}' consumes {_names(dst.consumes)} but '{edge.src}' "
                        f"emits {_names(out) or 'no data'}",
                        edge.dst,
                        edge.line or self.node_lines.get(edge.dst, 0),
                    )

    def _check_structure(self) -> None:
        for edge in self.edges:
            for end in (edge.src, edge.dst):
                if end not in self.nodes:
                    raise self._error(f"edge {edge.src} -> {edge.dst} names unknown node '{end}'", end, edge.line)
            if edge.tap and self.nodes[edge.dst].duplex:
                raise self._error("a tap cannot feed a duplex transport", edge.dst, edge.line)
            if edge.src == edge.dst and not self.nodes[edge.src].duplex:
                raise self._error(f"cycle: {edge.src} -> {edge.dst}", edge.src, edge.line)
        if len(self.nodes) > 1:
            for name in self.nodes:
                if not self.successors(name) and not self.predecessors(name):
                    raise self._error("dangling node: no edge reaches it or leaves it", name, self.node_lines[name])
        taps_in = {e.dst for e in self.edges if e.tap}
        for name in taps_in:
            if self.predecessors(name, taps=False):
                raise self._error("a tap target cannot also be linked on the main path", name, self.node_lines[name])

    def _find_cycle(self, names: list[str]) -> list[str]:
        allowed = set(names)
        for start in names:
            stack, seen = [(start, [start])], set()
            while stack:
                cur, path = stack.pop()
                for nxt in self.successors(cur):
                    if nxt == start:
                        return path + [start]
                    if nxt in allowed and nxt not in seen and not self.nodes[nxt].duplex:
                        seen.add(nxt)
                        stack.append((nxt, path + [nxt]))
        return names[:1] * 2

    # --- running -----------------------------------------------------------------------

    def wire(self, ctx: CallContext) -> list[Processor]:
        """Connect the nodes for one call; returns them in topological order."""
        if self._wired:
            raise ConfigError(f"graph '{self.name}' is already wired to a call; build a new one per call")
        self.validate()
        self.ctx = ctx
        self._order = self.topological_order()
        taps_in = {e.dst: e for e in self.edges if e.tap}
        for node in self._order:
            node._emit = self.broadcast
            node._eos = None
            if node.name in taps_in:
                spec = taps_in[node.name]
                node._queue = FrameQueue(spec.maxsize, spec.overflow)
            elif node.io_bound:
                node._queue = FrameQueue(node.queue_size, "block")
        for edge in self.edges:
            src, dst = self.nodes[edge.src], self.nodes[edge.dst]
            if edge.tap:
                assert dst._queue is not None
                src._observers.append(dst._queue.offer)
            else:
                src._outputs.append(dst._receiver())
                dst._upstream.append(src.on_upstream)
        for node in self._order:
            node._passthrough = [] if node.duplex else node._outputs
        self._wired = True
        return self._order

    def broadcast(self, event: EventFrame) -> None:
        """Deliver an out-of-band event to every node now, in topological order.

        Events emitted while a broadcast is running are queued and delivered right after
        it, so every node sees events in the same order.
        """
        self._pending.append(event)
        if self._broadcasting:
            return
        self._broadcasting = True
        try:
            while self._pending:
                ev = self._pending.popleft()
                if type(ev) is FlushStart and self.ctx is not None:
                    self.ctx.mark_flushed(ev.turn)
                for node in self._order:
                    node._on_event(ev)
                if type(ev) is ErrorEvent and self.ctx is not None:
                    self.ctx.bus.post(
                        Message(type=MessageType.ERROR, source=ev.node, text=ev.message, data=ev)
                    )
                for watcher in self._event_watchers:
                    watcher(ev)
        finally:
            self._broadcasting = False

    def join_tap(self, src: str, node: Processor, *, maxsize: int = 256, overflow: Overflow = "drop_oldest") -> None:
        """Wire ``node`` as a tap of ``src`` into a graph already running a call.

        A late joiner: ``src``'s sticky frames (the audio formats) are queued for it
        first, so it knows the format of the audio it joins; then it gets copies of
        what ``src`` pushes from now on. The runner starts it (``CallRunner.attach``).
        """
        if not self._wired:
            raise ConfigError(f"graph '{self.name}' is not running a call; add taps with tap()")
        source = self._node(src, 0)
        if source.duplex:
            raise self._error(f"cannot tap duplex node '{src}'", node.name, 0)
        self.add(node)
        queue = node._queue = FrameQueue(maxsize, overflow)
        node._emit = self.broadcast
        node._passthrough = []
        self.edges.append(Edge(src=src, dst=node.name, tap=True, maxsize=maxsize, overflow=overflow))
        self._order.append(node)
        for frame in source.sticky_frames():
            queue.offer(frame)
        source._observers.append(queue.offer)

    def leave_tap(self, node: Processor) -> None:
        """Unwire a tap joined with :meth:`join_tap`; it gets nothing more."""
        for edge in [e for e in self.edges if e.tap and e.dst == node.name]:
            self.edges.remove(edge)
            source = self.nodes[edge.src]
            if node._queue is not None and node._queue.offer in source._observers:
                source._observers.remove(node._queue.offer)
        if node in self._order:
            self._order.remove(node)
        self.nodes.pop(node.name, None)
        self.node_lines.pop(node.name, None)

    # --- helpers -----------------------------------------------------------------------

    def _name(self, node: Processor | str) -> str:
        return node.name if isinstance(node, Processor) else node

    def _node(self, name: str, line: int) -> Processor:
        try:
            return self.nodes[name]
        except KeyError:
            raise self._error(f"unknown node '{name}'", name, line) from None

    def _error(self, message: str, node: str | None, line: int) -> ConfigError:
        return ConfigError(message, file=self.file, line=line or None, node=node)


def _handled(frame_type: type[DataFrame], consumes: Iterable[type[DataFrame]]) -> bool:
    return any(issubclass(frame_type, c) for c in consumes)


def _compatible(frame_type: type[DataFrame], consumes: Iterable[type[DataFrame]]) -> bool:
    return any(issubclass(frame_type, c) or issubclass(c, frame_type) for c in consumes)


def _names(types: Iterable[type]) -> str:
    return ", ".join(sorted(t.__name__ for t in types))


def _mid(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
