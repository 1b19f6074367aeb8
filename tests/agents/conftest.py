"""The local OpenAI-compatible peer fixture of the LLM tests, for the agents' LLM path."""

from tests.processors.llm.conftest import make_peer

__all__ = ["make_peer"]
