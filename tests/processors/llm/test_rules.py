"""RulesBrain: rule matching, streamed tokens bracketed by response start/end, flush."""

from pipeline.frames import FinalTranscript, LLMToken, ResponseEnd, ResponseStart
from pipeline.testing import run_processor
from processors.llm.rules import RulesBrain, RulesBrainSettings


def brain() -> RulesBrain:
    return RulesBrain(RulesBrainSettings(
        rules={r"policy (number )?(is )?(?P<num>\d+)": "Thanks, policy {num} found.", "claim": "Let us file it."},
        fallback="Pardon: {text}?",
    ))


def test_answers_by_first_matching_rule_with_groups() -> None:
    b = brain()
    assert b.answer("my policy number is 4521") == "Thanks, policy 4521 found."
    assert b.answer("I need a CLAIM") == "Let us file it."
    assert b.answer("weather") == "Pardon: weather?"
    assert b.answer("   ") == "Sorry, I did not catch that."


async def test_streams_tokens_between_response_start_and_end() -> None:
    out, _ = await run_processor(brain(), [FinalTranscript("a claim please", turn=4)])
    tokens = [f for f in out.frames if isinstance(f, LLMToken)]
    assert "".join(t.text for t in tokens) == "Let us file it."
    assert {t.turn for t in tokens} == {4}
    kinds = [type(f) for f in out.seen if isinstance(f, (LLMToken, ResponseStart, ResponseEnd))]
    assert kinds[0] is ResponseStart and kinds[-1] is ResponseEnd
