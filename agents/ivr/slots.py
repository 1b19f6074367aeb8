"""Slot types: what a flow can ask for, how a caller's answer becomes a value, how a value is said back.

Each type parses one answer — the recogniser's text (raw and :func:`normalize`-d) and any
keypad digits — into a JSON-friendly value, or ``None`` when the answer is not one (the
flow then re-prompts). Values are canonical so tools and stored records see one form
whatever was said:

=========  ==============================================  ==========================
type       accepts                                          value
=========  ==============================================  ==========================
text       any non-empty answer, as said                   ``"I hit a tree"``
name       ``"this is Jane Doe"``, ``"my name is ..."``      ``"Jane Doe"``
date       ``"March third nineteen eighty"``, ``"3/3/1980"``  ``"1980-03-03"`` (ISO)
           ``"1980-03-03"``, ``"the 3rd of March 1980"``,
           ``"yesterday"``, ``"next Tuesday"``
number     ``"forty two"``, ``"4 2"`` -> 42, keypad digits    ``42``
digits     ``"four five six"``, keypad digits                ``"456"``
policy_id  ``"POL-12345"``, ``"p o l one two three ..."``    ``"POL-12345"``
yes_no     yes/yeah/correct/right..., no/not/wrong...; 1/2  ``True`` / ``False``
choice     one of ``choices`` (value -> synonyms); keypad    the value
           digit n picks the n-th
=========  ==============================================  ==========================

Options (checked by :func:`agents.ivr.flow.validate_flow`): ``date``: ``past`` / ``future``
(the date must not be after / before today; a year left out is then the nearest such);
``number``: ``min`` / ``max``; ``digits``: ``length``; ``policy_id``: ``prefix`` (letters
added when only digits are said) and ``digits`` (how many); ``choice``: ``choices``;
``text``: ``pattern`` (a regular expression the normalised answer must contain).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from .normalize import normalize, squash

__all__ = ["SLOT_TYPES", "Answer", "SlotType", "say_date", "spell"]


@dataclass(frozen=True, slots=True)
class Answer:
    """One caller answer as the parsers see it."""

    raw: str  # as recognised
    norm: str  # :func:`normalize` of raw
    dtmf: str  # keypad digits pressed ("" if none)
    today: date


Parser = Callable[[Answer, Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class SlotType:
    """A slot type: its parser and the options it takes (name -> a check returning an error or "")."""

    name: str
    parse: Parser
    options: Mapping[str, Callable[[Any], str]]


# -- checks of options ---------------------------------------------------------------------------------------

def _bool(value: Any) -> str:
    return "" if isinstance(value, bool) else "must be true or false"


def _int(value: Any) -> str:
    return "" if isinstance(value, int) and not isinstance(value, bool) else "must be a whole number"


def _positive(value: Any) -> str:
    return _int(value) or ("" if value > 0 else "must be at least 1")


def _letters(value: Any) -> str:
    return "" if isinstance(value, str) and value.isalpha() else "must be letters (like POL)"


def _regex(value: Any) -> str:
    if not isinstance(value, str):
        return "must be a regular expression (text)"
    try:
        re.compile(value)
    except re.error as exc:
        return f"is not a valid regular expression: {exc}"
    return ""


def _choices(value: Any) -> str:
    if not isinstance(value, Mapping) or not value:
        return "must map each value to the words that choose it"
    for key, words in value.items():
        if not isinstance(key, str) or not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            return f"{key!r} must map to a list of words"
    return ""


# -- parsers ---------------------------------------------------------------------------------------------------

def _text(answer: Answer, options: Mapping[str, Any]) -> Any:
    text = squash(answer.raw)
    if not text:
        return None
    pattern = options.get("pattern")
    if pattern is not None:
        match = re.search(pattern, answer.norm)
        if match is None:
            return None
        return match.group(1) if match.groups() else match.group(0)
    return text


_NAME_LEADS = re.compile(r"^(?:(?:hello|hi|hey|yes|yeah|ok|okay|sure|um|uh)\b[\s,.!]*)*"
                         r"(?:my (?:full )?name is|my name's|this is|it's|it is|i am|i'm|name is|the name is)?\s*",
                         re.IGNORECASE)
_NAME_WORD = re.compile(r"^[a-z][a-z'-]*$")


def _name(answer: Answer, options: Mapping[str, Any]) -> Any:
    said = _NAME_LEADS.sub("", answer.raw.strip(), count=1)
    words = [w.strip(".,!?;:\"") for w in said.split()]
    words = [w for w in words if w]
    if not 1 <= len(words) <= 5 or not all(_NAME_WORD.match(w.lower()) for w in words):
        return None
    # a recogniser that writes names in lower case gets them capitalised; "McDonald" stays as written
    return " ".join(w if w != w.lower() else w[:1].upper() + w[1:] for w in words)


_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_MONTHS["sept"] = 9
_WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}
_ISO = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_SLASHED = re.compile(r"\b(\d{1,2})[/.-](\d{1,2})[/.-](\d{2}|\d{4})\b")
_AGO = re.compile(r"\b(\d+) days? ago\b")


def _date(answer: Answer, options: Mapping[str, Any]) -> Any:
    today = answer.today
    found = _date_numeric(answer.raw, today) or _date_spoken(answer.norm, today, options)
    if found is None:
        return None
    if (options.get("past") and found > today) or (options.get("future") and found < today):
        return None
    return found.isoformat()


def _date_numeric(raw: str, today: date) -> date | None:
    match = _ISO.search(raw)
    if match:
        return _make(int(match[1]), int(match[2]), int(match[3]))
    match = _SLASHED.search(raw)
    if match:  # month/day/year, as written in the US
        return _make(_full_year(match[3], today), int(match[1]), int(match[2]))
    return None


def _full_year(text: str, today: date) -> int:
    year = int(text)
    if len(text) == 2:  # '80 -> 1980, '24 -> 2024: the century that does not put it in the future
        year += 2000 if year <= today.year % 100 else 1900
    return year


def _make(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _date_spoken(norm: str, today: date, options: Mapping[str, Any]) -> date | None:
    words = norm.split()
    text = " " + norm + " "
    if " day before yesterday " in text:
        return today - timedelta(days=2)
    if " yesterday " in text:
        return today - timedelta(days=1)
    if " tomorrow " in text:
        return today + timedelta(days=1)
    if " today " in text:
        return today
    ago = _AGO.search(norm)
    if ago:
        return today - timedelta(days=int(ago[1]))
    month_at = next((i for i, w in enumerate(words) if w in _MONTHS), None)
    if month_at is None:
        weekday = next((w for w in words if w in _WEEKDAYS), None)
        if weekday is None:
            return None
        step = -1 if options.get("past") or " last " in text else 1
        day = today + timedelta(days=step)
        while day.weekday() != _WEEKDAYS[weekday]:
            day += timedelta(days=step)
        return day
    month = _MONTHS[words[month_at]]
    before = [w for w in words[:month_at] if w.isdigit()]
    after = [w for w in words[month_at + 1:] if w.isdigit()]
    if before and int(before[-1]) <= 31:  # "the 3 of march 1980"
        day_text, year_parts = before[-1], after
    elif after:  # "march 3 19 80"
        day_text, year_parts = after[0], after[1:]
    else:
        return None
    day_number = int(day_text)
    year = _year(year_parts, today)
    if year is None:
        return None
    if year == 0:  # no year said: the nearest one the options allow
        year = today.year
        candidate = _make(year, month, day_number)
        if candidate is None:
            return None
        if options.get("past") and candidate > today:
            year -= 1
        elif options.get("future") and candidate < today:
            year += 1
    return _make(year, month, day_number)


def _year(parts: list[str], today: date) -> int | None:
    """The year said in ``parts`` (0: none said; None: not a year)."""
    if not parts:
        return 0
    first = parts[0]
    if len(first) == 4:
        return int(first)
    if len(parts) >= 2 and len(first) == 2 and len(parts[1]) <= 2:  # "19 80", "20 24", "19 05"
        return int(first) * 100 + int(parts[1])
    if len(first) == 2:
        return _full_year(first, today)
    return None


def _number(answer: Answer, options: Mapping[str, Any]) -> Any:
    digits = [w for w in answer.norm.split() if w.isdigit()]
    if answer.dtmf:
        value = int(answer.dtmf) if answer.dtmf.isdigit() else None
    elif len(digits) == 1:
        value = int(digits[0])
    elif digits and all(len(d) == 1 for d in digits):  # "4 2": said digit by digit
        value = int("".join(digits))
    else:
        value = None
    if value is None:
        return None
    if ("min" in options and value < options["min"]) or ("max" in options and value > options["max"]):
        return None
    return value


def _digits(answer: Answer, options: Mapping[str, Any]) -> Any:
    text = answer.dtmf.rstrip("#") if answer.dtmf else "".join(w for w in answer.norm.split() if w.isdigit())
    if not text.isdigit():
        return None
    length = options.get("length")
    return text if length is None or len(text) == length else None


_FILLER = frozenset({"dash", "hyphen", "minus", "number", "is", "my", "policy", "member", "id", "it's", "its",
                     "the", "it", "um", "uh", "and", "a", "an"})


def _policy_id(answer: Answer, options: Mapping[str, Any]) -> Any:
    prefix = str(options.get("prefix", "")).upper()
    count = options.get("digits")
    words = [part for w in answer.norm.split() if w not in _FILLER for part in re.findall(r"[a-z]+|\d+", w)]
    first_digit = next((i for i, w in enumerate(words) if w.isdigit()), None)
    if first_digit is None:
        digits, letters = answer.dtmf.rstrip("#"), ""
    else:
        end = first_digit
        while end < len(words) and words[end].isdigit():
            end += 1
        digits = "".join(words[first_digit:end])
        start = first_digit
        while start > 0 and len(words[start - 1]) == 1 and words[start - 1].isalpha():  # spelled: "p o l"
            start -= 1
        if start == first_digit and start > 0 and 2 <= len(words[start - 1]) <= 4:  # said: "pol"
            start -= 1
        letters = "".join(words[start:first_digit]).upper()
    if not digits.isdigit() or (count is not None and len(digits) != count) or not 4 <= len(digits) <= 12:
        return None
    if prefix and letters not in ("", prefix):
        return None
    letters = letters or prefix
    if not 2 <= len(letters) <= 4:
        return None
    return f"{letters}-{digits}"


_YES = frozenset({"yes", "yeah", "yep", "yup", "correct", "right", "sure", "affirmative", "absolutely", "exactly",
                  "ok", "okay", "true", "indeed", "certainly"})
_NO = frozenset({"no", "nope", "nah", "not", "wrong", "incorrect", "negative", "false", "isn't", "don't", "didn't",
                 "wasn't", "none", "nobody", "never"})


def _yes_no(answer: Answer, options: Mapping[str, Any]) -> Any:
    if answer.dtmf in ("1", "2"):
        return answer.dtmf == "1"
    for word in answer.norm.split():  # the first word with a polarity decides: "that's not right" is a no
        if word in _YES:
            return True
        if word in _NO:
            return False
    return None


def _choice(answer: Answer, options: Mapping[str, Any]) -> Any:
    choices: Mapping[str, list[str]] = options.get("choices", {})
    if answer.dtmf.isdigit() and 1 <= int(answer.dtmf) <= len(choices):
        return list(choices)[int(answer.dtmf) - 1]
    text = " " + answer.norm + " "
    for value, words in choices.items():
        if any(f" {normalize(w)} " in text for w in [value, *words]):
            return value
    return None


SLOT_TYPES: Mapping[str, SlotType] = {t.name: t for t in (
    SlotType("text", _text, {"pattern": _regex}),
    SlotType("name", _name, {}),
    SlotType("date", _date, {"past": _bool, "future": _bool}),
    SlotType("number", _number, {"min": _int, "max": _int}),
    SlotType("digits", _digits, {"length": _positive}),
    SlotType("policy_id", _policy_id, {"prefix": _letters, "digits": _positive}),
    SlotType("yes_no", _yes_no, {}),
    SlotType("choice", _choice, {"choices": _choices}),
)}


# -- saying values back ----------------------------------------------------------------------------------------

def say_date(value: Any) -> str:
    """An ISO date as spoken (``"1980-03-03"`` -> ``"March 3, 1980"``); anything else as it is."""
    try:
        day = date.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return f"{calendar.month_name[day.month]} {day.day}, {day.year}"


def spell(value: Any) -> str:
    """An identifier read character by character (``"POL-12345"`` -> ``"P O L, 1 2 3 4 5"``)."""
    groups = [" ".join(part) for part in re.split(r"[^A-Za-z0-9]+", str(value)) if part]
    return ", ".join(groups)
