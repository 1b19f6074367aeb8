"""The audio processors in a graph: resample, VAD + endpointing, barge-in."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import CallContext, Graph, run_call
from pipeline.errors import ConfigError
from pipeline.frames import (
    AudioFormat,
    BotStartedSpeaking,
    BotStoppedSpeaking,
    FlushStart,
    FlushStop,
    Frame,
    InputAudio,
    OutputAudio,
    ResponseEnd,
    TurnEnd,
    TurnStart,
    UserStartedSpeaking,
    UserStoppedSpeaking,
)
from pipeline.testing import Collector, Feeder, run_processor
from processors.audio.bargein_node import BargeInProcessor, BargeInSettings
from processors.audio.resample_node import ResampleProcessor, ResampleSettings
from processors.audio.vad_node import VADProcessor, VADSettings
from tests.processors.stt.speech import frames, silence, utterance

RATE = 16000


def audio_frames(pcm: bytes) -> list[Frame]:
    return [AudioFormat(RATE), *(InputAudio(chunk) for chunk in frames(pcm))]


async def test_vad_marks_one_turn_with_start_before_and_end_after_its_audio() -> None:
    pcm = silence(500) + utterance("I want to file a claim for my car accident", pad_ms=0) + silence(1500)
    ctx = CallContext()
    out, result = await run_processor(VADProcessor(VADSettings(silence_ms=600)), audio_frames(pcm), ctx=ctx)
    assert result.reason == "eos"
    starts = [e for e in out.events if isinstance(e, UserStartedSpeaking)]
    stops = [e for e in out.events if isinstance(e, UserStoppedSpeaking)]
    assert len(starts) >= 1 and starts[0].turn == 1 and 480 <= starts[0].at_ms <= 620
    assert stops and stops[-1].turn == 1
    # The in-band frames sit exactly where the decisions fell on the audio clock.
    seq = [f for f in out.seen if isinstance(f, (InputAudio, TurnStart, TurnEnd))]
    i_start = next(i for i, f in enumerate(seq) if isinstance(f, TurnStart))
    i_end = next(i for i, f in enumerate(seq) if isinstance(f, TurnEnd))
    start, end = seq[i_start], seq[i_end]
    assert isinstance(start, TurnStart) and isinstance(end, TurnEnd)
    assert start.turn == end.turn == 1 and ctx.turn == 1
    assert start.at_ms == starts[0].at_ms
    # Confirmed by the frame that completes the 200 ms start window (onset frame + 9 more):
    # TurnStart sits right before that frame, and says where it sits on the audio clock.
    assert i_start * 20 == start.stream_ms == start.at_ms + 200 - 20
    assert end.at_ms == stops[-1].at_ms + 600 and end.reason == "silence"
    assert (i_end - 1) * 20 >= end.at_ms > (i_end - 2) * 20  # pushed after the frame that reached the deadline
    assert sum(isinstance(f, InputAudio) for f in seq) == -(-len(pcm) // 640)  # all audio passed through


async def test_silence_only_call_opens_no_turn_and_a_hang_up_mid_turn_closes_it() -> None:
    out, _ = await run_processor(VADProcessor(), audio_frames(silence(2000)))
    assert not [f for f in out.seen if isinstance(f, (TurnStart, TurnEnd, UserStartedSpeaking))]
    pcm = silence(300) + utterance("yes please transfer me to an agent", pad_ms=0)  # no trailing silence
    out, _ = await run_processor(VADProcessor(), audio_frames(pcm))
    ends = [f for f in out.controls if isinstance(f, TurnEnd)]
    assert len(ends) == 1 and ends[0].turn == 1


async def test_vad_rejects_bad_audio_without_stopping() -> None:
    frames_ = [AudioFormat(RATE), InputAudio(b"\x00" * 641), InputAudio(b"\x00" * 640), AudioFormat(11025)]
    out, result = await run_processor(VADProcessor(name="vad"), frames_)
    assert result.reason == "eos"
    assert [type(f) for f in out.frames] == [InputAudio]
    messages = [e.message for e in result.errors]
    assert "641 bytes is not whole PCM16 samples" in messages[0]
    assert "VAD needs one of [8000, 16000, 32000, 48000] Hz, got 11025" in messages[1]


async def test_resample_rewrites_the_format_and_keeps_duration() -> None:
    pcm = (np.sin(np.arange(8000 * 1) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16).tobytes()
    frames_ = [AudioFormat(8000), *(InputAudio(c) for c in frames(pcm, 320))]
    node = ResampleProcessor(ResampleSettings(rate=16000))
    out, _ = await run_processor(node, frames_)
    fmt = [f for f in out.controls if isinstance(f, AudioFormat)]
    assert fmt == [AudioFormat(16000)]
    total = sum(len(f.pcm) for f in out.frames if isinstance(f, InputAudio))
    assert node.resampler is not None and 0 < node.resampler.max_delay_ms < 80
    held_back = 32000 - total  # 1 s at 16 kHz, less what the LQ filter still holds
    assert 0 <= held_back <= (node.resampler.max_delay_ms + 1) * 32


async def test_output_resampler_releases_its_tail_at_response_end() -> None:
    pcm = (np.ones(2205) * 1000).astype(np.int16).tobytes()  # 100 ms at 22.05 kHz
    frames_ = [AudioFormat(22050, stream="out"), OutputAudio(pcm, turn=1), ResponseEnd(turn=1)]
    out, _ = await run_processor(ResampleProcessor(ResampleSettings(rate=16000, stream="out")), frames_)
    total = sum(len(f.pcm) for f in out.frames if isinstance(f, OutputAudio))
    assert abs(total - 3200) <= 4  # all 100 ms arrive, tail included
    assert [f for f in out.controls if isinstance(f, AudioFormat)] == [AudioFormat(16000, stream="out")]


async def test_output_resampler_drops_the_interrupted_answers_tail_at_flush_stop() -> None:
    pcm = (np.ones(2205) * 1000).astype(np.int16).tobytes()  # 100 ms at 22.05 kHz
    frames_ = [AudioFormat(22050, stream="out"), OutputAudio(pcm, turn=1), FlushStop(turn=1),
               OutputAudio(pcm, turn=2), ResponseEnd(turn=2)]
    out, _ = await run_processor(ResampleProcessor(ResampleSettings(rate=16000, stream="out")), frames_)
    second = sum(len(f.pcm) for f in out.frames if isinstance(f, OutputAudio) and f.turn == 2)
    # Without the reset, turn 1's held-back samples would come out at the head of turn 2.
    assert abs(second - 3200) <= 4


async def test_a_resampler_of_one_direction_consumes_only_that_directions_audio() -> None:
    node = ResampleProcessor(ResampleSettings(rate=16000, stream="out"))
    assert node.consumes == (OutputAudio,)
    caller_audio = InputAudio(bytes(320))  # 10 ms at 16 kHz, no caller AudioFormat seen
    out, result = await run_processor(node, [AudioFormat(8000, stream="out"), caller_audio])
    assert out.frames == [caller_audio] and not result.errors  # passed through untouched
    graph = Graph("mismatch")
    graph.chain(Feeder([], name="src"), ResampleProcessor(ResampleSettings(stream="out"), name="r"), Collector())
    graph.nodes["src"].produces = (InputAudio,)
    with pytest.raises(ConfigError, match="'r' consumes OutputAudio"):
        graph.validate()


class _Bot(Feeder):
    """Caller audio on a 20 ms clock, with the bot speaking over a window of it."""

    def __init__(self, pcm: bytes, bot_from: int, bot_to: int, *, interruptible: bool = True) -> None:
        super().__init__(name="line")
        self.pcm, self.bot_from, self.bot_to, self.interruptible = pcm, bot_from, bot_to, interruptible

    async def run(self) -> None:
        await self.push(AudioFormat(RATE))
        for i, chunk in enumerate(frames(self.pcm)):
            if i * 20 == self.bot_from:
                self.emit(BotStartedSpeaking(turn=1, interruptible=self.interruptible))
            if i * 20 == self.bot_to:
                self.emit(BotStoppedSpeaking(turn=1))
            await self.push(InputAudio(chunk))


async def _barge(pcm: bytes, bot_from: int, bot_to: int, **kw: bool) -> tuple[Collector, BargeInProcessor]:
    barge = BargeInProcessor(BargeInSettings(min_speech_ms=200))
    sink = Collector()
    graph = Graph()
    graph.chain(_Bot(pcm, bot_from, bot_to, **kw), VADProcessor(), barge, sink)
    await run_call(graph, timeout=10)
    return sink, barge


async def test_barge_in_fires_once_within_the_start_window_while_the_bot_speaks() -> None:
    pcm = silence(1000) + utterance("yes please transfer me to an agent", pad_ms=0) + silence(800)
    sink, barge = await _barge(pcm, bot_from=400, bot_to=4000)
    assert len(barge.interrupts) == 1
    decision = barge.interrupts[0]
    assert decision.turn == 1
    assert decision.at_ms - decision.speech_started_at_ms == 200  # exactly one start window
    flushes = [e for e in sink.events if isinstance(e, FlushStart)]
    assert flushes == [FlushStart(turn=1)]
    assert [f.turn for f in sink.controls if isinstance(f, FlushStop)] == [1]


async def test_no_barge_in_when_the_bot_is_silent_or_uninterruptible_or_for_a_cough() -> None:
    speech = silence(1000) + utterance("yes please transfer me to an agent", pad_ms=0) + silence(800)
    _, barge = await _barge(speech, bot_from=0, bot_to=600)  # the bot finished before the caller spoke
    assert barge.interrupts == []
    _, barge = await _barge(speech, bot_from=400, bot_to=4000, interruptible=False)
    assert barge.interrupts == []
    cough = (np.random.default_rng(1).normal(0, 6000, RATE * 120 // 1000)).astype(np.int16).tobytes()
    _, barge = await _barge(silence(1000) + cough + silence(1000), bot_from=400, bot_to=2000)
    assert barge.interrupts == []
