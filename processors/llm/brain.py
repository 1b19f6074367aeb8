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

Preemptive answers (``preemptive: true``, for brains whose answer is a pure function of
the caller's words: ``preemptable``): when the VAD sees the caller stop, the brain starts
answering the latest interim transcript of the open turn, while the endpointing still
waits to be sure the turn is over. The tokens are kept here, not pushed, so nothing of
that answer can reach the caller before the turn is confirmed. When the final transcript
comes, it is used if it says the same words (case and punctuation aside): its tokens so
far go out at once and the rest as they come. If the words differ, or the caller
resumes speaking in the same turn, it is cancelled unheard and the final is answered as
usual. Each preemptive answer is reported per turn with ``MetricsEvent`` s named
:data:`PREEMPTIVE_STARTED` and :data:`PREEMPTIVE_USED` (value 1 used, 0 dropped).
"""

from __future__ import annotations

import asyncio
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, ClassVar

from pipeline.errors import ConfigError
from pipeline.frames import (
    BotStoppedSpeaking,
    DataFrame,
    EventFrame,
    FinalTranscript,
    InterimTranscript,
    LLMToken,
    MetricsEvent,
    ResponseEnd,
    ResponseStart,
    Speak,
    Start,
    UserStartedSpeaking,
    UserStoppedSpeaking,
)
from pipeline.processor import Processor
from pipeline.settings import Doc
from processors.text.context import Conversation

__all__ = ["PREEMPTIVE_STARTED", "PREEMPTIVE_USED", "BrainProcessor", "BrainSettings", "same_words",
           "stream_words"]

logger = logging.getLogger(__name__)

#: ``MetricsEvent.name`` when a preemptive answer starts (value: the interim's word count).
PREEMPTIVE_STARTED = "preemptive_started"
#: ``MetricsEvent.name`` when a preemptive answer is settled (value 1: said, 0: dropped).
PREEMPTIVE_USED = "preemptive_used"


@dataclass(frozen=True, kw_only=True)
class BrainSettings:
    """What every brain says besides its answers."""

    greeting: Annotated[str, Doc(
        "said when the call starts, before the caller speaks (blank: the bot waits for the caller)")] = ""
    apology: Annotated[str, Doc("said when an answer fails mid-stream, so the call goes on (blank: silence)")] = (
        "Sorry, something went wrong on my side. Could you say that again?")
    preemptive: Annotated[bool, Doc(
        "start answering the interim transcript when the caller stops; said only if the final has the same "
        "words")] = False


class BrainProcessor(Processor, ABC):
    """Base of agent nodes: subclasses implement ``respond()`` (see module docstring)."""

    consumes: tuple[type[DataFrame], ...] = (FinalTranscript, Speak)  # a brain may add its own (DTMF)
    produces = (LLMToken,)
    io_bound = True
    Settings = BrainSettings
    settings: BrainSettings
    #: ``respond()`` depends on the caller's words only (no context, no tools with effects),
    #: so it may run before the turn is confirmed and be thrown away.
    preemptable: ClassVar[bool] = False

    def __init__(self, settings: BrainSettings | None = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        self.conversation = Conversation()
        self._live_turn = 0
        if self.settings.preemptive and not self.preemptable:
            raise ConfigError(f"{type(self).__name__} cannot answer preemptively (its answers read the "
                              "conversation or run tools): set preemptive: false")
        if self.settings.preemptive:
            # Interim transcripts come through this node (they are re-pushed unchanged).
            self.consumes = (*self.consumes, InterimTranscript)
        self._interim: tuple[int, str] = (0, "")  # the open turn's latest interim transcript
        self._preempt: _Preemption | None = None

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
        if not isinstance(frame, (FinalTranscript, Speak)):  # an InterimTranscript (preemptive: see __init__)
            self._interim = (turn, frame.text)
            await self.push(frame)
            return
        self._close_previous()
        if isinstance(frame, Speak):
            await self._speak(turn, stream_words(frame.text), interruptible=frame.interruptible)
            return
        self.conversation.add_user(frame.text, turn)
        tokens = self._preempted(frame) or self.respond(frame.text, turn)
        await self._speak(turn, tokens, interruptible=self.interruptible_reply(frame.text))

    async def cleanup(self) -> None:
        self._drop_preemption("the call ended")
        await super().cleanup()

    def _preempted(self, final: FinalTranscript) -> AsyncIterator[str] | None:
        """The preemptive answer's tokens if it answered these words, else None (dropped)."""
        preempt = self._preempt
        if preempt is None or preempt.turn > final.turn:
            return None
        if preempt.turn < final.turn:
            self._drop_preemption("its turn was never confirmed")
            return None
        if not same_words(preempt.text, final.text):
            self._drop_preemption(f"the final transcript {final.text!r} differs from {preempt.text!r}")
            return None
        self._preempt = None
        self.emit(MetricsEvent(node=self.name, name=PREEMPTIVE_USED, value=1, unit="", turn=final.turn))
        return preempt.replay()

    def _start_preemption(self, turn: int) -> None:
        interim_turn, text = self._interim
        if interim_turn != turn or not text.strip() or self.is_stale(turn):
            return
        if self._preempt is not None:
            if self._preempt.turn == turn and same_words(self._preempt.text, text):
                return  # already answering these words (a second pause, nothing new said)
            self._drop_preemption("the caller said more")
        self._preempt = _Preemption(turn, text, self.respond(text, turn))
        self.emit(MetricsEvent(node=self.name, name=PREEMPTIVE_STARTED, value=len(text.split()), unit="words",
                               turn=turn))
        logger.debug("%s: preemptive answer to turn %d started on %r", self.name, turn, text)

    def _drop_preemption(self, why: str) -> None:
        preempt, self._preempt = self._preempt, None
        if preempt is None:
            return
        preempt.cancel()
        logger.debug("%s: preemptive answer to turn %d dropped: %s", self.name, preempt.turn, why)
        if self._emit is not None:
            self.emit(MetricsEvent(node=self.name, name=PREEMPTIVE_USED, value=0, unit="", turn=preempt.turn))

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
        if kind is UserStoppedSpeaking and self.settings.preemptive and event.turn:
            self._start_preemption(event.turn)
        elif kind is UserStartedSpeaking and self._preempt is not None and event.turn == self._preempt.turn:
            self._drop_preemption("the caller resumed")
        elif kind is Start:
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


_WORD = re.compile(r"[\w']+")


def same_words(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` say the same words, case and punctuation aside."""
    return _WORD.findall(a.lower()) == _WORD.findall(b.lower())


class _Preemption:
    """A preemptive answer being generated into a buffer, unheard until :meth:`replay`."""

    def __init__(self, turn: int, text: str, tokens: AsyncIterator[str]) -> None:
        self.turn = turn
        self.text = text
        self._tokens: list[str] = []
        self._done = False
        self._error: Exception | None = None
        self._more = asyncio.Event()
        self._task = asyncio.create_task(self._collect(tokens), name=f"preemptive-{turn}")

    async def _collect(self, tokens: AsyncIterator[str]) -> None:
        try:
            async for token in tokens:
                self._tokens.append(token)
                self._more.set()
        except Exception as exc:  # replayed to the turn that uses it, like a live failure
            self._error = exc
        finally:
            self._done = True
            self._more.set()

    async def replay(self) -> AsyncIterator[str]:
        """The tokens made so far, then the rest as they come (and a failure, re-raised)."""
        sent = 0
        try:
            while True:
                while sent < len(self._tokens):
                    yield self._tokens[sent]
                    sent += 1
                if self._done:
                    if self._error is not None:
                        raise self._error
                    return
                self._more.clear()
                await self._more.wait()
        finally:
            self._task.cancel()  # a flush stopped the answer: stop making it too

    def cancel(self) -> None:
        self._task.cancel()


async def stream_words(text: str) -> AsyncIterator[str]:
    """Word tokens with their leading space, as LLM streams deliver them."""
    for i, word in enumerate(text.split()):
        yield word if i == 0 else " " + word
