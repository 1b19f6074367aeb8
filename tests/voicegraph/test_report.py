"""CallRecorder: what the report says about each turn, from the events of a call."""

from pipeline.frames import BotStartedSpeaking, BotStoppedSpeaking, FlushStart
from pipeline.graph import Graph
from pipeline.testing import Collector, Feeder
from voicegraph.report import CallRecorder


def recorder() -> CallRecorder:
    graph = Graph("tiny")
    graph.chain(Feeder(), Collector())
    return CallRecorder(graph)


def test_a_flush_while_the_answer_plays_marks_it_interrupted() -> None:
    rec = recorder()
    rec._on_event(BotStartedSpeaking(turn=2))
    rec._on_event(FlushStart(turn=2))
    rec._on_event(BotStoppedSpeaking(turn=2, played_ms=400.0, interrupted=True, heard_text="I am sorry"))
    turn = rec.to_json()["turns"][0]
    assert turn["interrupted"] and turn["bot_heard_text"] == "I am sorry"


def test_a_flush_after_the_answer_played_out_leaves_it_whole() -> None:
    rec = recorder()
    rec._on_event(BotStartedSpeaking(turn=2))
    rec._on_event(BotStoppedSpeaking(turn=2, played_ms=1800.0, heard_text="We are open from eight."))
    rec._on_event(FlushStart(turn=2))  # barge-in decided as the last frame went out
    turn = rec.to_json()["turns"][0]
    assert not turn["interrupted"] and turn["bot_heard_text"] == "We are open from eight."


def test_a_flush_before_any_audio_drops_the_answer() -> None:
    rec = recorder()
    rec.turn(3)
    rec._on_event(FlushStart(turn=3))
    assert rec.to_json()["turns"][0]["interrupted"]
