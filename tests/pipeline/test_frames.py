import dataclasses

import pytest

from pipeline import frames as F


def test_frames_are_frozen_and_slotted() -> None:
    frame = F.InputAudio(b"\x00\x01", turn=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.turn = 4  # type: ignore[misc]
    assert not hasattr(frame, "__dict__")
    assert frame.turn == 3 and frame.pcm == b"\x00\x01"


def test_scheduling_classes() -> None:
    assert F.InputAudio(b"").kind is F.FrameClass.DATA
    assert F.FinalTranscript("x").kind is F.FrameClass.DATA
    assert F.EndOfStream().kind is F.FrameClass.CONTROL
    assert F.FlushStop(turn=1).kind is F.FrameClass.CONTROL
    assert F.AudioFormat(16000).kind is F.FrameClass.CONTROL
    assert F.FlushStart(turn=1).kind is F.FrameClass.EVENT
    assert F.UserStartedSpeaking().kind is F.FrameClass.EVENT
    assert F.ErrorEvent(node="n", message="m").kind is F.FrameClass.EVENT


def test_turn_defaults_to_unbound_and_timestamps_increase() -> None:
    a = F.LLMToken("a")
    b = F.LLMToken("b")
    assert a.turn == 0
    assert b.ts >= a.ts > 0


def test_audio_format_and_views() -> None:
    fmt = F.AudioFormat(16000)
    assert fmt.sticky and fmt.stream == "in"
    assert fmt.bytes_per_ms == 32.0
    assert F.AudioFormat(8000, stream="out").bytes_per_ms == 16.0
    samples = F.InputAudio(b"\x01\x00\xff\xff").samples()
    assert samples.tolist() == [1, -1]


def test_transcript_hierarchy() -> None:
    assert isinstance(F.FinalTranscript("x"), F.Transcript)
    assert isinstance(F.InterimTranscript("x"), F.Transcript)
    assert not isinstance(F.InterimTranscript("x"), F.FinalTranscript)
