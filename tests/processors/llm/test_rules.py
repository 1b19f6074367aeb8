"""RulesBrain: rule matching, streamed tokens bracketed by response start/end, flush, keypad digits."""

from collections.abc import Sequence

from pipeline import CallContext
from pipeline.errors import ConfigError
from pipeline.frames import DTMF, FinalTranscript, InputAudio, LLMToken, ResponseEnd, ResponseStart, TurnEnd
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


# --- keypad digits and turn ends without STT ------------------------------------------------


def keypad() -> RulesBrain:
    return RulesBrain(RulesBrainSettings(
        dtmf={r"^1$": "Claims. What is your policy number?", r"^(?P<num>\d{4,})#?$": "Policy {num}, thank you."},
        dtmf_fallback="Key {digits} is not an option.",
        empty_reply="Press one for claims.",
        answer_turn_ends=True,
    ))


def replies(frames: Sequence[object]) -> dict[int, str]:
    out: dict[int, str] = {}
    for f in frames:
        if isinstance(f, LLMToken):
            out[f.turn] = out.get(f.turn, "") + f.text
    return out


def test_dtmf_rules_match_the_digits_with_groups_and_a_fallback() -> None:
    b = keypad()
    assert b.answer_dtmf("1") == "Claims. What is your policy number?"
    assert b.answer_dtmf("4521#") == "Policy 4521, thank you."
    assert b.answer_dtmf("9") == "Key 9 is not an option."
    assert brain().answer_dtmf("9") == ""  # no dtmf rules, no fallback: no reply


def test_a_bad_dtmf_pattern_is_a_config_error_naming_it() -> None:
    try:
        RulesBrain(RulesBrainSettings(dtmf={"(": "x"}))
    except ConfigError as exc:
        assert "dtmf rule /(/" in str(exc)
    else:
        raise AssertionError("ConfigError expected")


async def test_key_presses_are_answered_each_in_a_turn_of_its_own_and_recorded() -> None:
    ctx = CallContext("keys")
    b = keypad()
    out, result = await run_processor(b, [DTMF("1"), DTMF("4521#"), DTMF("9")], ctx=ctx)
    assert result.errors == ()
    assert replies(out.frames) == {1: "Claims. What is your policy number?", 2: "Policy 4521, thank you.",
                                   3: "Key 9 is not an option."}
    assert [f.turn for f in out.seen if isinstance(f, ResponseEnd)] == [1, 2, 3]
    assert [m.content for m in b.conversation.history if m.role == "user"] == ["[keys 1]", "[keys 4521#]", "[keys 9]"]
    assert not any(isinstance(f, DTMF) for f in out.frames)  # consumed here, not passed on to TTS


async def test_turn_ends_are_answered_without_stt_only_when_asked() -> None:
    audio = InputAudio(bytes(640))
    ends = [audio, TurnEnd(turn=1, at_ms=900.0), audio, TurnEnd(turn=2, at_ms=3100.0)]
    out, _ = await run_processor(keypad(), ends)
    assert replies(out.frames) == {1: "Press one for claims.", 2: "Press one for claims."}
    assert not any(isinstance(f, InputAudio) for f in out.frames)  # the audio ends at the brain, as at an STT
    out, _ = await run_processor(brain(), ends)
    assert replies(out.frames) == {}
    assert sum(isinstance(f, InputAudio) for f in out.frames) == 2  # a brain behind an STT passes it on
    assert [f.turn for f in out.seen if isinstance(f, TurnEnd)] == [1, 2]  # forwarded either way
