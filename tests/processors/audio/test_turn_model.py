"""End of turn with a semantic model: the VAD node asks it at each pause.

Stubbed by a pure function, the decisions fall at exact times on the audio clock; with
the real Smart Turn on generated speech, a mid-sentence pause is bridged and the end of
a complete sentence comes early.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from pipeline import CallContext
from pipeline.frames import AudioFormat, Frame, InputAudio, TurnEnd, TurnStart, UserStoppedSpeaking
from pipeline.testing import Collector, run_processor
from processors.audio import vad_node
from processors.audio.turn_model import TurnModel, load_smart_turn, pipecat_data_file, smart_turn_features
from processors.audio.vad_node import VADProcessor, VADSettings
from tests.processors.audio.paused_speech import paused
from tests.processors.stt.speech import frames, silence, utterance

RATE = 16000
HAVE_SMART_TURN = pipecat_data_file("audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx") is not None


def audio_frames(pcm: bytes) -> list[Frame]:
    return [AudioFormat(RATE), *(InputAudio(chunk) for chunk in frames(pcm))]


async def run(pcm: bytes, settings: VADSettings, model: TurnModel | None = None) -> Collector:
    node = VADProcessor(settings, turn_model=model)
    out, _ = await run_processor(node, audio_frames(pcm), ctx=CallContext())
    return out


def turn_ends(out: Collector) -> list[TurnEnd]:
    return [f for f in out.seen if isinstance(f, TurnEnd)]


def stops(out: Collector) -> list[float]:
    return [e.at_ms for e in out.events if isinstance(e, UserStoppedSpeaking)]


async def test_a_stub_model_decides_at_exact_times_on_the_audio_clock() -> None:
    """Pause 1 judged incomplete (bridged, 800 ms), pause 2 complete (ends 250 ms after the stop)."""
    first, second = utterance("my policy number is", pad_ms=0), utterance("four five six", pad_ms=0)
    pcm = silence(500) + first + silence(800) + second + silence(2000)
    asked: list[int] = []

    def model(audio: npt.NDArray[np.float32]) -> float:
        asked.append(len(audio))
        return 0.1 if len(asked) == 1 else 0.9

    out = await run(pcm, VADSettings(stop_ms=200), model)
    ends, stopped = turn_ends(out), stops(out)
    assert [f.turn for f in out.seen if isinstance(f, TurnStart)] == [1]
    assert len(stopped) == 2 and len(asked) == 2
    assert len(ends) == 1 and ends[0].reason == "model"
    assert ends[0].at_ms == stopped[1] + 250
    # Each verdict is about the turn's audio from its onset to the frame confirming the stop.
    onset = next(f.at_ms for f in out.seen if isinstance(f, TurnStart))
    for n, stop in zip(asked, stopped, strict=True):
        confirmed = stop + 200  # the VAD's stop window; frames are 20 ms, stops on frame edges
        assert n == round((confirmed - onset) * RATE / 1000)


async def test_silence_only_endpointing_cuts_the_same_pause() -> None:
    first, second = utterance("my policy number is", pad_ms=0), utterance("four five six", pad_ms=0)
    pcm = silence(500) + first + silence(800) + second + silence(2000)
    out = await run(pcm, VADSettings(stop_ms=200, silence_ms=600))
    ends = turn_ends(out)
    assert [e.reason for e in ends] == ["silence", "silence"]  # cut in the pause: two turns
    assert ends[0].at_ms == stops(out)[0] + 600


async def test_an_incomplete_verdict_waits_the_long_window() -> None:
    pcm = silence(500) + utterance("my policy number is", pad_ms=0) + silence(3000)
    out = await run(pcm, VADSettings(stop_ms=200, incomplete_ms=1500), lambda audio: 0.0)
    (end,) = turn_ends(out)
    assert (end.reason, end.at_ms) == ("silence", stops(out)[0] + 1500)


async def test_a_failing_model_leaves_the_silence_window_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    def broken(audio: npt.NDArray[np.float32]) -> float:
        raise RuntimeError("onnx says no")

    pcm = silence(500) + utterance("yes please", pad_ms=0) + silence(1500)
    with caplog.at_level(logging.WARNING):
        out = await run(pcm, VADSettings(silence_ms=600), broken)
    (end,) = turn_ends(out)
    assert (end.reason, end.at_ms) == ("silence", stops(out)[0] + 600)
    assert "end-of-turn model failed" in caplog.text and "onnx says no" in caplog.text


async def test_a_model_file_that_does_not_load_falls_back_to_silence_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "smart-turn.onnx"
    bad.write_bytes(b"not an onnx model")
    monkeypatch.setattr(vad_node, "load_smart_turn", lambda: load_smart_turn(bad))
    pcm = silence(500) + utterance("yes please", pad_ms=0) + silence(1500)
    with caplog.at_level(logging.WARNING):
        out = await run(pcm, VADSettings(turn_model="smart_turn", silence_ms=600))
    (end,) = turn_ends(out)
    assert (end.reason, end.at_ms) == ("silence", stops(out)[0] + 600)
    assert f"Smart Turn model {bad} failed to load" in caplog.text
    assert "silence-only endpointing" in caplog.text


def test_a_missing_model_file_is_a_warning_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert load_smart_turn(tmp_path / "absent.onnx") is None
    assert "absent.onnx" in caplog.text


def test_features_keep_the_last_eight_seconds_padded_in_front() -> None:
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.float32)
    short = smart_turn_features(tone)
    assert short.shape == (1, 80, 800) and short.dtype == np.float32
    # The second of tone fills the last 100 frames; the 7 s of padding in front are flat.
    assert np.ptp(short[0, :, :690]) == pytest.approx(0.0, abs=1e-6)
    assert short[0, :, 710:790].max() > short[0, :, :690].max() + 1.0
    long = smart_turn_features(np.concatenate([np.zeros(RATE * 10, np.float32), tone]))
    np.testing.assert_allclose(long, short, atol=1e-5)  # only the last 8 s count


@pytest.mark.skipif(not HAVE_SMART_TURN, reason="pipecat-ai (Smart Turn v3) not installed")
async def test_real_smart_turn_bridges_a_mid_sentence_pause_and_ends_the_sentence_early() -> None:
    speech, _ = paused("my policy number is, four five six", 800)
    pcm = silence(500) + speech + silence(2500)
    with_model = await run(pcm, VADSettings(turn_model="smart_turn", stop_ms=200))
    (end,) = turn_ends(with_model)  # one turn: the pause was not cut
    assert end.reason == "model" and end.at_ms == stops(with_model)[-1] + 250
    silence_only = await run(pcm, VADSettings(stop_ms=200, silence_ms=600))
    assert len(turn_ends(silence_only)) == 2  # the same pause cuts the turn without the model
