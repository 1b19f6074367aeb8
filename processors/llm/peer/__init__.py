"""A local OpenAI-compatible chat-completions server (``voicegraph peer openai``), for
tests, benchmarks and development without a model endpoint. See ``app.py``."""

from .app import OpenAIPeer, PeerRequest
from .script import Fault, PeerScript, Reply, ToolCallReply, load_script

__all__ = ["Fault", "OpenAIPeer", "PeerRequest", "PeerScript", "Reply", "ToolCallReply", "load_script"]
