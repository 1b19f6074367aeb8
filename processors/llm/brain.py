"""BrainProcessor: what every agent "brain" node shares, whatever produces its words.

A brain takes the caller's final transcript and answers with a stream of tokens framed
by ``ResponseStart``/``ResponseEnd``. This base keeps the conversation the way the
caller experienced it: user turns as transcribed, and bot answers as *heard*. On a
barge-in, the transport's ``BotStoppedSpeaking(interrupted=True, heard_text=...)``
replaces the answer with the words that actually played, so the next LLM request does
not assume the caller heard the rest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from pipeline.frames import BotStoppedSpeaking, EventFrame, FinalTranscript, LLMToken, ResponseEnd, ResponseStart
from pipeline.processor import Processor
from processors.text.context import Conversation

__all__ = ["BrainProcessor"]


class BrainProcessor(Processor, ABC):
    """Base of agent nodes: subclasses implement ``respond()`` (see module docstring)."""

    consumes = (FinalTranscript,)
    produces = (LLMToken,)
    io_bound = True

    def __init__(self, settings: object = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        self.conversation = Conversation()
        self._live_turn = 0

    @abstractmethod
    def respond(self, text: str, turn: int) -> AsyncIterator[str]:
        """Stream the answer to ``text`` as tokens."""

    def interruptible_reply(self, text: str) -> bool:
        """False for answers the caller must hear whole (a legal disclaimer)."""
        return True

    async def process(self, frame: FinalTranscript) -> None:
        turn = frame.turn
        self._close_previous()
        self.conversation.add_user(frame.text, turn)
        self.conversation.begin_bot(turn)
        self._live_turn = turn
        await self.push(ResponseStart(turn=turn, interruptible=self.interruptible_reply(frame.text)))
        tokens: list[str] = []
        async for token in self.interruptible(self.respond(frame.text, turn), turn):
            tokens.append(token)
            await self.push(LLMToken(token, turn=turn))
        # One entry for the whole answer (tokens may be pieces of words); a barge-in
        # replaces it with what was heard.
        self.conversation.bot_text_queued(turn, "".join(tokens))
        await self.push(ResponseEnd(turn=turn))

    def on_event(self, event: EventFrame) -> None:
        if type(event) is BotStoppedSpeaking and event.turn == self._live_turn:
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
