"""The codec against the official Python SDK, azure-communication-callautomation.

The Python SDK (1.6.0) has no streaming-data models or parser: what it does define about
the media stream is the control-plane side, the audio formats a call is answered with
and the DTMF tone names. The codec must agree with both."""

from __future__ import annotations

import re

import pytest
from azure.communication.callautomation import (
    AudioFormat,
    DtmfTone,
    MediaStreamingAudioChannelType,
    MediaStreamingContentType,
    MediaStreamingOptions,
    StreamingTransportType,
)

from transports.acs import AUDIO_FORMATS, SUPPORTED_RATES, Dtmf, MediaDecoder, MediaEncoder


def test_supported_rates_are_exactly_the_sdk_audio_formats() -> None:
    sdk_rates = {}
    for fmt in AudioFormat:
        match = re.fullmatch(r"pcm(\d+)KMono", fmt.value)
        assert match, f"SDK AudioFormat {fmt.value!r} is not PCM mono: the codec must learn it"
        sdk_rates[int(match.group(1)) * 1000] = fmt.value
    assert sdk_rates == AUDIO_FORMATS
    assert set(SUPPORTED_RATES) == set(sdk_rates)


@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_answering_at_our_rate_asks_the_service_for_that_format(rate: int) -> None:
    options = MediaStreamingOptions(
        transport_url="wss://bot.example/acs/media?token=t",
        transport_type=StreamingTransportType.WEBSOCKET,
        content_type=MediaStreamingContentType.AUDIO,
        audio_channel_type=MediaStreamingAudioChannelType.MIXED,
        start_media_streaming=True,
        enable_bidirectional=True,
        audio_format=AudioFormat(AUDIO_FORMATS[rate]),
        enable_dtmf_tones=True,
    )
    body = options._to_generated().serialize()  # the REST body the SDK sends
    assert body["audioFormat"] == AUDIO_FORMATS[rate]
    assert body["enableBidirectional"] is True
    # ... and the metadata ACS then announces is one the decoder and encoder accept.
    decoder = MediaDecoder()
    meta = decoder.decode('{"kind":"AudioMetadata","audioMetadata":{"encoding":"PCM","sampleRate":' + str(rate) + ',"channels":1}}')
    assert decoder.format == meta
    assert MediaEncoder(rate).sample_rate == rate


KEYS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
        "eight": "8", "nine": "9", "a": "A", "b": "B", "c": "C", "d": "D", "pound": "#", "asterisk": "*"}  # fmt: skip


@pytest.mark.parametrize("tone", list(DtmfTone), ids=lambda t: t.value)
def test_every_sdk_dtmf_tone_decodes_to_its_key(tone: DtmfTone) -> None:
    assert set(KEYS) == {t.value for t in DtmfTone}
    event = MediaDecoder().decode('{"kind":"DtmfData","dtmfData":{"data":"' + tone.value + '"}}')
    assert event == Dtmf(digits=KEYS[tone.value])
    # the key itself, as the docs' example sends it, decodes the same
    assert MediaDecoder().decode('{"kind":"DtmfData","dtmfData":{"data":"' + KEYS[tone.value] + '"}}') == event
