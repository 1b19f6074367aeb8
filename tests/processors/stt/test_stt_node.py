"""STTProcessor: a turn's audio (with pre-roll) in, interim and final transcripts out."""

from __future__ import annotations

from pipeline.frames import (
    AudioFormat,
    FinalTranscript,
    FlushStart,
    Frame,
    InputAudio,
    InterimTranscript,
    TurnEnd,
    TurnStart,
)
from pipeline.testing import run_processor
from processors.stt.node import STTProcessor, STTSettings
from processors.stt.wer import wer
from tests.processors.stt.speech import frames, silence, utterance

SENTENCE = "I want to file a claim for my car accident"


def turn_frames(text: str, turn: int, *, lead_ms: int = 600) -> list[Frame]:
    """Audio with the turn opened 200 ms after the speech onset, as the VAD does."""
    speech = utterance(text, pad_ms=0)
    chunks = list(frames(silence(lead_ms) + speech + silence(300)))
    opened = (lead_ms + 200) // 20
    out: list[Frame] = [InputAudio(c) for c in chunks[:opened]]
    out.append(TurnStart(turn=turn, at_ms=lead_ms))
    out += [InputAudio(c) for c in chunks[opened:]]
    out.append(TurnEnd(turn=turn))
    return out


async def test_final_transcript_of_a_turn_uses_the_preroll() -> None:
    out, result = await run_processor(STTProcessor(), [AudioFormat(16000), *turn_frames(SENTENCE, 1)])
    assert result.reason == "eos" and result.errors == ()
    finals = [f for f in out.frames if isinstance(f, FinalTranscript)]
    assert len(finals) == 1 and finals[0].turn == 1
    assert wer(SENTENCE, finals[0].text) <= 0.3, finals[0].text
    assert 300 <= finals[0].start_ms <= 900 and finals[0].end_ms > finals[0].start_ms
    interims = [f for f in out.frames if isinstance(f, InterimTranscript)]
    assert interims and all(f.turn == 1 for f in interims)
    assert out.frames.index(interims[0]) < out.frames.index(finals[0])
    # Audio stops at the STT: only transcripts go on.
    assert not [f for f in out.frames if isinstance(f, InputAudio)]


async def test_without_preroll_the_first_words_are_lost() -> None:
    out, _ = await run_processor(STTProcessor(STTSettings(preroll_ms=0)), [AudioFormat(16000), *turn_frames(SENTENCE, 1)])
    final = next(f for f in out.frames if isinstance(f, FinalTranscript))
    with_preroll, _ = await run_processor(STTProcessor(), [AudioFormat(16000), *turn_frames(SENTENCE, 1)])
    full = next(f for f in with_preroll.frames if isinstance(f, FinalTranscript))
    assert wer(SENTENCE, final.text) > wer(SENTENCE, full.text)


async def test_flushed_turn_produces_no_transcript_and_the_next_turn_works() -> None:
    frames_ = [AudioFormat(16000), *turn_frames(SENTENCE, 1)]
    frames_.insert(len(frames_) - 5, FlushStart(turn=1))  # barge-in before the turn ended
    frames_ += turn_frames("yes please transfer me to an agent", 2)
    out, _ = await run_processor(STTProcessor(), frames_)
    finals = [f for f in out.frames if isinstance(f, FinalTranscript)]
    assert [f.turn for f in finals] == [2]
    assert wer("yes please transfer me to an agent", finals[0].text) <= 0.35


async def test_wrong_rate_and_odd_sizes_are_reported_not_fatal() -> None:
    frames_ = [AudioFormat(8000), InputAudio(b"\x00" * 3), *turn_frames("my policy number is four five six", 1)]
    out, result = await run_processor(STTProcessor(name="stt"), frames_)
    assert result.reason == "eos"
    assert any("needs 16000 Hz mono audio, got 8000 Hz" in e.message for e in result.errors)
    assert any("3 bytes is not whole PCM16 samples" in e.message for e in result.errors)
    assert len([f for f in out.frames if isinstance(f, FinalTranscript)]) == 1


async def test_empty_turn_gives_an_empty_final() -> None:
    out, _ = await run_processor(STTProcessor(STTSettings(preroll_ms=0)),
                                 [AudioFormat(16000), TurnStart(turn=1), TurnEnd(turn=1)])
    finals = [f for f in out.frames if isinstance(f, FinalTranscript)]
    assert [(f.turn, f.text) for f in finals] == [(1, "")]


async def test_whisper_is_selectable_and_transcribes_the_turn_after_it_ends() -> None:
    node = STTProcessor(STTSettings(engine="whisper"))
    out, result = await run_processor(node, [AudioFormat(16000), *turn_frames(SENTENCE, 1)])
    assert result.errors == ()
    finals = [f for f in out.frames if isinstance(f, FinalTranscript)]
    assert len(finals) == 1 and wer(SENTENCE, finals[0].text) <= 0.1, finals[0].text
    assert not [f for f in out.frames if isinstance(f, InterimTranscript)]  # utterance-level engine
