"""The first synthesis unit of a reply is short: a clause or a few words at a natural break.

The first audio of a reply is ready one synthesis of its first piece after that piece is
complete, so a long first sentence must not be its first piece. Cases run under several
tokenisations (the cut never depends on how the LLM streams), then properties over many
generated sentences, then the sentences node and the TTS together on a virtual clock.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import Callable, Generator

import pytest

from pipeline import CallContext, Graph
from pipeline.clock import VirtualClock
from pipeline.frames import LLMToken, OutputAudio, ResponseEnd, ResponseStart, TTSText
from pipeline.models import shared
from pipeline.processor import Processor
from pipeline.runner import CallRunner
from pipeline.testing import Collector, drive
from processors.text.aggregator import BREAK_WORDS, SentenceAggregator
from processors.text.sentences_node import SentencesProcessor, SentencesSettings
from processors.tts.espeak_engine import EspeakEngine
from processors.tts.node import TTSProcessor, TTSSettings

# An 18+ word first sentence with no comma: before word breaks it was one piece.
LONG = ("Your replacement card has been approved and will be mailed to the address "
        "we have on file within five working days.")

# (reply, pieces) with the default rule: 4 to 8 words before a break word.
CASES: list[tuple[str, list[str]]] = [
    (LONG, ["Your replacement card has been approved",
            "and will be mailed to the address we have on file within five working days."]),
    ("I am sorry to hear about your accident. I can start a claim for you right away.",
     ["I am sorry to hear", "about your accident.", "I can start a claim for you right away."]),
    # "because | of" is no break: the first piece never ends on a function word.
    ("I will check because of the storm that your flight is delayed today.",
     ["I will check because of the storm", "that your flight is delayed today."]),
    # No break word in the first eight words: cut after the eighth, the last content word.
    ("Yes absolutely certainly definitely positively totally completely utterly entirely fully done now.",
     ["Yes absolutely certainly definitely positively totally completely utterly",
      "entirely fully done now."]),
    # A break whose rest would be one or two words that end the sentence: the sentence goes whole.
    ("Please call our office about it.", ["Please call our office about it."]),
    ("Please call our office about it today.", ["Please call our office", "about it today."]),
    # A range of numbers is not broken ("three | to five").
    ("Refunds usually take three to five business days to appear on your statement.",
     ["Refunds usually take three to five business days", "to appear on your statement."]),
    # A comma still cuts first when the clause is long enough.
    ("Let me check that for you, one moment.", ["Let me check that for you,", "one moment."]),
    # Short first sentences are already short; only the first piece of a reply is cut early.
    ("Good morning! Thanks for calling. How can I help you today?",
     ["Good morning!", "Thanks for calling.", "How can I help you today?"]),
    ("Sure. Your replacement card has been approved and will be mailed to you soon.",
     ["Sure.", "Your replacement card has been approved and will be mailed to you soon."]),
    # A break word two words before the end of an unpunctuated reply: nothing is decided early.
    ("Please hold the line while I transfer your call now",
     ["Please hold the line", "while I transfer your call now"]),
]


def llm_like(text: str) -> list[str]:
    return re.findall(r"\s*\w+|\s*[^\w\s]|\s+", text)


TOKENISERS: list[Callable[[str], list[str]]] = [lambda t: [t], list, llm_like]


def run(tokens: list[str], aggregator: SentenceAggregator | None = None) -> list[str]:
    aggregator = aggregator or SentenceAggregator()
    pieces: list[str] = []
    for token in tokens:
        pieces += aggregator.push(token)
    rest = aggregator.flush()
    return [*pieces, rest] if rest else pieces


@pytest.mark.parametrize(("text", "expected"), CASES)
@pytest.mark.parametrize("tokenise", TOKENISERS, ids=["whole", "characters", "llm_like"])
def test_the_first_piece_is_cut_at_a_natural_break(
        text: str, expected: list[str], tokenise: Callable[[str], list[str]]) -> None:
    assert run(tokenise(text)) == expected


def test_the_first_piece_leaves_as_soon_as_two_words_follow_its_break() -> None:
    aggregator = SentenceAggregator()
    assert aggregator.push("I am sorry to hear about") == []
    assert aggregator.push(" your") == []  # "about your" might yet be "about." + one word
    assert aggregator.push(" accident") == ["I am sorry to hear"]
    assert aggregator.pending == "about your accident"


def test_word_breaks_can_be_switched_off_and_bad_bounds_are_refused() -> None:
    assert run(llm_like(LONG), SentenceAggregator(first_unit_max_words=0)) == [LONG]
    assert run(llm_like(LONG), SentenceAggregator(first_clause_min_words=0)) == [LONG]
    with pytest.raises(ValueError, match="first_unit_max_words"):
        SentenceAggregator(first_clause_min_words=4, first_unit_max_words=3)


CONTENT = ("claim", "policy", "number", "car", "office", "card", "mailed", "approved", "check", "today",
           "tomorrow", "quickly")
FUNCTION = ("the", "a", "your", "will", "be", "is", "of", "very")
VOCABULARY = CONTENT + FUNCTION


def sentence(rng: random.Random, words: int) -> str:
    pool = VOCABULARY + tuple(sorted(BREAK_WORDS))
    return " ".join(rng.choice(pool) for _ in range(words)).capitalize() + "."


@pytest.mark.parametrize("seed", range(6))
def test_every_first_sentence_of_5_to_30_words_starts_with_4_to_8_words_and_nothing_dangles(seed: int) -> None:
    rng = random.Random(seed)
    for words in range(5, 31):
        first = sentence(rng, words)
        pieces = run(llm_like(f"{first} {sentence(rng, 6)}"))
        head = pieces[0].split()
        assert pieces[0] == first or 4 <= len(head) <= 8, pieces
        if pieces[0] != first:
            # It ends on a content word, unless its words 4 to 8 have none (then after the 8th).
            if any(word in CONTENT for word in head[3:8]):
                assert head[-1].lower() in CONTENT, pieces
            else:
                assert len(head) == 8, pieces
            assert " ".join(pieces[:2]) == first
        assert all(len(piece.split()) >= 2 for piece in pieces), pieces


# --- sentences node + TTS, on a virtual clock -------------------------------------------------


class LoggingEngine:
    """A real eSpeak voice that logs when it starts each synthesis, into a shared log."""

    def __init__(self, log: list[tuple[str, str]]) -> None:
        self.inner = EspeakEngine(voice="en-us")
        self.name = self.inner.name
        self.sample_rate = self.inner.sample_rate
        self.log = log

    def synthesize(self, text: str) -> Generator[bytes, None, None]:
        self.log.append(("synthesize", text))
        yield from self.inner.synthesize(text)


class StreamingLLM(Processor):
    """Streams a reply as word tokens, one every ``every_ms`` of the call's clock."""

    produces = (LLMToken,)

    def __init__(self, reply: str, every_ms: float, log: list[tuple[str, str]]) -> None:
        super().__init__(name="llm")
        self.reply, self.every_ms, self.log = reply, every_ms, log

    async def run(self) -> None:
        await self.push(ResponseStart(turn=1))
        clock = self.ctx.clock
        for i, word in enumerate(self.reply.split()):
            await clock.sleep_until(int((i + 1) * self.every_ms * 1e6))
            self.log.append(("token", word))
            await self.push(LLMToken(word if i == 0 else " " + word, turn=1))
        await self.push(ResponseEnd(turn=1))


class AudioLog(Collector):
    def __init__(self, log: list[tuple[str, str]]) -> None:
        super().__init__()
        self.log = log

    async def process(self, frame):  # type: ignore[no-untyped-def]
        await super().process(frame)
        if isinstance(frame, OutputAudio):
            self.log.append(("audio", str(frame.ts)))
        elif isinstance(frame, TTSText):
            self.log.append(("text", frame.text))


@pytest.mark.parametrize("first_unit_max_words", [8, 0])
async def test_first_audio_of_a_long_sentence_comes_after_its_first_words_not_its_end(
        first_unit_max_words: int) -> None:
    log: list[tuple[str, str]] = []
    voice = f"logging-{uuid.uuid4().hex[:8]}"
    engine = LoggingEngine(log)
    assert shared(("tts", "espeak", voice), lambda: engine) is engine
    clock = VirtualClock()
    sink = AudioLog(log)
    graph = Graph()
    graph.chain(StreamingLLM(LONG, 100.0, log),
                SentencesProcessor(SentencesSettings(first_unit_max_words=first_unit_max_words)),
                TTSProcessor(TTSSettings(engine="espeak", voice=voice, fallback=None)), sink)
    call = asyncio.ensure_future(CallRunner(graph, CallContext(clock=clock)).run(timeout=None))
    await drive(clock, call)
    assert (await call).reason == "eos"

    synthesised = [text for kind, text in log if kind == "synthesize"]
    first_audio_ms = next(int(ts) for kind, ts in log if kind == "audio") / 1e6
    words = LONG.split()
    if first_unit_max_words == 0:  # main's rule: the whole 21-word sentence, after its last token
        assert synthesised == [LONG] and first_audio_ms == len(words) * 100.0
        return
    assert synthesised == ["Your replacement card has been approved",
                           "and will be mailed to the address we have on file within five working days."]
    assert len(synthesised[0].split()) == 6
    # Its break ("| and will") is confirmed when the 9th token (" be", at 900 ms) completes
    # "will"; synthesis stands still on the virtual clock, so its audio is out at that very
    # moment, 12 tokens (1.2 s) before the sentence's last.
    assert first_audio_ms == 900.0
    # The first piece's audio reaches the line before the rest of the sentence is synthesised.
    order = [kind for kind, _ in log if kind in ("synthesize", "audio")]
    assert order[:3] == ["synthesize", "audio", "synthesize"]
