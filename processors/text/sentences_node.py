"""The sentences processor: streamed LLM tokens in, clauses ready to speak out.

Wraps the pure ``SentenceAggregator``: the first piece of an answer leaves as soon as it
is a clause or a few words up to a natural break, so TTS starts while the LLM is still
writing and the first audio does not wait for a long first sentence; the rest leave
sentence by sentence. ``ResponseEnd`` releases what is left before it is
forwarded. A barge-in's ``FlushStop`` drops the half-built sentence of the interrupted
answer, in order with the tokens (stale tokens that were still in flight are dropped
on arrival until then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pipeline.frames import ControlFrame, LLMToken, ResponseEnd, TTSText
from pipeline.processor import Processor
from pipeline.settings import Doc, Range

from .aggregator import SentenceAggregator

__all__ = ["SentencesProcessor", "SentencesSettings"]


@dataclass(frozen=True, kw_only=True)
class SentencesSettings:
    """How the bot's tokens are cut into clauses for the TTS."""

    first_clause_min_words: Annotated[int, Range(ge=0), Doc(
        "words before the first clause may go to the TTS early (0: whole sentences only)"
    )] = 4
    first_unit_max_words: Annotated[int, Range(ge=0), Doc(
        "longest first piece cut at a word break when the first sentence has no early comma "
        "(0: cut the first piece at punctuation only)"
    )] = 8


class SentencesProcessor(Processor):
    """Aggregates tokens into clauses for TTS (see module docstring)."""

    consumes = (LLMToken,)
    produces = (TTSText,)
    Settings = SentencesSettings
    settings: SentencesSettings

    def __init__(self, settings: SentencesSettings | None = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        self.aggregator = SentenceAggregator(first_clause_min_words=self.settings.first_clause_min_words,
                                             first_unit_max_words=self.settings.first_unit_max_words)
        self._turn = 0

    async def process(self, frame: LLMToken) -> None:
        if frame.turn != self._turn:
            self.aggregator.reset()  # a new answer; anything left belonged to an old one
            self._turn = frame.turn
        for clause in self.aggregator.push(frame.text):
            await self.push(TTSText(clause, turn=frame.turn))

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        if type(frame) is ResponseEnd and frame.turn == self._turn:
            rest = self.aggregator.flush()
            if rest and not self.is_stale(frame.turn):
                await self.push(TTSText(rest, turn=frame.turn))
        return None

    def on_flush_stop(self, turn: int) -> None:
        if 0 < self._turn <= turn:
            self.aggregator.reset()
            self._turn = 0
