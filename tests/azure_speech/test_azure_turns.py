"""AzureTurns: a push recogniser's phrases mapped to the caller's turns, on call-audio time."""

from __future__ import annotations

from pipeline.frames import FinalTranscript, Frame, InterimTranscript
from processors.stt.azure_engine import AzureResult
from processors.stt.azure_turns import AzureTurns


def interim(text: str, start: int, end: int) -> AzureResult:
    return AzureResult("interim", text, start, end)


def final(text: str, start: int, end: int, confidence: float = 0.9) -> AzureResult:
    return AzureResult("final", text, start, end, confidence)


def machine(**kw: int) -> tuple[AzureTurns, list[Frame]]:
    out: list[Frame] = []
    return AzureTurns(out.append, **kw), out  # type: ignore[arg-type]


def test_final_before_turn_end_completes_at_turn_end() -> None:
    turns, out = machine()
    turns.begin(1, 800)
    turns.result(interim("yes", 600, 900))
    turns.result(interim("yes please", 600, 1200))
    turns.result(final("Yes please.", 600, 1400, 0.8))
    assert [type(f) for f in out] == [InterimTranscript, InterimTranscript]
    turns.end(1, 2000)
    assert out[-1] == FinalTranscript("Yes please.", confidence=0.8, start_ms=600, end_ms=1400, turn=1, ts=out[-1].ts)


def test_final_after_turn_end_completes_when_it_arrives() -> None:
    turns, out = machine()
    turns.begin(2, 800)
    turns.result(interim("transfer me", 700, 1500))
    turns.end(2, 2100)
    assert turns.waiting and not any(isinstance(f, FinalTranscript) for f in out)
    turns.result(interim("transfer me now", 700, 1700))  # no interims once the turn ended
    assert len(out) == 1
    turns.result(final("Transfer me now.", 700, 1800))
    assert [(f.text, f.turn) for f in out if isinstance(f, FinalTranscript)] == [("Transfer me now.", 2)]
    assert not turns.waiting


def test_two_phrases_in_one_turn_are_joined() -> None:
    turns, out = machine()
    turns.begin(1, 500)
    turns.result(final("I want to file a claim.", 300, 2000, 0.9))
    turns.result(interim("for my", 2600, 2900))
    assert out[-1] == InterimTranscript("I want to file a claim. for my", confidence=0.0, start_ms=300,
                                        end_ms=2900, turn=1, ts=out[-1].ts)
    turns.end(1, 3500)  # a phrase is in progress: wait for it
    assert not isinstance(out[-1], FinalTranscript)
    turns.result(final("For my car.", 2600, 3100, 0.7))
    done = out[-1]
    assert isinstance(done, FinalTranscript)
    assert (done.text, done.confidence, done.start_ms, done.end_ms) == ("I want to file a claim. For my car.", 0.7, 300, 3100)


def test_silent_service_times_out_on_audio_time_with_the_hypothesis() -> None:
    turns, out = machine(final_timeout_ms=1500)
    turns.begin(3, 1000)
    turns.result(interim("good morning", 900, 1600))
    turns.end(3, 2400)
    turns.tick(3899)
    assert turns.waiting
    turns.tick(3900)
    assert out[-1] == FinalTranscript("good morning", confidence=0.0, start_ms=900, end_ms=1600, turn=3, ts=out[-1].ts)
    assert turns.timeouts == 1 and not turns.waiting


def test_nothing_heard_gives_an_empty_final_after_the_timeout() -> None:
    turns, out = machine(final_timeout_ms=1000)
    turns.begin(1, 1000)
    turns.end(1, 1500)
    turns.tick(2500)
    assert out == [FinalTranscript("", confidence=0.0, start_ms=1000, end_ms=1500, turn=1, ts=out[0].ts)]


def test_noise_before_the_turn_and_between_turns_is_ignored() -> None:
    turns, out = machine(preroll_ms=400)
    turns.result(final("Hmm.", 0, 300))  # no turn open
    turns.begin(1, 2000)
    turns.result(final("Uh.", 1000, 1500))  # ends 500 ms before the turn: before its pre-roll
    turns.result(final("Hello.", 1700, 2600))
    turns.end(1, 3200)
    assert [(f.text, f.start_ms) for f in out] == [("Hello.", 1700)]


def test_new_turn_completes_the_waiting_one_first() -> None:
    turns, out = machine()
    turns.begin(1, 500)
    turns.result(interim("one", 400, 900))
    turns.end(1, 1500)
    turns.begin(2, 1700)
    assert [(type(f).__name__, f.text, f.turn) for f in out] == [
        ("InterimTranscript", "one", 1), ("FinalTranscript", "one", 1)]
    turns.result(final("Two.", 1600, 2200))
    turns.end(2, 2800)
    assert (out[-1].text, out[-1].turn) == ("Two.", 2)  # type: ignore[attr-defined]


def test_flushed_turn_emits_nothing() -> None:
    turns, out = machine()
    turns.begin(4, 500)
    turns.result(interim("wait", 400, 800))
    turns.drop(4)
    turns.result(final("Wait.", 400, 900))
    turns.end(4, 1500)
    turns.tick(10_000)
    assert [type(f) for f in out] == [InterimTranscript]
