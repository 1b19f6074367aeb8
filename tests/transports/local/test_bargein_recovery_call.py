"""False barge-in recovery in a whole spoken call on the embedded stack (local.yaml):
an "uh-huh" over the bot's answer pauses it, it plays on, nobody answers the "uh-huh",
and the brain's context holds the whole answer. Real time; asserts what was said and
heard, never how fast."""

from __future__ import annotations

from processors.llm.rules import RulesBrain
from tests.transports.local.test_speech_call import CLAIM, CLAIM_REPLY, call, local_graph
from transports.local.speech import SpeechCaller


async def test_an_uh_huh_over_the_answer_is_no_barge_in_and_no_turn() -> None:
    graph = local_graph()
    report = await call(graph, (CLAIM, "Uh-huh."), interrupt_after_ms=1500)
    # `voicegraph call` says so when --interrupt-after interrupted nothing: here, the point.
    assert [e.split(":")[0] for e in report["errors"]] == ["--interrupt-after 1500"]
    first = report["turns"][0]
    assert not first["interrupted"] and first["bot_heard_text"] == first["bot_text"] == CLAIM_REPLY
    barge = graph.nodes["barge_in"]
    assert [type(d).__name__ for d in barge.decisions] == ["Pause", "Resume"]  # type: ignore[attr-defined]
    caller = graph.nodes["caller"]
    assert isinstance(caller, SpeechCaller)
    answer = caller.line.answers[1]
    assert not answer.interrupted and len(caller.line.answers) == 1  # the "uh-huh" got no answer
    brain = graph.nodes["brain"]
    assert isinstance(brain, RulesBrain)
    history = [(m.role, m.turn, m.content, m.interrupted) for m in brain.conversation.history]
    assert history == [("user", 1, history[0][2], False), ("assistant", 1, CLAIM_REPLY, False)]
