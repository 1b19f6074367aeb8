"""BrainProcessor: what every agent "brain" node shares, whatever produces its words.

A brain takes the caller's final transcript and answers with a stream of tokens framed
by ``ResponseStart``/``ResponseEnd``. This base keeps the conversation the way the
caller experienced it: user turns as transcribed, and bot answers as *heard*. On a
barge-in, the transport's ``BotStoppedSpeaking(interrupted=True, heard_text=...)``
replaces the answer with the words that actually played, so the next LLM request does
not assume the caller heard the rest.

Every bot utterance belongs to a turn:

* an answer uses the turn of the transcript it answers;
* words the bot says on its own (``Speak``: the ``greeting`` at call start, a prompt, a
  notice) get a turn of their own from the call's counter when they are queued, so the
  caller can barge in on a greeting like on any answer.

Every response is closed: if ``respond()`` fails mid-stream the error is reported, the
caller hears the configured ``apology`` after what was already said, and
``ResponseEnd`` follows, so the transport and the turn-taking never wait for an answer
that will not come.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from pipeline.frames import (
    BotStoppedSpeaking,
    DataFrame,
    EventFrame,
    FinalTranscript,
    LLMToken,
    ResponseEnd,
    ResponseStart,
    Speak,
    Start,
)
from pipeline.processor import Processor
from pipeline.settings import Doc
from processors.text.context import Conversation

__all__ = ["BrainProcessor", "BrainSettings", "stream_words"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BrainSettings:
    """What every brain says besides its answers."""

    greeting: Annotated[str, Doc(
        "said when the call starts, before the caller speaks (blank: the bot waits for the caller)")] = ""
    apology: Annotated[str, Doc("said when an answer fails mid-stream, so the call goes on (blank: silence)")] = (
        "Sorry, something went wrong on my side. Could you say that again?")


class BrainProcessor(Processor, ABC):
    """Base of agent nodes: subclasses implement ``respond()`` (see module docstring)."""

    consumes: tuple[type[DataFrame], ...] = (FinalTranscript, Speak)  # a brain may add its own (DTMF)
    produces = (LLMToken,)
    io_bound = True
    Settings = BrainSettings
    settings: BrainSettings

    def __init__(self, settings: BrainSettings | None = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        self.conversation = Conversation()
        self._live_turn = 0

    @abstractmethod
    def respond(self, text: str, turn: int) -> AsyncIterator[str]:
        """Stream the answer to ``text`` as tokens."""

    def interruptible_reply(self, text: str) -> bool:
        """False for answers the caller must hear whole (a legal disclaimer)."""
        return True

    def say(self, text: str, *, interruptible: bool = True) -> int:
        """Queue words the bot says on its own; returns the turn handed out for them."""
        turn = self.ctx.next_turn()
        self.enqueue(Speak(text, interruptible=interruptible, turn=turn))
        return turn

    async def process(self, frame: FinalTranscript | Speak) -> None:
        turn = frame.turn
        self._close_previous()
        if isinstance(frame, Speak):
            await self._speak(turn, stream_words(frame.text), interruptible=frame.interruptible)
            return
        self.conversation.add_user(frame.text, turn)
        await self._speak(turn, self.respond(frame.text, turn), interruptible=self.interruptible_reply(frame.text))

    async def _speak(self, turn: int, tokens: AsyncIterator[str], *, interruptible: bool) -> None:
        """One bot response of ``turn``: always opened and closed, whatever ``tokens`` does."""
        self.conversation.begin_bot(turn)
        self._live_turn = turn
        await self.push(ResponseStart(turn=turn, interruptible=interruptible))
        said: list[str] = []
        try:
            async for token in self.interruptible(tokens, turn):
                said.append(token)
                await self.push(LLMToken(token, turn=turn))
        except Exception as exc:
            if not self.is_stale(turn):
                self._failed(exc, LLMToken("", turn=turn))
                apology = self.settings.apology.strip()
                if apology:
                    token = f" {apology}" if said else apology
                    said.append(token)
                    await self.push(LLMToken(token, turn=turn))
        finally:
            # One entry for the whole answer (tokens may be pieces of words); a barge-in
            # replaces it with what was heard. A call being torn down gets no more frames.
            self.conversation.bot_text_queued(turn, "".join(said))
            task = asyncio.current_task()
            if task is None or not task.cancelling():
                await self.push(ResponseEnd(turn=turn))

    def on_event(self, event: EventFrame) -> None:
        kind = type(event)
        if kind is Start:
            greeting = self.settings.greeting.strip()
            if greeting:
                self.say(greeting)
        elif kind is BotStoppedSpeaking and event.turn == self._live_turn:
            assert isinstance(event, BotStoppedSpeaking)
            if event.interrupted:
                self.conversation.interrupt(event.turn, event.heard_text)
            else:
                self.conversation.end_bot(event.turn)
            self._live_turn = 0

    def _close_previous(self) -> None:
        # No transport reported the end (a text call): the answer was delivered whole.
        if self._live_turn:
            self.conversation.end_bot(self._live_turn)
            self._live_turn = 0


async def stream_words(text: str) -> AsyncIterator[str]:
    """Word tokens with their leading space, as LLM streams deliver them."""
    for i, word in enumerate(text.split()):
        yield word if i == 0 else " " + word
