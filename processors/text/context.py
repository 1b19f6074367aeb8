"""Conversation context that keeps only what the caller actually heard.

An LLM that believes it said a whole paragraph, when the caller cut it off after three
words, answers the wrong question. :class:`Conversation` therefore records the bot's
reply clause by clause, with the duration of each clause's audio, and a cursor of how
much audio has been played. On barge-in, :meth:`Conversation.interrupt` keeps the
clauses played in full plus a proportional share of the clause that was playing (by
characters over its audio duration, rounded down to a whole word) and marks the
message interrupted. A reply the caller heard nothing of is dropped altogether.

Calls carry the turn id; calls about a turn other than the bot message in progress are
stale (audio of an interrupted turn still draining) and are ignored, by comparison.

:meth:`Conversation.messages` returns the OpenAI chat format: the system prompt, then
the bounded history (``max_messages`` and ``max_chars``, the oldest dropped first).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Conversation", "Message"]

logger = logging.getLogger(__name__)

Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    """One entry of the history as the LLM will see it.

    Attributes:
        role: ``"user"`` or ``"assistant"``.
        content: the text (for the bot: what the caller heard).
        turn: the user turn it belongs to.
        interrupted: the bot was cut off by the caller.
        live: the bot is still speaking it (content is what was heard so far).
    """

    role: Role
    content: str
    turn: int
    interrupted: bool = False
    live: bool = False


@dataclass(slots=True)
class _Clause:
    text: str
    audio_ms: float


@dataclass(slots=True)
class _Entry:
    role: Role
    turn: int
    text: str = ""  # user text, or the assistant's final text once not live
    clauses: list[_Clause] = field(default_factory=list)
    played_ms: float = 0.0
    live: bool = False
    interrupted: bool = False

    def heard(self) -> str:
        """The words of a bot message played so far."""
        remaining = self.played_ms
        parts: list[str] = []
        for clause in self.clauses:
            # A clause without audio yet has not been synthesised, let alone played.
            if clause.audio_ms <= 0 or remaining <= 0:
                break
            if remaining >= clause.audio_ms:
                parts.append(clause.text)
                remaining -= clause.audio_ms
                continue
            partial = _cut_to_words(clause.text, remaining / clause.audio_ms)
            if partial:
                parts.append(partial)
            break
        return " ".join(parts)

    def spoken(self) -> str:
        return " ".join(clause.text for clause in self.clauses)


class Conversation:
    """The chat history of one call, as heard by the caller.

    Args:
        system_prompt: first message of :meth:`messages`; None for none.
        max_messages: most user/assistant messages kept (the system prompt is extra).
            Default 40: twenty exchanges covers a long support call.
        max_chars: most characters of content kept; bounds prompt tokens (about four
            characters per token) and latency. Default 16,000 (~4k tokens).
        interrupted_marker: appended to an interrupted bot message so the model knows
            it was cut off (e.g. ``"…"``); default none.

    The newest message is always kept, even if it alone exceeds ``max_chars``.
    """

    def __init__(
        self,
        system_prompt: str | None = None,
        *,
        max_messages: int = 40,
        max_chars: int = 16_000,
        interrupted_marker: str = "",
    ) -> None:
        if max_messages < 1 or max_chars < 1:
            raise ValueError(
                f"max_messages and max_chars must be >= 1, got {max_messages} and {max_chars}"
            )
        self.system_prompt = system_prompt
        self._max_messages = max_messages
        self._max_chars = max_chars
        self._marker = interrupted_marker
        self._entries: list[_Entry] = []
        self._bot: _Entry | None = None  # the bot message being spoken, if any

    def add_user(self, text: str, turn: int) -> None:
        """Record what the caller said in ``turn``; pieces of one turn are joined."""
        text = " ".join(text.split())
        if not text:
            return
        last = self._entries[-1] if self._entries else None
        if last is not None and last.role == "user" and last.turn == turn:
            last.text = f"{last.text} {text}"
        else:
            self._entries.append(_Entry(role="user", turn=turn, text=text))
        self._trim()

    def begin_bot(self, turn: int) -> None:
        """The bot starts replying to ``turn``; clauses follow with :meth:`bot_text_queued`."""
        if self._bot is not None:
            if self._bot.turn == turn:
                return
            # Neither ended nor interrupted: keep only what was heard, to be safe.
            logger.warning(
                "conversation: bot message of turn %d superseded by turn %d", self._bot.turn, turn
            )
            self._finish(self._bot, interrupted=True)
        self._bot = _Entry(role="assistant", turn=turn, live=True)
        self._entries.append(self._bot)

    def bot_text_queued(self, turn: int, text: str, audio_ms: float = 0.0) -> None:
        """A clause of ``turn`` was synthesised into ``audio_ms`` of audio.

        Pass ``audio_ms=0`` if the audio is still streaming and add its length with
        :meth:`bot_audio_queued` as chunks arrive.
        """
        bot = self._live(turn)
        text = " ".join(text.split())
        if bot is not None and text:
            bot.clauses.append(_Clause(text=text, audio_ms=max(0.0, audio_ms)))

    def bot_audio_queued(self, turn: int, audio_ms: float) -> None:
        """Another ``audio_ms`` of audio was synthesised for the latest clause of ``turn``."""
        bot = self._live(turn)
        if bot is not None and bot.clauses:
            bot.clauses[-1].audio_ms += max(0.0, audio_ms)

    def bot_audio_played(self, turn: int, ms: float) -> None:
        """Another ``ms`` of the bot's audio for ``turn`` reached the caller."""
        bot = self._live(turn)
        if bot is not None:
            bot.played_ms += max(0.0, ms)

    def interrupt(self, turn: int, heard: str | None = None) -> str:
        """The caller barged in on ``turn``: keep the heard words, mark it interrupted.

        Args:
            heard: what the caller heard, when the transport knows it exactly (its
                playout ledger); None estimates it from the clauses and played audio.

        Returns:
            The text kept (empty if the caller heard nothing and the message was
            dropped, or if no bot message of ``turn`` is in progress).
        """
        bot = self._live(turn)
        if bot is None:
            return ""
        if heard is not None:
            bot.clauses = [_Clause(text=" ".join(heard.split()), audio_ms=1.0)]
            bot.played_ms = 1.0
        return self._finish(bot, interrupted=True)

    def end_bot(self, turn: int) -> str:
        """The bot finished speaking ``turn`` and all its audio played; keep it whole."""
        bot = self._live(turn)
        if bot is None:
            return ""
        return self._finish(bot, interrupted=False)

    @property
    def history(self) -> list[Message]:
        """The kept messages, oldest first, without the system prompt."""
        out: list[Message] = []
        for entry in self._entries:
            content = entry.heard() if entry.live else entry.text
            if entry.interrupted and content:
                content += self._marker
            if content:
                out.append(
                    Message(
                        role=entry.role,
                        content=content,
                        turn=entry.turn,
                        interrupted=entry.interrupted,
                        live=entry.live,
                    )
                )
        return out

    def messages(self) -> list[dict[str, str]]:
        """The context for an LLM request, in OpenAI chat format.

        A bot message still being spoken appears with the words heard so far.
        """
        out: list[dict[str, str]] = []
        if self.system_prompt:
            out.append({"role": "system", "content": self.system_prompt})
        out.extend({"role": message.role, "content": message.content} for message in self.history)
        return out

    def _live(self, turn: int) -> _Entry | None:
        if self._bot is None or self._bot.turn != turn:
            logger.debug("conversation: ignoring stale call for turn %d", turn)
            return None
        return self._bot

    def _finish(self, bot: _Entry, *, interrupted: bool) -> str:
        bot.text = bot.heard() if interrupted else bot.spoken()
        bot.interrupted = interrupted
        bot.live = False
        bot.clauses = []
        self._bot = None
        if not bot.text:
            self._entries.remove(bot)
        self._trim()
        return bot.text

    def _trim(self) -> None:
        """Drop the oldest finished messages until both bounds hold."""
        total = sum(len(entry.text) for entry in self._entries if not entry.live)
        while len(self._entries) > 1 and (
            len(self._entries) > self._max_messages or total > self._max_chars
        ):
            oldest = self._entries[0]
            if oldest.live:
                break  # never drop what the bot is saying right now
            total -= len(oldest.text)
            del self._entries[0]


def _cut_to_words(text: str, fraction: float) -> str:
    """The first ``fraction`` of ``text`` by characters, without a trailing part-word."""
    cut = int(len(text) * fraction)
    if cut >= len(text):
        return text
    if not text[cut].isspace():
        # Mid-word: a word is heard only once it has been played to its end.
        cut = text.rfind(" ", 0, cut + 1)
        if cut < 0:
            return ""
    return text[:cut].rstrip(" ,;:")
