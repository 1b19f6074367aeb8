"""MediaEncoder: the documented outbound shapes byte for byte, in both casings, and the
size checks on our own audio."""

from __future__ import annotations

import base64
import json

import pytest

from pipeline.errors import ConfigError, FrameError
from transports.acs import AudioChunk, MediaDecoder, MediaEncoder

FRAME_16K = bytes(range(256)) * 2 + bytes(128)  # 20 ms at 16 kHz
FRAME_24K = bytes(range(240)) * 4  # 20 ms at 24 kHz
B64_16K = base64.b64encode(FRAME_16K).decode()


def test_pascal_audio_is_the_python_docs_message() -> None:
    message = MediaEncoder(16000).audio(FRAME_16K)
    # audio-streaming-quickstart, Python tab: {"Kind": "AudioData", "AudioData": {"Data": buffer}, "StopAudio": None}
    assert json.loads(message) == {"Kind": "AudioData", "AudioData": {"Data": B64_16K}, "StopAudio": None}
    assert message == '{"Kind":"AudioData","AudioData":{"Data":"' + B64_16K + '"},"StopAudio":null}'
    assert base64.b64decode(json.loads(message)["AudioData"]["Data"]) == FRAME_16K


def test_pascal_stop_audio_is_the_python_docs_message() -> None:
    message = MediaEncoder(16000).stop_audio()
    assert json.loads(message) == {"Kind": "StopAudio", "AudioData": None, "StopAudio": {}}


def test_camel_is_what_the_js_sdk_sends() -> None:
    # OutStreamingData.getStreamingDataForOutbound / getStopAudioForOutbound, undefined fields dropped by JSON.stringify
    encoder = MediaEncoder(24000, casing="camel")
    b64 = base64.b64encode(FRAME_24K).decode()
    assert json.loads(encoder.audio(FRAME_24K)) == {"kind": "audioData", "audioData": {"data": b64, "isSilent": False}, "stopAudio": {}}
    assert json.loads(encoder.stop_audio()) == {"kind": "stopAudio", "stopAudio": {}}


@pytest.mark.parametrize("casing", ["pascal", "camel"])
def test_our_decoder_reads_our_audio_in_either_casing(casing: str) -> None:
    """The outbound envelope is the inbound one with other casings; the case-blind reader takes both."""
    decoder = MediaDecoder()
    decoder.decode('{"kind":"AudioMetadata","audioMetadata":{"encoding":"PCM","sampleRate":24000,"channels":1}}')
    encoder = MediaEncoder(24000, casing="camel" if casing == "camel" else "pascal")
    assert decoder.decode(encoder.audio(FRAME_24K)) == AudioChunk(pcm=FRAME_24K, sample_rate=24000)


@pytest.mark.parametrize(("rate", "size"), [(16000, 2), (16000, 640), (16000, 32000), (24000, 960), (24000, 48000)])
def test_whole_samples_up_to_one_second(rate: int, size: int) -> None:
    pcm = bytes(range(256)) * (size // 256) + bytes(size % 256)
    message = MediaEncoder(rate).audio(pcm)
    assert base64.b64decode(json.loads(message)["AudioData"]["Data"]) == pcm


@pytest.mark.parametrize(
    ("rate", "size", "error"),
    [
        (16000, 639, r"ACS outbound audio: 639 bytes is not whole 16-bit samples"),
        (16000, 1, r"ACS outbound audio: 1 bytes is not whole 16-bit samples"),
        (16000, 0, r"ACS outbound audio: 0 bytes; expected 2 to 32000 at 16000 Hz"),
        (16000, 32002, r"ACS outbound audio: 32002 bytes; expected 2 to 32000 at 16000 Hz"),
        (24000, 48002, r"ACS outbound audio: 48002 bytes; expected 2 to 48000 at 24000 Hz"),
    ],
)
def test_bad_outbound_audio(rate: int, size: int, error: str) -> None:
    with pytest.raises(FrameError, match=error):
        MediaEncoder(rate).audio(bytes(size))


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError, match=r"ACS media sample rate 8000 Hz is not supported \(16000 or 24000\)"):
        MediaEncoder(8000)
    with pytest.raises(ConfigError, match=r"ACS media casing 'snake' is not one of 'pascal', 'camel'"):
        MediaEncoder(16000, casing="snake")  # type: ignore[arg-type]
