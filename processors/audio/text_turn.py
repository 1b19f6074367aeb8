"""A text end-of-turn judge: is the caller's sentence finished, from its words alone?

:func:`judge_turn` is a pure function of the transcript heard so far (the STT's interim
text of the open turn) and returns :class:`TextVerdict` ``COMPLETE``, ``INCOMPLETE`` or
``UNSURE``. :class:`TextSilence` turns the verdict into the endpointing silence window:
a complete turn ends ``complete_ms`` after the speech stop, an incomplete one waits
``incomplete_ms``, an unsure one (or no words, or stale words) keeps the base silence
window. No model, no download: a documented rule set, applied to the last words.

Rules (first match wins; text lower-cased, punctuation other than ``'`` dropped)
-----------------------------------------------------------------------------------
1. No words -> UNSURE (the STT heard nothing usable: silence-only endpointing).
2. The last word is a filler (``um uh er erm hmm mm ah eh``) -> INCOMPLETE: the caller
   is thinking aloud.
3. Dictation: the last word is a number word (``zero`` ... ``ninety``, ``hundred``,
   ``thousand``, ``oh``, ``double``), a single spelled letter or a token with a digit in
   it (the STT writes "456", "LS1"), and one of
   the cue phrases ``number is``, ``number's``, ``code is``, ``spelled``, ``spell``,
   ``digits``, ``zip``, ``postcode``, ``policy``, ``account``, ``phone``, ``card``,
   ``reference`` occurs in the turn -> INCOMPLETE: digits and letters come in groups with
   pauses between them, and the words cannot tell the last group from the others.
4. The last word is a function word that cannot end an English clause -> INCOMPLETE:
   articles (``a an the``), possessives (``my your our his her their its``),
   prepositions (``of to in on at for with from by about into ...``), conjunctions
   (``and or but because so if when that than ...``), auxiliaries and copulas
   (``is are was were be been am do does did have has had will would can could should
   must might may``), and contractions ending in one (``it's I'm I'd I'll ...``), plus
   intensifiers that need a word after them (``very really quite just``).
5. The last word is an open question or relative word (``what which who where why how
   whose``) at the end of the turn ("I don't know what") -> INCOMPLETE.
6. The turn is one word of acknowledgement or answer (``yes no yeah yep nope okay ok
   sure right thanks correct exactly please bye goodbye``) -> COMPLETE. A greeting alone
   ("hello", "hi") is not: callers go on ("Hello, this is Jane Doe"), so it is UNSURE.
7. The turn has at least ``min_words`` words (default 3) and none of the above
   matched -> COMPLETE: it ends in a content word (a noun, verb, adjective, number not
   being dictated, or a pronoun object: "change my address", "it was stolen").
8. Otherwise (one or two words that are not an acknowledgement) -> UNSURE.

What it cannot know
-------------------
* A clause that is complete but followed by more ("yes. <pause> and also my address
  changed"): "yes" is judged COMPLETE and the turn ends ``complete_ms`` after it; the
  rest becomes the next turn, which the brain hears as a new request (what a person
  answering "yes" quickly would also do). Raise ``complete_ms`` if that matters more
  than speed.
* Lists and numbers outside the cue phrases ("I was born in nineteen <pause> eighty")
  end early: a number that is not being dictated reads as a finished answer.
* Prosody: "my address is in Leeds" and "my address is in Leeds, near..." look the same;
  only the audio (Smart Turn) hears the rising pitch.
* Transcription errors: an STT that drops the last function word makes an incomplete
  turn look complete. Words arriving after the pause began are only used if they cover
  the audio up to the speech stop (see :class:`~processors.audio.endpointing.Endpointing`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from .endpointing import EndReason, ReasonedStrategy, SilenceStrategy, TurnSnapshot

__all__ = ["TextSilence", "TextVerdict", "judge_turn"]


class TextVerdict(StrEnum):
    """The judge's answer."""

    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    UNSURE = "unsure"


FILLERS: Final = frozenset("um uh er erm hmm mm ah eh uhm umm".split())
NUMBER_WORDS: Final = frozenset(
    "zero oh double one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty "
    "seventy eighty ninety hundred thousand".split()
)
DICTATION_CUES: Final = (
    "number is", "number's", "code is", "spelled", "spell", "digits", "zip", "postcode", "post code",
    "policy", "account", "phone", "card", "reference",
)
FUNCTION_WORDS: Final = frozenset(
    # articles and possessives
    "a an the my your our his her their its "
    # prepositions
    "of to in on at for with from by about into onto over under after before between "
    "through during without within against toward towards like as "
    # conjunctions
    "and or but because so if when that than while although though unless until whether "
    "since nor "
    # auxiliaries and copulas
    "is are was were be been being am do does did have has had will would can could "
    "should must might may shall "
    # contractions ending in an auxiliary
    "it's i'm i'd i'll i've you're we're they're he's she's that's there's what's "
    # intensifiers that need a word after them
    "very really quite just".split()
)
QUESTION_WORDS: Final = frozenset("what which who where why how whose".split())
ACKNOWLEDGEMENTS: Final = frozenset(
    "yes no yeah yep nope okay ok sure right thanks correct exactly please bye goodbye".split()
)
_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def _dictating(words: list[str]) -> bool:
    last = words[-1]
    has_digit = any(ch.isdigit() for ch in last)
    if not (has_digit or last in NUMBER_WORDS or (len(last) == 1 and last.isalpha())):
        return False
    joined = " ".join(words)
    return any(cue in joined for cue in DICTATION_CUES)


def judge_turn(text: str, *, min_words: int = 3) -> TextVerdict:
    """Judge whether ``text`` (the turn's words so far) ends the caller's turn.

    Pure; applies the module's rules 1-8 in order (see the module docstring).
    """
    words = _words(text)
    if not words:
        return TextVerdict.UNSURE
    last = words[-1]
    if last in FILLERS:
        return TextVerdict.INCOMPLETE
    if _dictating(words):
        return TextVerdict.INCOMPLETE
    if last in FUNCTION_WORDS or last in QUESTION_WORDS:
        return TextVerdict.INCOMPLETE
    if len(words) == 1 and last in ACKNOWLEDGEMENTS:
        return TextVerdict.COMPLETE
    if len(words) >= min_words:
        return TextVerdict.COMPLETE
    return TextVerdict.UNSURE


@dataclass(frozen=True, slots=True, kw_only=True)
class TextSilence:
    """Size the silence window by :func:`judge_turn` on the turn's fresh words.

    ``turn.words`` is the newest interim text that covers the audio up to the speech
    stop (None when there is none: no STT words, or the STT is behind); then the window
    is the inner strategy's (``model``: Smart Turn's :class:`ModelSilence` when both are
    on, else ``base_ms``). When both have answered: the text judge decides when it is
    sure (COMPLETE or INCOMPLETE); an UNSURE text defers to the model's window.

    Defaults as :class:`~processors.audio.endpointing.ModelSilence` (250 ms: the human
    gap between turns plus margin; 1500 ms: over nearly all mid-sentence pauses).
    """

    complete_ms: float = 250.0
    incomplete_ms: float = 1500.0
    min_words: int = 3
    model: SilenceStrategy | None = None  # sizes the window for UNSURE text (Smart Turn)

    def __post_init__(self) -> None:
        if not 0 < self.complete_ms <= self.incomplete_ms:
            raise ValueError(
                "TextSilence needs 0 < complete_ms <= incomplete_ms, "
                f"got {self.complete_ms} and {self.incomplete_ms}"
            )

    def verdict(self, turn: TurnSnapshot) -> TextVerdict:
        """The judge's verdict on the turn's fresh words (UNSURE without any)."""
        if turn.words is None:
            return TextVerdict.UNSURE
        return judge_turn(turn.words, min_words=self.min_words)

    def silence_ms(self, turn: TurnSnapshot, base_ms: float) -> float:
        """``complete_ms``/``incomplete_ms`` by the verdict; UNSURE: the model's or ``base_ms``."""
        verdict = self.verdict(turn)
        if verdict is TextVerdict.COMPLETE:
            return self.complete_ms
        if verdict is TextVerdict.INCOMPLETE:
            return self.incomplete_ms
        return base_ms if self.model is None else self.model.silence_ms(turn, base_ms)

    def shortened_by(self, turn: TurnSnapshot) -> EndReason:
        """``TEXT`` when the words decided, else the model's reason (or ``SILENCE``)."""
        if self.verdict(turn) is not TextVerdict.UNSURE:
            return EndReason.TEXT
        if isinstance(self.model, ReasonedStrategy):
            return self.model.shortened_by(turn)
        return EndReason.SILENCE if turn.end_of_turn_probability is None else EndReason.MODEL
