"""Word error rate, for tests, benchmarks and STT engine comparisons.

Both texts are normalised first so that style differences between engines are not
counted as errors: case, punctuation and digits ("456" is read digit by digit as "four
five six", which is how callers say policy and phone numbers).
"""

from __future__ import annotations

import re

__all__ = ["normalize", "wer", "word_errors"]

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Keep letters, digits and in-word apostrophes ("don't"); everything else separates words.
_NON_WORD = re.compile(r"[^a-z0-9']+")


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation, each digit spelled out as a word."""
    words: list[str] = []
    for token in _NON_WORD.split(text.lower()):
        token = token.strip("'")
        if not token:
            continue
        if token.isdigit():
            words.extend(_DIGITS[int(d)] for d in token)
        else:
            words.append(token)
    return words


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count), after normalising."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    # Levenshtein distance over words, one row at a time.
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i]
        for j, hyp_word in enumerate(hyp, start=1):
            current.append(
                min(
                    previous[j] + 1,  # deletion
                    current[j - 1] + 1,  # insertion
                    previous[j - 1] + (ref_word != hyp_word),  # substitution or match
                )
            )
        previous = current
    return previous[-1], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` (0.0 is perfect; may exceed 1).

    An empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise.
    """
    errors, words = word_errors(reference, hypothesis)
    if words == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / words
