"""One enormous reply without punctuation is cut into pieces TTS can synthesise in time (issue 15)."""

from __future__ import annotations

import random

import pytest

from processors.text.aggregator import LATER_UNIT_MAX_WORDS, SentenceAggregator

WORDS = ("policy claim car accident address number we will send you the details by email and then "
         "call you back with the reference for your insurance cover today").split()


def pieces_of(text: str) -> list[str]:
    agg = SentenceAggregator()
    out: list[str] = []
    for i, word in enumerate(text.split()):
        out += agg.push(word if i == 0 else " " + word)
    rest = agg.flush()
    return out + ([rest] if rest else [])


@pytest.mark.parametrize("seed", range(5))
def test_a_300_word_reply_without_punctuation_comes_out_in_pieces_of_at_most_40_words(seed: int) -> None:
    rng = random.Random(seed)
    text = " ".join(rng.choice(WORDS) for _ in range(300))
    pieces = pieces_of(text)
    assert " ".join(pieces) == text  # nothing lost or reordered
    assert len(pieces[0].split()) <= 8
    sizes = [len(p.split()) for p in pieces]
    assert max(sizes) <= LATER_UNIT_MAX_WORDS, sizes
    assert len(pieces) >= 300 // LATER_UNIT_MAX_WORDS


def test_a_run_with_no_break_word_is_cut_at_exactly_the_limit() -> None:
    text = " ".join(["claim"] * 100)
    assert [len(p.split()) for p in pieces_of(text)] == [8, 40, 40, 12]


def test_sentences_up_to_the_limit_stay_whole_after_the_first_piece() -> None:
    sentence = " ".join(["claim"] * 6) + " and " + " ".join(["policy"] * 30) + "."
    assert pieces_of("Fine. " + sentence) == ["Fine.", sentence]  # 37 words, a break word early on


def test_a_long_sentence_is_cut_at_a_clause_end_near_the_limit() -> None:
    head = " ".join(["claim"] * 37) + ","
    tail = " ".join(["policy"] * 10) + "."
    assert pieces_of("Fine. " + head + " " + tail) == ["Fine.", head, tail]
