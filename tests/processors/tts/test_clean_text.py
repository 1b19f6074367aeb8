"""clean_text and synthesis_units: what the TTS engines are actually asked to speak."""

from __future__ import annotations

import logging

import pytest

from processors.tts.engine import MAX_TEXT_CHARS, clean_text, synthesis_units


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello world.", "Hello world."),
        ("  Hello \n\n  world.\t ", "Hello world."),
        # SSML and HTML
        ('<speak>Hi <break time="500ms"/> there.</speak>', "Hi there."),
        ("<p>One</p><p>Two</p>", "One Two"),
        ("Call <say-as interpret-as='digits'>123</say-as> now", "Call 123 now"),
        ('<?xml version="1.0"?><speak>Hi</speak>', "Hi"),
        ("Hi <!-- not spoken --> there", "Hi there"),
        ("Tom &amp; Jerry &lt;3", "Tom & Jerry <3"),
        ("x < 5 and y > 3", "x < 5 and y > 3"),
        # Markdown
        ("**Bold** and *italic* and __under__", "Bold and italic and under"),
        ("See [our site](https://example.com) now", "See our site now"),
        ("![a cat](cat.png) sleeps", "a cat sleeps"),
        ("Run `pip install` first", "Run pip install first"),
        ("The snake_case name", "The snake case name"),
        ("# Title\nBody text.", "Title. Body text."),
        ("### Done!\nNext", "Done! Next"),
        ("Options:\n- first\n- second\n* third", "Options: first. second. third."),
        ("Steps:\n1. Call us\n2) Email us", "Steps: 1. Call us. 2) Email us."),
        ("> quoted line", "quoted line."),
        ("Hello **world** !", "Hello world!"),
        # Nothing speakable
        ("", ""),
        (" \n\t", ""),
        ("<speak></speak>", ""),
        ("** __ `` ##", ""),
    ],
)
def test_clean_text(text: str, expected: str) -> None:
    assert clean_text(text) == expected


def test_short_text_is_not_truncated(caplog: pytest.LogCaptureFixture) -> None:
    text = "word " * (MAX_TEXT_CHARS // 5 - 1)
    assert clean_text(text) == text.strip()
    assert caplog.records == []


def test_long_text_is_truncated_at_a_sentence_boundary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sentence = "Please hold while I look that up."  # 33 chars
    text = " ".join([sentence] * 1000)
    with caplog.at_level(logging.WARNING):
        cleaned = clean_text(text)
    assert len(cleaned) <= MAX_TEXT_CHARS
    assert cleaned.endswith("look that up.")
    assert len(cleaned) > MAX_TEXT_CHARS - len(sentence) - 1
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert f"TTS text of {len(text)} chars is over the {MAX_TEXT_CHARS}" in caplog.text


def test_long_text_without_sentences_is_truncated_at_a_word() -> None:
    cleaned = clean_text("claim " * 2000)
    assert len(cleaned) <= MAX_TEXT_CHARS
    assert cleaned.split(" ") == ["claim"] * len(cleaned.split(" "))


def test_long_text_without_spaces_is_cut_hard() -> None:
    assert clean_text("x" * 100_000) == "x" * MAX_TEXT_CHARS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("Hello.", ["Hello."]),
        ("Hi. How are you? Fine!", ["Hi.", "How are you?", "Fine!"]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("Dr. Smith and Mr. Jones, e.g. us. Next.", ["Dr. Smith and Mr. Jones, e.g. us.", "Next."]),
        ("1. Call us. 2. Email us.", ["1. Call us.", "2. Email us."]),
        ("Pi is 3.14 today. Yes.", ["Pi is 3.14 today.", "Yes."]),
        ("Wait… what?", ["Wait…", "what?"]),
        ("no end punctuation", ["no end punctuation"]),
    ],
)
def test_synthesis_units(text: str, expected: list[str]) -> None:
    assert synthesis_units(text) == expected


def test_overlong_sentences_are_split_at_clauses_then_words() -> None:
    clauses = ", ".join(["we checked the policy"] * 30) + "."
    pieces = synthesis_units(clauses, max_chars=100)
    assert all(len(p) <= 100 for p in pieces)
    assert all(p.endswith(",") for p in pieces[:-1])
    assert " ".join(pieces) == clauses

    words = " ".join(["policy"] * 100)
    pieces = synthesis_units(words, max_chars=50)
    assert all(len(p) <= 50 for p in pieces)
    assert " ".join(pieces) == words
