"""Text normalisation of recogniser output, so that flows match what was meant, not how it was spelled.

Speech recognisers write the same words many ways: ``"Three."``, ``"3"``, ``"three"``;
``"four five six"`` for 456; ``"P.O.L. dash one two"``. :func:`normalize` maps all of
them to one form: lower case, punctuation gone (apostrophes kept inside words), and
numbers written as digits. Intent phrases are normalised the same way, so a flow's
``"press one"`` matches a caller's ``"Press 1."``.

Number words become digits by these rules (checked in ``tests/agents/ivr``):

* cardinals compose as spoken: ``"twenty three"`` -> ``23``, ``"one hundred and five"`` ->
  ``105``, ``"twelve thousand three hundred"`` -> ``12300``;
* a run of single digits is one number read digit by digit: ``"four five six"`` ->
  ``456``, ``"oh five"`` -> ``05`` (``"oh"`` is a zero only next to another number);
* ordinals are numbers: ``"third"`` -> ``3``, ``"twenty first"`` -> ``21``,
  ``"3rd"`` -> ``3``;
* a pair that does not compose stays two numbers: ``"nineteen eighty"`` -> ``19 80``
  (the date parser reads such a pair as a year).

Pure and allocation-light: a few microseconds for a sentence.
"""

from __future__ import annotations

import re

__all__ = ["normalize", "number_tokens", "squash", "tokens"]

_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9}
_TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
          "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_ORDINAL_UNITS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
                  "eighth": 8, "ninth": 9}
_ORDINAL_TEENS = {"tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
                  "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19}
_ORDINAL_TENS = {"twentieth": 20, "thirtieth": 30}
_SCALES = {"hundred": 100, "thousand": 1000}

_PUNCT = re.compile(r"[^\w\s']|_")
_ORDINAL_DIGITS = re.compile(r"^(\d+)(?:st|nd|rd|th)$")
_SPACES = re.compile(r"\s+")


def tokens(text: str) -> list[str]:
    """``text`` lower-cased and split into words, punctuation removed (``"it's"`` stays one word)."""
    text = _PUNCT.sub(" ", text.lower().replace("\u2019", "'"))
    return [w.strip("'") for w in text.split() if w.strip("'")]


def normalize(text: str) -> str:
    """``text`` in the one form flows match against (see the module docstring)."""
    return " ".join(number_tokens(tokens(text)))


def number_tokens(words: list[str]) -> list[str]:
    """``words`` with each spoken number replaced by its digits (see the module docstring)."""
    out: list[str] = []
    i, n = 0, len(words)
    while i < n:
        word = words[i]
        ordinal = _ORDINAL_DIGITS.match(word)
        if ordinal or word.isdigit():
            out.append(ordinal.group(1) if ordinal else word)
            i += 1
            continue
        if _is_digit_word(words, i):
            j = i
            digits = []
            while j < n and _is_digit_word(words, j) and (j == i or _single(words[j])):
                digits.append(str(_UNITS.get(words[j], 0)) if words[j] != "oh" else "0")
                j += 1
            if len(digits) > 1 and all(_single(w) for w in words[i:j]):
                out.append("".join(digits))
                i = j
                continue
        value, used = _cardinal(words, i)
        if used:
            out.append(str(value))
            i += used
        else:
            out.append(word)
            i += 1
    return out


def _single(word: str) -> bool:
    return word in _UNITS or word == "oh"


def _is_digit_word(words: list[str], i: int) -> bool:
    """A single-digit word; ``"oh"`` only where a number is next to it (``"nineteen oh five"``)."""
    word = words[i]
    if word in _UNITS:
        return True
    if word != "oh":
        return False
    before = i > 0 and (_is_number_word(words[i - 1]) or words[i - 1].isdigit())
    after = i + 1 < len(words) and (_is_number_word(words[i + 1]) or words[i + 1].isdigit())
    return bool(before and after) or bool(after and i + 1 < len(words) and words[i + 1] in _UNITS)


def _is_number_word(word: str) -> bool:
    return word in _UNITS or word in _TEENS or word in _TENS or word in _SCALES


def _cardinal(words: list[str], i: int) -> tuple[int, int]:
    """The number spoken from ``words[i]`` on and how many words it took (0: none)."""
    total = 0  # thousands already closed
    current = 0  # below a thousand
    used = 0
    last = ""  # "unit" | "teen" | "tens" | "hundred" | "thousand"
    n = len(words)
    while i + used < n:
        word = words[i + used]
        if word == "and" and last in ("hundred", "thousand") and i + used + 1 < n and (
                _is_number_word(words[i + used + 1]) or words[i + used + 1] in _ORDINAL_UNITS):
            used += 1
            continue
        if word in _UNITS or word in _ORDINAL_UNITS:
            if last in ("unit", "teen"):
                break
            current += _UNITS.get(word, _ORDINAL_UNITS.get(word, 0))
            last = "unit"
            used += 1
            if word in _ORDINAL_UNITS:
                break
        elif word in _TEENS or word in _ORDINAL_TEENS:
            if last in ("unit", "teen", "tens"):
                break
            current += _TEENS.get(word, _ORDINAL_TEENS.get(word, 0))
            last = "teen"
            used += 1
            if word in _ORDINAL_TEENS:
                break
        elif word in _TENS or word in _ORDINAL_TENS:
            if last in ("unit", "teen", "tens"):
                break
            current += _TENS.get(word, _ORDINAL_TENS.get(word, 0))
            last = "tens"
            used += 1
            if word in _ORDINAL_TENS:
                break
        elif word == "hundred":
            if last not in ("unit", "teen", "tens") or current >= 100:
                break
            current *= 100
            last = "hundred"
            used += 1
        elif word == "thousand":
            if last in ("", "thousand") or total:
                break
            total = (current or 1) * 1000
            current = 0
            last = "thousand"
            used += 1
        else:
            break
    if used and words[i + used - 1] == "and":
        used -= 1
    return total + current, used


def squash(text: str) -> str:
    """``text`` with runs of whitespace made one space and the ends trimmed."""
    return _SPACES.sub(" ", text).strip()
