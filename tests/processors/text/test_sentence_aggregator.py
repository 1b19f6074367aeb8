"""SentenceAggregator: table-driven cases, each checked under many tokenisations."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable

import pytest

from processors.text.aggregator import SentenceAggregator, split_sentences
from processors.tts.engine import synthesis_units

# (text, pieces expected from push() and flush() together, in order)
CASES: list[tuple[str, list[str]]] = [
    (
        "Let me check that for you, one moment. Your balance is $100,000.50 today.",
        ["Let me check that for you,", "one moment.", "Your balance is $100,000.50 today."],
    ),
    # A first clause shorter than 4 words waits for its sentence.
    ("Sure, I can help. What is your name?", ["Sure, I can help.", "What is your name?"]),
    # Only the first clause goes early; later commas do not split.
    (
        "I found your order, it shipped today. It will arrive Monday, or Tuesday at the latest.",
        ["I found your order,", "it shipped today.", "It will arrive Monday, or Tuesday at the latest."],
    ),
    (
        "Dr. Smith will see you at 10:30 a.m. tomorrow. Bring your ID.",
        ["Dr. Smith will see you at 10:30 a.m. tomorrow.", "Bring your ID."],
    ),
    ("Pi is 3.14, roughly. Done!", ["Pi is 3.14, roughly.", "Done!"]),
    (
        "We ship to the U.S. and Canada, e.g. Toronto. Thanks.",
        ["We ship to the U.S. and Canada,", "e.g. Toronto.", "Thanks."],
    ),
    (
        "Go to https://example.com/help?x=1.5 now. Or write to help.desk@example.co.uk today.",
        ["Go to https://example.com/help?x=1.5 now.", "Or write to help.desk@example.co.uk today."],
    ),
    ("Wait… what?! Really? Yes!", ["Wait…", "what?!", "Really?", "Yes!"]),
    ("Hmm... let me think. OK.", ["Hmm...", "let me think.", "OK."]),
    (
        "Here are your options:\n1. Pay a bill\n2. Talk to an agent\n",
        ["Here are your options:", "1. Pay a bill", "2. Talk to an agent"],
    ),
    ("  Hello   there.\t\tHow  are   you?  ", ["Hello there.", "How are you?"]),
    ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ("(See Fig. 2.) Then continue.", ["(See Fig. 2.)", "Then continue."]),
    ("Say option A. Then John F. Kennedy spoke.", ["Say option A.", "Then John F. Kennedy spoke."]),
    ("Bring apples, pears, etc. Then pay.", ["Bring apples, pears, etc.", "Then pay."]),
    ("In 2020, we grew; revenue hit 5,000,000 units.", ["In 2020, we grew;", "revenue hit 5,000,000 units."]),
    (
        "I checked your account — everything looks fine.",
        ["I checked your account —", "everything looks fine."],
    ),
    ("Call ext. 42 or Mr. Lee at 555-0100.", ["Call ext. 42 or Mr. Lee at 555-0100."]),
    ("No trailing punctuation here", ["No trailing punctuation here"]),
    ("", []),
    ("   \n\n  ", []),
]


def whole(text: str) -> list[str]:
    return [text]


def characters(text: str) -> list[str]:
    return list(text)


def llm_like(text: str) -> list[str]:
    """Split like BPE tokens: words with their leading space, punctuation apart."""
    return re.findall(r"\s*\w+|\s*[^\w\s]|\s+", text)


def random_cuts(seed: int) -> Callable[[str], list[str]]:
    def split(text: str) -> list[str]:
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(text)), k=len(text) // 3)) if len(text) > 1 else []
        return [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]

    return split


TOKENISERS: list[Callable[[str], list[str]]] = [
    whole,
    characters,
    llm_like,
    random_cuts(1),
    random_cuts(2),
    random_cuts(3),
]


def run(tokens: list[str], aggregator: SentenceAggregator | None = None) -> list[str]:
    # The sentence rules' cases: the first piece is cut at punctuation only (word breaks
    # have their own cases in test_first_unit.py).
    aggregator = aggregator or SentenceAggregator(first_unit_max_words=0)
    pieces: list[str] = []
    for token in tokens:
        pieces += aggregator.push(token)
    rest = aggregator.flush()
    if rest is not None:
        pieces.append(rest)
    return pieces


@pytest.mark.parametrize(("text", "expected"), CASES)
@pytest.mark.parametrize("tokenise", TOKENISERS, ids=lambda f: f.__qualname__.split(".")[0])
def test_pieces_do_not_depend_on_tokenisation(
    text: str, expected: list[str], tokenise: Callable[[str], list[str]]
) -> None:
    tokens = tokenise(text)
    assert "".join(tokens) == text
    assert run(tokens) == expected


def test_pieces_are_released_as_soon_as_the_boundary_is_confirmed() -> None:
    aggregator = SentenceAggregator()
    assert aggregator.push("Let me check that") == []
    assert aggregator.push(" for you,") == []  # the comma might be inside "100,000"
    assert aggregator.push(" one") == ["Let me check that for you,"]
    assert aggregator.push(" moment.") == []
    assert aggregator.push(" It") == ["one moment."]
    assert aggregator.pending == "It"
    assert aggregator.flush() == "It"


def test_first_clause_can_be_disabled() -> None:
    aggregator = SentenceAggregator(first_clause_min_words=0)
    assert run(list("Let me check that for you, one moment."), aggregator) == [
        "Let me check that for you, one moment."
    ]


def test_flush_rearms_the_early_first_clause_for_the_next_response() -> None:
    aggregator = SentenceAggregator()
    first = run(llm_like("Let me check that for you, one moment."), aggregator)
    second = run(llm_like("Your order has shipped, it arrives Monday."), aggregator)
    assert first == ["Let me check that for you,", "one moment."]
    assert second == ["Your order has shipped,", "it arrives Monday."]


def test_reset_drops_pending_text() -> None:
    aggregator = SentenceAggregator()
    aggregator.push("I was about to say")
    aggregator.reset()
    assert aggregator.pending == ""
    assert aggregator.flush() is None


def test_flush_of_nothing_is_none() -> None:
    assert SentenceAggregator().flush() is None


def test_negative_min_words_is_rejected() -> None:
    with pytest.raises(ValueError, match="first_clause_min_words"):
        SentenceAggregator(first_clause_min_words=-1)


# Texts the TTS engines' own splitter and the aggregator used to cut differently (each
# had its own abbreviation list and list-number rule). One rule now cuts them the same
# while streaming, on a whole text, and for the voice.
ONE_RULE_CASES: list[tuple[str, list[str]]] = [
    ("Bring apples, pears, etc. Then pay.", ["Bring apples, pears, etc.", "Then pay."]),  # TTS: "etc." inside
    ("Then John F. Kennedy spoke. Yes.", ["Then John F. Kennedy spoke.", "Yes."]),  # TTS: split after "F."
    ("Call ext. 42 now. Thanks.", ["Call ext. 42 now.", "Thanks."]),  # TTS: split after "ext."
    ("We open on Jan. 5 at noon. Bye.", ["We open on Jan. 5 at noon.", "Bye."]),  # TTS: split after "Jan."
    ("I counted 12. Then I stopped.", ["I counted 12.", "Then I stopped."]),  # TTS: "12." a list number
    ("Steps: 1. Call us. 2. Email us.", ["Steps: 1. Call us.", "2. Email us."]),  # aggregator: split after "1."
]


@pytest.mark.parametrize(("text", "expected"), ONE_RULE_CASES)
def test_one_rule_for_streaming_whole_texts_and_the_voice(text: str, expected: list[str]) -> None:
    assert run(llm_like(text), SentenceAggregator(first_clause_min_words=0)) == expected
    assert split_sentences(text) == expected
    assert synthesis_units(text) == expected
