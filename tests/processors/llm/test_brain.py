"""BrainProcessor: every bot utterance has a turn and is closed, greetings and failures too."""

from collections.abc import AsyncIterator

from pipeline.context import CallContext
from pipeline.frames import (
    BotStoppedSpeaking,
    ErrorEvent,
    FinalTranscript,
    LLMToken,
    ResponseEnd,
    ResponseStart,
)
from pipeline.testing import run_processor
from processors.llm.brain import BrainProcessor, BrainSettings
from processors.llm.rules import RulesBrain, RulesBrainSettings


class FailingBrain(BrainProcessor):
    """Says two words, then its model connection drops."""

    async def _answer(self) -> AsyncIterator[str]:
        yield "Your claim"
        yield " is"
        raise ConnectionError("model stream reset")

    def respond(self, text: str, turn: int) -> AsyncIterator[str]:
        return self._answer()


def spoken(out: object, turn: int) -> str:
    return "".join(f.text for f in out.frames if isinstance(f, LLMToken) and f.turn == turn)  # type: ignore[attr-defined]


async def test_a_brain_failing_mid_answer_closes_the_turn_and_apologises() -> None:
    brain = FailingBrain(BrainSettings(apology="Sorry, one moment."))
    out, result = await run_processor(brain, [FinalTranscript("status of my claim", turn=3)])
    assert result.reason == "eos"
    assert spoken(out, 3) == "Your claim is Sorry, one moment."
    controls = [type(c) for c in out.controls if isinstance(c, (ResponseStart, ResponseEnd))]
    assert controls == [ResponseStart, ResponseEnd]
    errors = [e for e in result.errors if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and errors[0].node == brain.name and "model stream reset" in errors[0].message
    assert not errors[0].fatal
    brain.on_event(BotStoppedSpeaking(turn=3))  # the transport played it all
    assert brain.conversation.messages()[-1] == {"role": "assistant", "content": "Your claim is Sorry, one moment."}


async def test_the_next_turn_is_answered_after_a_failure() -> None:
    brain = FailingBrain(BrainSettings(apology=""))
    out, _ = await run_processor(brain, [FinalTranscript("one", turn=1), FinalTranscript("two", turn=2)])
    ends = [c.turn for c in out.controls if isinstance(c, ResponseEnd)]
    assert ends == [1, 2]
    assert spoken(out, 1) == spoken(out, 2) == "Your claim is"  # no apology configured


async def test_the_greeting_gets_a_turn_from_the_call_counter_and_is_spoken_first() -> None:
    ctx = CallContext()
    brain = RulesBrain(RulesBrainSettings(greeting="Hello, you are through to Contoso.", fallback="Heard {text}."))
    out, _ = await run_processor(brain, [], ctx=ctx)
    assert ctx.turn == 1
    starts = [c for c in out.controls if isinstance(c, ResponseStart)]
    assert [s.turn for s in starts] == [1] and starts[0].interruptible
    assert spoken(out, 1) == "Hello, you are through to Contoso."
    brain.on_event(BotStoppedSpeaking(turn=1))
    assert brain.conversation.messages() == [{"role": "assistant", "content": "Hello, you are through to Contoso."}]


async def test_an_interrupted_greeting_keeps_only_what_was_heard() -> None:
    ctx = CallContext()
    brain = RulesBrain(RulesBrainSettings(greeting="Hello, you are through to Contoso insurance claims."))
    await run_processor(brain, [], ctx=ctx)
    brain.on_event(BotStoppedSpeaking(turn=1, interrupted=True, heard_text="Hello, you are"))
    assert brain.conversation.messages() == [{"role": "assistant", "content": "Hello, you are"}]


async def test_no_greeting_configured_means_the_bot_waits() -> None:
    ctx = CallContext()
    out, _ = await run_processor(RulesBrain(), [], ctx=ctx)
    assert ctx.turn == 0 and not out.controls[:-1]
