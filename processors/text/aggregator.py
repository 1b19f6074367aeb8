"""Sentence and clause aggregation: streamed LLM tokens in, speakable text out.

TTS sounds right only on whole phrases, yet every token held back delays the first
audio: the first audio of a reply is ready one synthesis of its first piece after that
piece is complete, so the first piece must be short whatever the first sentence's length.
:class:`SentenceAggregator` therefore emits the *first* piece of a response early:

* at a clause end (``,`` ``;`` ``:`` or a dash) once it has ``first_clause_min_words``
  words ("Let me check that for you,");
* else at a natural break after ``first_clause_min_words`` to ``first_unit_max_words``
  words: before a conjunction or preposition (:data:`BREAK_WORDS`: "I am sorry to hear |
  about your accident"), never after a function word ("because | of" is not a break)
  nor inside a range of numbers ("three | to five");
* else, when the sentence runs on past ``first_unit_max_words`` words with no break,
  after the last content word among its first ``first_unit_max_words``.

A word break is decided only once two more whole words follow it, so the rest of the
sentence never starts as a dangling single word (and a sentence that ends within those
two words is emitted whole). Every later piece ends at a sentence end (``.`` ``?`` ``!``
``…`` or a newline), where the voice's prosody needs the whole sentence, unless the
sentence runs on past :data:`LATER_UNIT_MAX_WORDS` words: then it is cut like a first
piece, at a clause end or a natural break in its last few words before that limit (one
enormous unpunctuated reply would otherwise be synthesised in one go while the line
falls silent after the first piece).

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

__all__ = ["ABBREVIATIONS", "BREAK_WORDS", "LATER_UNIT_MAX_WORDS", "SentenceAggregator", "ends_sentence",
           "split_sentences"]

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

#: Lower-case words a first piece may end *before*: conjunctions and prepositions, where a
#: speaker may pause. "of" is left out: it binds its phrase ("a lot of", "most of").
BREAK_WORDS: Final = frozenset(
    {
        "and", "but", "or", "so", "because", "since", "while", "although", "though", "unless",
        "until", "if", "when", "where", "whether", "that", "which", "who", "then", "about",
        "above", "across", "after", "against", "along", "around", "at", "before", "behind",
        "below", "between", "by", "during", "for", "from", "in", "into", "near", "on", "onto",
        "over", "through", "to", "toward", "towards", "under", "with", "within", "without",
    }
)  # fmt: skip

# Words a first piece must not end on: they announce what follows ("the | claim").
_FUNCTION_WORDS: Final = BREAK_WORDS | frozenset(
    {
        "a", "an", "the", "of", "my", "your", "our", "their", "his", "her", "its", "this",
        "these", "those", "some", "any", "no", "not", "very", "more", "most", "as", "than",
        "is", "are", "was", "were", "be", "been", "am", "will", "would", "can", "could",
        "shall", "should", "may", "might", "must", "do", "does", "did", "have", "has", "had",
    }
)  # fmt: skip
_WORD: Final = re.compile(r"\S+")
_NUMBER_WORDS: Final = frozenset(
    "one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty "
    "sixty hundred thousand".split()
)

# Closing quotes and brackets (straight, curly, guillemets) may follow a terminator.
_CLOSERS: Final = "\"')]}\u2019\u201d\u00bb"
# A sentence end: a run of terminators, then optional closing quotes/brackets, at the end.
_SENTENCE_END: Final = re.compile(rf"[.!?…]+[{re.escape(_CLOSERS)}]*$")
_CLAUSE_END: Final = re.compile(rf"(?:[,;:]|\s[\u2014\u2013-])[{re.escape(_CLOSERS)}]*$")
_DOTTED: Final = re.compile(r"^(?:[a-z]{1,3}\.){2,}$")
_LIST_NUMBER: Final = re.compile(r"^\d{1,2}$")
_LEADING: Final = "\"'([{\u2018\u201c\u00ab"
_BOUNDARY_CHARS: Final = frozenset(".!?…,;:\u2014\u2013-" + _CLOSERS)


#: A later piece longer than this (~12 s of speech, well under a second of Piper) is cut at
#: a clause end or a natural break, so one synthesis never holds the line for long.
LATER_UNIT_MAX_WORDS: Final = 40


class SentenceAggregator:
    """Turns one LLM response's token stream into clauses and sentences for TTS.

    Args:
        first_clause_min_words: the first piece of a response may end at a clause
            boundary or a word break once it has this many words. Default 4: "Let me
            check that," goes to TTS at once, while "Sure," or "Well, yes," is too short
            to sound natural alone and waits for its sentence. Use 0 to emit only
            sentences.
        first_unit_max_words: the longest first piece cut at a word break (no
            punctuation). Default 8: about 2.5 s of speech, one short synthesis (~100 ms
            of Piper on one core), and room for the break words of most openings. Use 0
            to cut the first piece at punctuation only (the behaviour before word breaks).

    Call :meth:`push` per token, :meth:`flush` at the end of the response (it also
    re-arms the early first clause for the next response) and :meth:`reset` on
    barge-in.
    """

    def __init__(self, *, first_clause_min_words: int = 4, first_unit_max_words: int = 8) -> None:
        if first_clause_min_words < 0:
            raise ValueError(
                f"first_clause_min_words must be >= 0, got {first_clause_min_words}"
            )
        if first_unit_max_words and first_unit_max_words < first_clause_min_words:
            raise ValueError(
                f"first_unit_max_words must be 0 or >= first_clause_min_words ({first_clause_min_words}), "
                f"got {first_unit_max_words}"
            )
        self._min_words = first_clause_min_words
        self._max_words = first_unit_max_words if first_clause_min_words else 0
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
            if self._buffer[index].isspace():
                cut = index if self._is_boundary(index) else self._word_break(index)
                if cut is not None:
                    piece = _normalise(self._buffer[:cut])
                    self._buffer = self._buffer[cut + 1 :]
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

    def copy(self) -> SentenceAggregator:
        """A new, empty aggregator with the same rule (to cut a text the same way)."""
        return SentenceAggregator(first_clause_min_words=self._min_words, first_unit_max_words=self._max_words)

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
        if self._min_words and _CLAUSE_END.search(segment):
            return len(segment.split()) >= self._window()[0]
        return False

    def _window(self) -> tuple[int, int]:
        """Fewest and most words of the piece being built when cut short of a sentence end."""
        if not self._emitted:
            return self._min_words, self._max_words
        return LATER_UNIT_MAX_WORDS - (self._max_words - self._min_words), LATER_UNIT_MAX_WORDS

    def _word_break(self, index: int) -> int | None:
        """Where a first piece with no clause punctuation ends, given the whole words of
        ``_buffer[:index]``: the index of the whitespace after its last word, or None."""
        if not self._max_words:
            return None
        least, most = self._window()
        words = list(_WORD.finditer(self._buffer, 0, index))
        count = len(words)
        if count < least + 2:
            return None
        # Words k and k+1 follow a break after word k (1-based), so nothing dangles.
        k = count - 2
        if k <= most:
            after, last = words[k].group(), words[k - 1].group()
            if after.lower() in BREAK_WORDS and _is_content(last) and not _is_range(last, after, words[k + 1].group()):
                return words[k - 1].end()
        if k != most:
            return None
        # A long run with no break word: end after its last content word.
        for word in reversed(words[least - 1 : most]):
            if _is_content(word.group()):
                return word.end()
        return words[most - 1].end()


def split_sentences(text: str) -> list[str]:
    """``text`` cut into sentences by the aggregator's rule (no early first clause).

    The same pieces as pushing ``text`` to a ``SentenceAggregator(first_clause_min_words=0)``
    and flushing it, which is how it is done: one rule, one implementation.
    """
    aggregator = SentenceAggregator(first_clause_min_words=0)
    pieces = aggregator.push(text)
    rest = aggregator.flush()
    return [*pieces, rest] if rest else pieces


def ends_sentence(text: str) -> bool:
    """Whether ``text`` (a piece) ends a sentence, rather than being cut inside one."""
    return bool(_SENTENCE_END.search(text.rstrip()))


def _is_content(word: str) -> bool:
    """Whether a first piece may end on ``word``: a plain word that announces nothing."""
    plain = word.replace("'", "").replace("\u2019", "")
    return plain.isalpha() and word.lower() not in _FUNCTION_WORDS


def _is_range(first: str, joiner: str, second: str) -> bool:
    """Whether the three words are a range or a choice of numbers ("three to five")."""
    return joiner.lower() in ("to", "or", "and") and _is_number(first) and _is_number(second.rstrip(".,;:!?"))


def _is_number(word: str) -> bool:
    return word.isdigit() or word.lower() in _NUMBER_WORDS


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
