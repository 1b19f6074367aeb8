"""read_wav: any rate, 1-8 channels, integer and float samples; clear errors for the rest."""

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import FrameError
from transports.local.speech import SpeechCaller, SpeechCallerSettings
from transports.local.wav import read_wav, write_wav


def tone(rate: int, seconds: float, hz: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * hz * t)


def write_pcm16(path: Path, frames: np.ndarray, rate: int) -> None:
    """frames: float in [-1, 1), shape (n,) or (n, channels), written with the stdlib."""
    channels = 1 if frames.ndim == 1 else frames.shape[1]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.round(frames * 32767).astype("<i2").tobytes())


def write_riff(path: Path, *, tag: int, channels: int, rate: int, bits: int, body: bytes,
               extensible: bool = False) -> None:
    """A WAV file by hand: float and WAVE_FORMAT_EXTENSIBLE, which the stdlib cannot write."""
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * align, align, bits)
    if extensible:  # cbSize, valid bits, channel mask, then the sub-format GUID (tag first)
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + bytes.fromhex("000000001000800000aa00389b71")
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", 3) + b"abc\x00"
    chunks += b"data" + struct.pack("<I", len(body)) + body
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)


def dominant_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def test_a_44k1_stereo_file_is_mixed_down_and_converted_to_the_line_rate(tmp_path: Path) -> None:
    left, right = tone(44100, 1.0, 440.0, 0.5), tone(44100, 1.0, 440.0, 0.3)
    path = tmp_path / "stereo44k.wav"
    write_pcm16(path, np.stack([left, right], axis=1), 44100)

    native, rate = read_wav(path)
    assert rate == 44100 and len(native) == 2 * 44100
    mixed = np.frombuffer(native, dtype=np.int16)
    expected = np.round((np.round(left * 32767) + np.round(right * 32767)) / 2)
    assert np.max(np.abs(mixed - expected)) <= 1  # the mean of both channels

    pcm, rate = read_wav(path, 16000)
    assert rate == 16000 and len(pcm) == 2 * 16000  # one second at 16 kHz
    assert abs(dominant_hz(pcm, 16000) - 440.0) <= 1.0
    peak = np.max(np.abs(np.frombuffer(pcm, dtype=np.int16)[1000:-1000])) / 32768
    assert 0.38 < peak < 0.42  # (0.5 + 0.3) / 2: no gain change through the resampler


async def test_the_speech_caller_plays_a_44k1_stereo_wav_on_a_16k_line(tmp_path: Path) -> None:
    path = tmp_path / "caller.wav"
    write_pcm16(path, np.stack([tone(44100, 0.5, 300.0, 0.4)] * 2, axis=1), 44100)
    caller = SpeechCaller(SpeechCallerSettings(sample_rate=16000))
    caller.configure_call(wav=path)
    await caller.setup()  # used to fail: "Resampler: unsupported in_rate 44100 Hz"
    (said,) = caller.said
    utt = said.utterance
    assert utt.text == "<caller.wav>" and len(utt.pcm) == 2 * 8000  # 0.5 s at 16 kHz
    assert abs(dominant_hz(utt.pcm, 16000) - 300.0) <= 2.0


@pytest.mark.parametrize(
    ("tag", "bits", "extensible", "encode"),
    [
        (1, 8, False, lambda x: np.round(x * 127 + 128).astype(np.uint8).tobytes()),
        (1, 24, True, lambda x: b"".join(int(v).to_bytes(3, "little", signed=True) for v in np.round(x * 8388607))),
        (1, 32, False, lambda x: np.round(x * 2147483647).astype("<i4").tobytes()),
        (3, 32, True, lambda x: x.astype("<f4").tobytes()),
        (3, 64, False, lambda x: x.astype("<f8").tobytes()),
    ],
)
def test_other_sample_formats_read_as_pcm16(tmp_path: Path, tag: int, bits: int, extensible: bool, encode) -> None:  # type: ignore[no-untyped-def]
    signal = tone(8000, 0.25, 500.0, 0.6)
    path = tmp_path / "x.wav"
    write_riff(path, tag=tag, channels=1, rate=8000, bits=bits, body=encode(signal), extensible=extensible)
    pcm, rate = read_wav(path)
    assert rate == 8000 and len(pcm) == 2 * len(signal)
    got = np.frombuffer(pcm, dtype=np.int16) / 32768
    tolerance = 1 / 100 if bits == 8 else 1 / 30000
    assert np.max(np.abs(got - signal)) < tolerance


def test_six_channels_are_averaged(tmp_path: Path) -> None:
    frames = np.stack([np.full(800, 0.1 * (c + 1)) for c in range(6)], axis=1)  # 0.1 .. 0.6
    path = tmp_path / "six.wav"
    write_pcm16(path, frames, 48000)
    pcm, _ = read_wav(path)
    assert set(np.frombuffer(pcm, dtype=np.int16).tolist()) == {round(0.35 * 32767)}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write_riff(p, tag=7, channels=1, rate=8000, bits=8, body=b"\xff" * 80), "mu-law WAV; only PCM"),
        (lambda p: write_riff(p, tag=1, channels=9, rate=8000, bits=16, body=b"\x00" * 36), "9 channels; 1 to 8"),
        (lambda p: write_riff(p, tag=1, channels=1, rate=8000, bits=12, body=b"\x00" * 36), "12-bit PCM WAV"),
        (lambda p: write_riff(p, tag=1, channels=1, rate=0, bits=16, body=b"\x00" * 36), "invalid sample rate 0"),
        (lambda p: p.write_bytes(b"RIFF\x04\x00\x00\x00WAVE"), "no valid 'fmt ' chunk"),
        (lambda p: p.write_bytes(b"ID3\x03 an mp3"), "not a readable WAV file"),
        (lambda p: p.mkdir(), "cannot read"),
    ],
)
def test_unsupported_files_are_clear_errors(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(FrameError, match=message) as info:
        read_wav(path, 16000)
    assert str(info.value).startswith(str(path))


def test_a_truncated_data_chunk_keeps_the_whole_frames_it_has(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    write_pcm16(path, np.stack([tone(8000, 0.1, 400.0, 0.5)] * 2, axis=1), 8000)
    path.write_bytes(path.read_bytes()[:-3])  # a recorder killed mid-write: 1 frame and a bit lost
    pcm, _ = read_wav(path)
    assert len(pcm) == 2 * (800 - 1)


def test_write_then_read_round_trips_pcm16_exactly(tmp_path: Path) -> None:
    pcm = np.arange(-32768, 32768, 7, dtype=np.int16).tobytes()
    write_wav(tmp_path / "r.wav", pcm, 22050)
    assert read_wav(tmp_path / "r.wav") == (pcm, 22050)
