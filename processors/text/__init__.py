"""Text shaping between the LLM and TTS, and the conversation the LLM sees.

- :mod:`~processors.text.aggregator` -- :class:`SentenceAggregator`, streamed tokens to
  speakable clauses and sentences.
- :mod:`~processors.text.context` -- :class:`Conversation`, the chat history trimmed to
  what the caller actually heard.

Both are pure and synchronous; pipeline processors wrap them.
"""

from processors.text.aggregator import ABBREVIATIONS, SentenceAggregator
from processors.text.context import Conversation, Message

__all__ = ["ABBREVIATIONS", "Conversation", "Message", "SentenceAggregator"]
