"""Metrics observers: per-node processing time, per-turn TTFB, queue depth.

Opt-in per graph (``instrument(graph)``), so a call that does not ask pays nothing on
its hot path: the observer swaps timed wrappers into the nodes' ``process`` and
``push``. With direct calls a node's ``process`` includes the time spent downstream;
the wrappers subtract it, so ``processing`` is each node's own time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .bus import Message, MessageType
from .frames import Frame, MetricsEvent
from .graph import Graph
from .processor import Processor

__all__ = ["GraphMetrics", "NodeStats", "instrument"]


@dataclass(slots=True)
class NodeStats:
    """What one node did: processing times (ns, its own), TTFB per turn (ms), queue peak."""

    name: str
    processing_ns: list[int] = field(default_factory=list)
    ttfb_ms: dict[int, float] = field(default_factory=dict)
    queue_peak: int = 0
    _turn_in: dict[int, int] = field(default_factory=dict)
    _downstream_ns: int = 0

    def median_us(self) -> float:
        """Median processing time per frame, in microseconds."""
        return statistics.median(self.processing_ns) / 1000 if self.processing_ns else 0.0


class GraphMetrics:
    """Stats of every node in one instrumented graph."""

    def __init__(self, graph: Graph, *, max_samples: int = 100_000) -> None:
        self.graph = graph
        self.nodes: dict[str, NodeStats] = {}
        self.max_samples = max_samples

    def queue_depths(self) -> dict[str, int]:
        """Peak input-queue depth of every queued node so far."""
        out = {}
        for name, node in self.graph.nodes.items():
            if node._queue is not None:
                out[name] = node._queue.high_mark
                self.nodes[name].queue_peak = node._queue.high_mark
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per node: frames, median µs, TTFB per turn, queue peak."""
        self.queue_depths()
        return {
            name: {
                "frames": len(s.processing_ns),
                "median_us": round(s.median_us(), 2),
                "ttfb_ms": dict(s.ttfb_ms),
                "queue_peak": s.queue_peak,
            }
            for name, s in self.nodes.items()
        }


def instrument(graph: Graph) -> GraphMetrics:
    """Wrap every node of ``graph`` with timing; call before the graph runs."""
    metrics = GraphMetrics(graph)
    for name, node in graph.nodes.items():
        stats = NodeStats(name)
        metrics.nodes[name] = stats
        _wrap(node, stats, metrics)
    return metrics


def _wrap(node: Processor, stats: NodeStats, metrics: GraphMetrics) -> None:
    process: Callable[[Any], Awaitable[None]] = node.process
    push: Callable[[Frame], Awaitable[None]] = node.push
    clock = time.perf_counter_ns

    async def timed_push(frame: Frame) -> None:
        turn = frame.turn
        if turn and not frame.kind and turn in stats._turn_in:
            ttfb = (node.ctx.clock.now_ns() - stats._turn_in.pop(turn)) / 1e6  # on the call's clock
            stats.ttfb_ms[turn] = ttfb
            _report(node, MetricsEvent(node=node.name, name="ttfb", value=ttfb, turn=turn))
        t0 = clock()
        await push(frame)
        stats._downstream_ns += clock() - t0

    async def timed_process(frame: Any) -> None:
        turn = frame.turn
        if turn and turn not in stats._turn_in and turn not in stats.ttfb_ms:
            stats._turn_in[turn] = node.ctx.clock.now_ns()
        before = stats._downstream_ns
        t0 = clock()
        await process(frame)
        own = clock() - t0 - (stats._downstream_ns - before)
        if len(stats.processing_ns) < metrics.max_samples:
            stats.processing_ns.append(own)

    node.process = timed_process  # type: ignore[method-assign]
    node.push = timed_push  # type: ignore[method-assign]


def _report(node: Processor, event: MetricsEvent) -> None:
    node.ctx.bus.post(Message(type=MessageType.METRICS, source=node.name, text=event.name, value=event.value,
                              data=event))
