"""The text-to-speech engine interface, and the text preparation every engine shares.

Engines are synchronous generators: the async TTS processor pulls chunks in a bounded
executor and stops early (barge-in) by calling ``close()`` on the generator, so an
engine must do its work sentence by sentence and never hold a lock across a ``yield``.

Text from an LLM arrives with markup meant for screens (markdown, HTML, SSML);
:func:`clean_text` turns it into plain speakable text, and :func:`synthesis_units` cuts
it into the units an engine synthesises one at a time: sentences, by the same rule the
sentence aggregator uses (``processors.text.aggregator``), over-long ones cut further.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Generator
from typing import Protocol, runtime_checkable

from processors.text.aggregator import SentenceAggregator, split_sentences

__all__ = ["MAX_TEXT_CHARS", "TTSEngine", "clean_text", "synthesis_units"]

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 4000
"""Longest text one ``synthesize`` call speaks (about 4 minutes of speech); the rest is
cut at a sentence or word boundary, so a runaway LLM answer cannot hold a call hostage."""

_MAX_SENTENCE_CHARS = 300
"""Longer sentences are cut at a clause or word boundary so no chunk takes too long."""


@runtime_checkable
class TTSEngine(Protocol):
    """A loaded voice that turns text into PCM16 mono audio at ``sample_rate``."""

    name: str
    """Short engine name for logs and metrics, for example ``"piper"``."""

    sample_rate: int
    """Rate of the audio it produces, in Hz (the voice's native rate)."""

    def synthesize(self, text: str) -> Generator[bytes, None, None]:
        """Yield PCM16 mono chunks for ``text``, the first one as early as possible.

        Typed as a ``Generator`` (not just an ``Iterator``) because callers rely on
        ``close()``. The text goes through :func:`clean_text` first; text that is empty afterwards
        yields nothing. Calling ``close()`` on the generator stops synthesis at the next
        chunk boundary and releases everything it holds.
        """
        ...


# Tags: <b>, </b>, <break time="1s"/>, <?xml ...?>, <!-- ... -->. A "<" followed by a
# space or digit ("x < 5") is a comparison, not a tag, and stays.
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TAG = re.compile(r"</?[A-Za-z?!][^<>]*>")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
# A heading or list item: its marker (kept when it is a number) and its text.
_HEADING_OR_ITEM = re.compile(r"^[ \t]*(?:#{1,6}|[-*+>]|(\d{1,3}[.)]))[ \t]+(.*?)[ \t]*$", re.M)
_EMPHASIS = re.compile(r"[*_`#~]+")
_INNER_UNDERSCORE = re.compile(r"(?<=[^\W_])_+(?=[^\W_])")  # snake_case -> snake case
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:])")
_TERMINAL = ".!?;:,"

def clean_text(text: str) -> str:
    """Plain speakable text: markup removed, whitespace collapsed, length capped.

    Strips SSML/HTML tags and comments, decodes entities, keeps the text of markdown
    links and images (``[x](y)`` becomes ``x``), drops ``* _ # ` ~`` emphasis marks, and
    reads ``snake_case`` as two words, ends headings and list items with a full stop so they are spoken as phrases. Text
    longer than :data:`MAX_TEXT_CHARS` is truncated at a sentence (else word) boundary
    with a logged warning.
    """
    text = _COMMENT.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _HEADING_OR_ITEM.sub(_end_phrase, text)
    text = _INNER_UNDERSCORE.sub(" ", text)
    text = _EMPHASIS.sub("", text)
    text = _SPACE.sub(" ", text).strip()
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    if len(text) > MAX_TEXT_CHARS:
        text = _truncate(text, MAX_TEXT_CHARS)
    return text


def synthesis_units(text: str, max_chars: int = _MAX_SENTENCE_CHARS) -> list[str]:
    """Cut clean text into sentences, and over-long sentences into clauses.

    Sentences are those of :func:`processors.text.aggregator.split_sentences`. A piece
    longer than ``max_chars`` is cut at its last ``, ; :`` (else its last space) before
    the limit, so no single synthesis step takes too long.
    """
    out: list[str] = []
    for piece in split_sentences(text):
        while len(piece) > max_chars:
            cut = _cut_point(piece, max_chars)
            out.append(piece[:cut].strip())
            piece = piece[cut:].strip()
        if piece:
            out.append(piece)
    return out


def _end_phrase(match: re.Match[str]) -> str:
    number, body = match.group(1), match.group(2)
    if body and body[-1] not in _TERMINAL:
        body += "."
    return f"{number} {body}" if number else body


def _cut_point(text: str, limit: int) -> int:
    """Index just after the best clause (else word) boundary at or before ``limit``."""
    window = text[:limit]
    clause = max(window.rfind(p) for p in ",;:")
    if clause > limit // 3:
        return clause + 1
    space = window.rfind(" ")
    return space if space > 0 else limit


def _truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` chars at a sentence, else word, boundary."""
    window = text[: limit + 1]
    # The sentences the window confirms (each followed by whitespace inside it).
    sentences = SentenceAggregator(first_clause_min_words=0).push(window)
    cut = len(" ".join(sentences))  # clean text has single spaces, so this is a prefix
    if cut <= limit // 2:
        space = window.rfind(" ")
        cut = space if space > 0 else limit
    logger.warning(
        "TTS text of %d chars is over the %d char limit; speaking the first %d",
        len(text),
        limit,
        cut,
    )
    return text[:cut].rstrip()
