"""Sentence and clause aggregation: streamed LLM tokens in, speakable text out.

TTS sounds right only on whole phrases, yet every token held back delays the first
audio. :class:`SentenceAggregator` therefore emits the *first* piece of a response as
soon as it has a clause of at least ``first_clause_min_words`` words (ending in ``,``
``;`` ``:`` or a dash), and every later piece at sentence ends (``.`` ``?`` ``!`` ``…``
or a newline), where the voice's prosody needs the whole sentence.

A boundary is punctuation *followed by whitespace*, which rules out splitting inside
``100,000``, ``3.14``, ``10:30``, ``example.com/a?b=c`` and ``jane.doe@example.com``
with no special cases. A full stop is not a sentence end after:

* a known abbreviation (``Dr.``, ``Mr.``, ``vs.``, ``approx.``, ``ext.`` ... see
  :data:`ABBREVIATIONS`); ``etc.`` and ``No.`` are left out because in speech they end
  sentences more often than not;
* dotted initials such as ``e.g.``, ``i.e.``, ``a.m.``, ``U.S.``, ``Ph.D.``;
* a single capital after a capitalised word (``John F. Kennedy``), but not after a
  lower-case one (``say option A.`` ends a sentence);
* text without a letter (``1.`` opening a numbered list item), or a number of one or
  two digits right after a colon (``Steps: 1. Call us``: a list flattened onto one line,
  as the TTS text cleaner makes it); ``we have 2. Then`` does end a sentence.

Decisions look only backwards from the whitespace that confirms them, so feeding the
same text token by token or all at once yields the same pieces. Whitespace inside a
piece is collapsed to single spaces.

This is voicegraph's one sentence rule: :func:`split_sentences` applies it to a whole
text, and the TTS engines cut their input with it, so a sentence the aggregator sends
is never cut differently by the voice.
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["ABBREVIATIONS", "SentenceAggregator", "split_sentences"]

logger = logging.getLogger(__name__)

#: Lower-case words (without the dot) after which ``.`` does not end a sentence.
ABBREVIATIONS: Final = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "rev", "gen", "col", "lt",
        "sgt", "capt", "gov", "sen", "rep", "vs", "inc", "ltd", "co", "corp", "dept", "est",
        "approx", "appt", "apt", "ave", "blvd", "rd", "ext", "tel", "fig", "vol", "ref",
        "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    }
)  # fmt: skip

# Closing quotes and brackets (straight, curly, guillemets) may follow a terminator.
_CLOSERS: Final = "\"')]}\u2019\u201d\u00bb"
# A sentence end: a run of terminators, then optional closing quotes/brackets, at the end.
_SENTENCE_END: Final = re.compile(rf"[.!?…]+[{re.escape(_CLOSERS)}]*$")
_CLAUSE_END: Final = re.compile(rf"(?:[,;:]|\s[\u2014\u2013-])[{re.escape(_CLOSERS)}]*$")
_DOTTED: Final = re.compile(r"^(?:[a-z]{1,3}\.){2,}$")
_LIST_NUMBER: Final = re.compile(r"^\d{1,2}$")
_LEADING: Final = "\"'([{\u2018\u201c\u00ab"
_BOUNDARY_CHARS: Final = frozenset(".!?…,;:\u2014\u2013-" + _CLOSERS)


class SentenceAggregator:
    """Turns one LLM response's token stream into clauses and sentences for TTS.

    Args:
        first_clause_min_words: the first piece of a response may end at a clause
            boundary once it has this many words. Default 4: "Let me check that,"
            goes to TTS at once, while "Sure," or "Well, yes," is too short to sound
            natural alone and waits for its sentence. Use 0 to emit only sentences.

    Call :meth:`push` per token, :meth:`flush` at the end of the response (it also
    re-arms the early first clause for the next response) and :meth:`reset` on
    barge-in.
    """

    def __init__(self, *, first_clause_min_words: int = 4) -> None:
        if first_clause_min_words < 0:
            raise ValueError(
                f"first_clause_min_words must be >= 0, got {first_clause_min_words}"
            )
        self._min_words = first_clause_min_words
        self._buffer = ""
        self._scanned = 0  # characters of _buffer already examined for boundaries
        self._emitted = False  # a piece of this response has been emitted

    @property
    def pending(self) -> str:
        """Text received but not yet emitted (not normalised)."""
        return self._buffer

    def push(self, token: str) -> list[str]:
        """Add a token; return the pieces it completes (often none)."""
        if not token:
            return []
        self._buffer += token
        pieces: list[str] = []
        index = self._scanned
        while index < len(self._buffer):
            if self._buffer[index].isspace() and self._is_boundary(index):
                piece = _normalise(self._buffer[:index])
                self._buffer = self._buffer[index + 1 :]
                index = 0
                if piece:
                    pieces.append(piece)
                    self._emitted = True
                continue
            index += 1
        self._scanned = len(self._buffer)
        return pieces

    def flush(self) -> str | None:
        """End of the response: return the remaining text, or None if there is none."""
        rest = _normalise(self._buffer)
        self.reset()
        return rest or None

    def reset(self) -> None:
        """Drop pending text (barge-in) and re-arm the early first clause."""
        self._buffer = ""
        self._scanned = 0
        self._emitted = False

    def _is_boundary(self, index: int) -> bool:
        """Whether the whitespace at ``index`` ends the piece ``_buffer[:index]``."""
        buffer = self._buffer
        if buffer[index] == "\n":
            return _has_letter(buffer, index)
        # Cheap test first: most whitespace follows a plain word.
        if index == 0 or buffer[index - 1] not in _BOUNDARY_CHARS:
            return False
        segment = buffer[:index]
        if _SENTENCE_END.search(segment):
            return _has_letter(buffer, index) and not _ends_with_abbreviation(segment)
        if not self._emitted and self._min_words and _CLAUSE_END.search(segment):
            return len(segment.split()) >= self._min_words
        return False


def split_sentences(text: str) -> list[str]:
    """``text`` cut into sentences by the aggregator's rule (no early first clause).

    The same pieces as pushing ``text`` to a ``SentenceAggregator(first_clause_min_words=0)``
    and flushing it, which is how it is done: one rule, one implementation.
    """
    aggregator = SentenceAggregator(first_clause_min_words=0)
    pieces = aggregator.push(text)
    rest = aggregator.flush()
    return [*pieces, rest] if rest else pieces


def _has_letter(buffer: str, end: int) -> bool:
    return any(char.isalpha() for char in buffer[:end])


def _ends_with_abbreviation(segment: str) -> bool:
    """Whether the final ``.`` of ``segment`` belongs to an abbreviation or initial."""
    words = segment.split()
    last = words[-1].rstrip(_CLOSERS)
    if not last.endswith(".") or last.endswith(".."):
        return False  # ? ! … or an ellipsis: always a sentence end
    word = last.lstrip(_LEADING)
    stem = word[:-1]
    if stem.lower() in ABBREVIATIONS or _DOTTED.match(word.lower()):
        return True
    if len(words) > 1:
        previous = words[-2].lstrip(_LEADING)
        if len(stem) == 1 and stem.isupper():
            return previous[:1].isupper()
        if _LIST_NUMBER.match(stem):
            return previous.endswith(":")
    return False


def _normalise(text: str) -> str:
    return " ".join(text.split())
