"""voicegraph's engine: frames, processors, graphs, the runner, config and the bus.

This package imports nothing from the layers above it (processors, agents, transports,
voicegraph); they find each other through the registry.
"""

from .bus import Bus, Message, MessageType
from .clock import Clock, MonotonicClock, VirtualClock
from .config import NodeSpec, PipelineSpec, build_graph, load_pipeline, load_yaml
from .context import CallContext
from .errors import (
    ConfigError,
    FatalError,
    FrameError,
    ProtocolError,
    ServiceError,
    StateError,
    VoicegraphError,
)
from .framequeue import FrameQueue
from .graph import Edge, Graph, PathLatency
from .metrics import GraphMetrics, instrument
from .offload import blocking_executor, iterate_blocking
from .processor import NoSettings, Processor, State
from .registry import Registry, default_registry, register
from .runner import CallResult, CallRunner, run_call

__all__ = [
    "Bus",
    "CallContext",
    "CallResult",
    "CallRunner",
    "Clock",
    "ConfigError",
    "Edge",
    "FatalError",
    "FrameError",
    "FrameQueue",
    "Graph",
    "GraphMetrics",
    "Message",
    "MessageType",
    "MonotonicClock",
    "NoSettings",
    "NodeSpec",
    "PathLatency",
    "PipelineSpec",
    "Processor",
    "ProtocolError",
    "Registry",
    "ServiceError",
    "State",
    "StateError",
    "VirtualClock",
    "VoicegraphError",
    "blocking_executor",
    "build_graph",
    "default_registry",
    "instrument",
    "iterate_blocking",
    "load_pipeline",
    "load_yaml",
    "register",
    "run_call",
]
