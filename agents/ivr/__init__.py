"""The IVR engine: deterministic YAML flows (intents, slots, confirmations, branches, tools, handoffs).

The embedded default brain when no model is configured, and an engine in its own right:
:class:`IVREngine` implements :class:`agents.engine.AgentEngine` over an agent's ``flow``
(schema in :mod:`agents.ivr.flow`), :func:`validate_flow` checks a flow for the registry,
and :func:`normalize` is the text normalisation both use on recogniser output.
"""

from .engine import APOLOGY, IVREngine
from .flow import Flow, FlowError, compile_flow, flow_handoffs, flow_problems, flow_tools, validate_flow
from .normalize import normalize
from .slots import SLOT_TYPES

__all__ = ["APOLOGY", "SLOT_TYPES", "Flow", "FlowError", "IVREngine", "compile_flow", "flow_handoffs",
           "flow_problems", "flow_tools", "normalize", "validate_flow"]
