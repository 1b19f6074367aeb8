"""Normalisation of recogniser output and the slot types' parsers, as tables of cases."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from agents.ivr import SLOT_TYPES, normalize
from agents.ivr.slots import Answer, say_date, spell

TODAY = date(2026, 11, 26)  # a Thursday


@pytest.mark.parametrize(("said", "normal"), [
    ("March third nineteen eighty", "march 3 19 80"),
    ("four five six", "456"),
    ("P.O.L. dash one two three four five", "p o l dash 12345"),
    ("one hundred and five", "105"),
    ("twelve thousand three hundred", "12300"),
    ("nineteen oh five", "19 05"),
    ("twenty twenty four", "20 24"),
    ("two thousand five", "2005"),
    ("twenty first of June", "21 of june"),
    ("It's the 3rd.", "it's the 3"),
    ("Press 1!", "press 1"),
    ("Oh, I see", "oh i see"),
    ("  Hello,   WORLD ", "hello world"),
    ("I\u2019m fine", "i'm fine"),
    ("three twenty", "3 20"),
    ("007", "007"),
])
def test_normalize(said: str, normal: str) -> None:
    assert normalize(said) == normal


def parse(type_name: str, said: str, dtmf: str = "", **options: Any) -> Any:
    return SLOT_TYPES[type_name].parse(Answer(said, normalize(said), dtmf, TODAY), options)


@pytest.mark.parametrize(("said", "options", "value"), [
    ("March third nineteen eighty", {}, "1980-03-03"),
    ("march 3rd, 1980", {}, "1980-03-03"),
    ("the third of March 1980", {}, "1980-03-03"),
    ("3/3/1980", {}, "1980-03-03"),
    ("3/3/80", {}, "1980-03-03"),
    ("1980-03-03", {}, "1980-03-03"),
    ("March third eighty", {}, "1980-03-03"),
    ("nineteen oh five, January second", {}, None),  # the year before the month is not read
    ("January second nineteen oh five", {}, "1905-01-02"),
    ("February thirtieth 1980", {}, None),
    ("yesterday", {}, "2026-11-25"),
    ("the day before yesterday", {}, "2026-11-24"),
    ("today", {}, "2026-11-26"),
    ("tomorrow", {"future": True}, "2026-11-27"),
    ("three days ago", {}, "2026-11-23"),
    ("last Monday", {}, "2026-11-23"),
    ("next Tuesday", {"future": True}, "2026-12-01"),
    ("on Thursday", {"future": True}, "2026-12-03"),
    ("December 1st", {"past": True}, "2025-12-01"),
    ("December 1st", {"future": True}, "2026-12-01"),
    ("tomorrow", {"past": True}, None),
    ("yesterday", {"future": True}, None),
    ("banana", {}, None),
])
def test_date(said: str, options: dict[str, Any], value: Any) -> None:
    assert parse("date", said, **options) == value


@pytest.mark.parametrize(("type_name", "said", "dtmf", "options", "value"), [
    ("number", "forty two", "", {}, 42),
    ("number", "four two", "", {}, 42),
    ("number", "", "17", {}, 17),
    ("number", "ninety", "", {"max": 50}, None),
    ("number", "twenty three and forty", "", {}, None),
    ("digits", "four five six", "", {}, "456"),
    ("digits", "", "4255550100#", {"length": 10}, "4255550100"),
    ("digits", "four five six", "", {"length": 4}, None),
    ("policy_id", "POL-12345", "", {}, "POL-12345"),
    ("policy_id", "p o l one two three four five", "", {}, "POL-12345"),
    ("policy_id", "My policy number is P.O.L. dash 1 2 3 4 5", "", {}, "POL-12345"),
    ("policy_id", "pol12345", "", {}, "POL-12345"),
    ("policy_id", "M E M two four six eight zero", "", {}, "MEM-24680"),
    ("policy_id", "one two three four five", "", {"prefix": "POL"}, "POL-12345"),
    ("policy_id", "", "12345#", {"prefix": "POL", "digits": 5}, "POL-12345"),
    ("policy_id", "M E M two four six eight zero", "", {"prefix": "POL"}, None),
    ("policy_id", "one two three", "", {"prefix": "POL"}, None),
    ("policy_id", "twelve", "", {}, None),
    ("yes_no", "Yes, that's right.", "", {}, True),
    ("yes_no", "that's not right", "", {}, False),
    ("yes_no", "nope", "", {}, False),
    ("yes_no", "", "1", {}, True),
    ("yes_no", "", "2", {}, False),
    ("yes_no", "maybe", "", {}, None),
    ("name", "Hello, this is Jane Doe.", "", {}, "Jane Doe"),
    ("name", "my name is john o'brien", "", {}, "John O'brien"),
    ("name", "It's Mary-Kate McDonald", "", {}, "Mary-Kate McDonald"),
    ("name", "1 2 3", "", {}, None),
    ("text", "  I hit a tree.  ", "", {}, "I hit a tree."),
    ("text", "   ", "", {}, None),
    ("text", "zip code nine eight one oh one", "", {"pattern": r"\b(\d{5})\b"}, "98101"),
    ("choice", "it's about my divorce", "", {"choices": {"family": ["divorce"], "estate": ["will"]}}, "family"),
    ("choice", "", "2", {"choices": {"family": ["divorce"], "estate": ["will"]}}, "estate"),
    ("choice", "something else", "", {"choices": {"family": ["divorce"]}}, None),
])
def test_slot_types(type_name: str, said: str, dtmf: str, options: dict[str, Any], value: Any) -> None:
    assert parse(type_name, said, dtmf, **options) == value


def test_values_are_said_back() -> None:
    assert say_date("1980-03-03") == "March 3, 1980"
    assert say_date("not a date") == "not a date"
    assert spell("POL-12345") == "P O L, 1 2 3 4 5"
    assert spell("4255550100") == "4 2 5 5 5 5 0 1 0 0"
