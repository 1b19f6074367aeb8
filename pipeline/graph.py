"""Graph: a call's DAG of named processors, validated when it is built.

Edges are of two kinds:

* links (``a -> b``): the main path. ``a`` awaits ``b`` directly (or ``b``'s queue
  when ``b`` waits on I/O), so backpressure flows upstream.
* taps (``a ~> t``): side-cars. ``t`` gets copies of what ``a`` pushes through a bounded
  queue with an overflow policy; ``a`` never waits for ``t``.

A duplex node (a transport) is a source on its outgoing side and a sink on its incoming
side, so ``caller -> vad -> stt -> brain -> tts -> caller`` is not a cycle.

``validate()`` raises ``ConfigError`` naming the node (and YAML file and line when the
graph came from config) for: cycles, dangling nodes, taps on duplex nodes, links where
nothing the upstream node can emit is consumed by the downstream one, and graphs whose
calls could never end (no source, or a sink no source reaches, so it never gets end of
stream and the call would wait for its timeout).

Building and validating are linear in nodes + edges: each node keeps its incoming and
outgoing edges, and every check walks each edge a constant number of times
(``perf/graph_build.py``: 20,000 chained nodes build and validate in about 0.2 s).
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
        self.edges: list[Edge] = []  # read it; add with link()/tap(), which also index it below
        self.node_lines: dict[str, int] = {}
        # Edges by end (names may not be nodes yet: _check_structure reports those).
        self._out: collections.defaultdict[str, list[Edge]] = collections.defaultdict(list)
        self._in: collections.defaultdict[str, list[Edge]] = collections.defaultdict(list)
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
        self._add_edge(Edge(src=self._name(src), dst=self._name(dst), line=line))

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
        self._add_edge(
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
        """Names ``name`` has edges to, in the order the edges were added."""
        return [e.dst for e in self._out.get(name, ()) if taps or not e.tap]

    def predecessors(self, name: str, *, taps: bool = True) -> list[str]:
        """Names with edges to ``name``, in the order the edges were added."""
        return [e.src for e in self._in.get(name, ()) if taps or not e.tap]

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
                if self._in.get(name):
                    out.append(node)
            elif not any(not e.tap for e in self._out.get(name, ())):
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
            placed = set(order)
            cycle = self._find_cycle([n for n in self.nodes if n not in placed], placed)
            raise self._error(f"cycle: {' -> '.join(cycle)}", cycle[0], self.node_lines.get(cycle[0], 0))
        return [self.nodes[n] for n in order]

    def latency_budget(self) -> list[PathLatency]:
        """Sum each node's (min, max) latency along every source-to-sink path."""
        paths: list[PathLatency] = []
        starts = [n.name for n in self.nodes.values() if n.duplex or not self._in.get(n.name)]
        # Depth first without recursion (a long chain must not exhaust the stack), each
        # step remembering only its parent: a path is spelled out once, at its end.
        steps: list[tuple[str, int]] = []  # (node, index of the step before it, -1 at a start)
        stack: list[tuple[str, int, float, float]] = [(s, -1, 0.0, 0.0) for s in reversed(starts)]
        while stack:
            name, parent, lo, hi = stack.pop()
            node = self.nodes[name]
            nlo, nhi = node.latency_ms()
            lo, hi = lo + nlo, hi + nhi
            steps.append((name, parent))
            here = len(steps) - 1
            nxt = [] if (node.duplex and parent >= 0) else self.successors(name, taps=False)
            if not nxt:
                path = []
                i = here
                while i >= 0:
                    path.append(steps[i][0])
                    i = steps[i][1]
                paths.append(PathLatency(path=tuple(reversed(path)), min_ms=lo, max_ms=hi))
            stack.extend((dst, here, lo, hi) for dst in reversed(nxt))
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
        """Raise ``ConfigError`` for the first structural, type or liveness problem found."""
        self._check_structure()
        order = self.topological_order()
        emits: dict[str, set[type[DataFrame]]] = {}
        for node in order:
            incoming: set[type[DataFrame]] = set()
            if not node.duplex:
                for edge in self._in.get(node.name, ()):
                    incoming |= emits.get(edge.src, set())
            passthrough = {t for t in incoming if not _handled(t, node.consumes)}
            emits[node.name] = set(node.produces) | (set() if node.duplex else passthrough)
        for node in order:  # duplex nodes were visited before their inputs were known
            out = emits.get(node.name, set())
            for edge in self._out.get(node.name, ()):
                dst = self.nodes[edge.dst]
                if dst.consumes and not any(_compatible(t, dst.consumes) for t in out):
                    raise self._error(
                        f"edge {edge.src} {'~>' if edge.tap else '->'} {edge.dst}: "
                        f"'{edge.dst}' consumes {_names(dst.consumes)} but '{edge.src}' "
                        f"emits {_names(out) or 'no data'}",
                        edge.dst,
                        edge.line or self.node_lines.get(edge.dst, 0),
                    )
        self._check_liveness()

    def _check_structure(self) -> None:
        if not self.nodes:
            raise self._error("the graph has no nodes", None, 0)
        for edge in self.edges:
            for end in (edge.src, edge.dst):
                if end not in self.nodes:
                    raise self._error(f"edge {edge.src} -> {edge.dst} names unknown node '{end}'", end, edge.line)
            if edge.tap and self.nodes[edge.dst].duplex:
                raise self._error("a tap cannot feed a duplex transport", edge.dst, edge.line)
            if edge.src == edge.dst and not self.nodes[edge.src].duplex:
                raise self._error(f"cycle: {edge.src} -> {edge.dst}", edge.src, edge.line)
        for name in self.nodes:
            if not self._out.get(name) and not self._in.get(name):
                raise self._error("dangling node: no edge reaches it or leaves it, so a call through it could "
                                  "never end", name, self.node_lines[name])
        for name in {e.dst for e in self.edges if e.tap}:
            if any(not e.tap for e in self._in[name]):
                raise self._error("a tap target cannot also be linked on the main path", name, self.node_lines[name])

    def _check_liveness(self) -> None:
        """Every sink must get end of stream from some source, or a call never ends.

        End of stream starts at each source and follows links and taps; a duplex node
        keeps what reaches it (its outgoing side is its own source), so the walk does not
        continue through one.
        """
        sources = [n.name for n in self.nodes.values() if n.is_source()]
        if not sources:
            raise self._error("no source: no node produces frames of its own (a caller transport or a player), "
                              "so a call could never start or end", None, 0)
        reached: set[str] = set()
        todo = list(sources)
        while todo:
            name = todo.pop()
            for edge in self._out.get(name, ()):
                if edge.dst not in reached:
                    reached.add(edge.dst)
                    if not self.nodes[edge.dst].duplex:
                        todo.append(edge.dst)
        for sink in self.sinks:
            if sink.name not in reached:
                raise self._error(
                    f"'{sink.name}' never gets end of stream: no source ({', '.join(sources)}) reaches it, so a "
                    "call would run until its timeout", sink.name, self.node_lines.get(sink.name, 0))

    def _find_cycle(self, stuck: list[str], placed: set[str]) -> list[str]:
        """A cycle among the nodes topological sorting could not place, in edge order.

        Each of them has a main-path predecessor that was not placed either, so walking
        back from one through such predecessors must come round: linear, no search.
        """
        seen: dict[str, int] = {}
        walk: list[str] = []
        name = stuck[0]
        while name not in seen:
            seen[name] = len(walk)
            walk.append(name)
            name = next(e.src for e in self._in[name] if e.src not in placed)
        cycle = walk[seen[name]:][::-1]  # walked backwards: reverse into edge order
        rank = {n: i for i, n in enumerate(stuck)}
        first = min(range(len(cycle)), key=lambda i: rank[cycle[i]])
        cycle = cycle[first:] + cycle[:first]
        return cycle + cycle[:1]

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
        self._add_edge(Edge(src=src, dst=node.name, tap=True, maxsize=maxsize, overflow=overflow))
        self._order.append(node)
        for frame in source.sticky_frames():
            queue.offer(frame)
        source._observers.append(queue.offer)

    def leave_tap(self, node: Processor) -> None:
        """Unwire a tap joined with :meth:`join_tap`; it gets nothing more."""
        for edge in [e for e in self._in.get(node.name, ()) if e.tap]:
            self.edges.remove(edge)
            self._out[edge.src].remove(edge)
            self._in[edge.dst].remove(edge)
            source = self.nodes[edge.src]
            if node._queue is not None and node._queue.offer in source._observers:
                source._observers.remove(node._queue.offer)
        if node in self._order:
            self._order.remove(node)
        self.nodes.pop(node.name, None)
        self.node_lines.pop(node.name, None)

    # --- helpers -----------------------------------------------------------------------

    def _add_edge(self, edge: Edge) -> None:
        self.edges.append(edge)
        self._out[edge.src].append(edge)
        self._in[edge.dst].append(edge)

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
