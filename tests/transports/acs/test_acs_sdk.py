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


# --- the local ACS's callback events, read with the SDK's own event models ---------------------


async def test_every_callback_event_of_the_peer_is_an_sdk_event_model() -> None:
    """Each ``data`` the peer posts has only fields the SDK's generated model of that event
    type declares (camelCase keys), and deserializes into it with the values intact."""
    import asyncio
    import socket

    from azure.communication.callautomation._generated import models as generated

    from transports.acs.peer.calls import MediaOptions
    from transports.acs.peer.connect import MediaConnect
    from transports.acs.peer.signer import TokenSigner
    from transports.acs.peer.switchboard import Switchboard

    with socket.socket() as sock:  # nobody listens: deliveries are recorded, not delivered
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/acs/callbacks"
    connected = asyncio.Event()

    async def media(connect: MediaConnect) -> None:
        connect.connected()
        connected.set()
        await connect.hung_up.wait()

    board = Switchboard(TokenSigner(), "res-1", media=media, retry_delays=())
    try:
        ringing = board.ring()
        options = MediaOptions.parse({"transportType": "websocket", "transportUrl": "wss://bot/acs/media",
                                      "audioChannelType": "mixed", "startMediaStreaming": True})
        call = board.answer(incoming_call_context=ringing.incoming_call_context, callback_uri=dead, media=options,
                            operation_context="ctx")
        await board.connect(call)
        await asyncio.wait_for(connected.wait(), 10)
        board.start_recording(call.call_connection_id, callback_uri=None, paused=False)
        board.transfer(call.call_connection_id, target="4:+15550123", operation_context="xfer",
                       operation_callback_uri=None)
        await asyncio.wait_for(board.disconnected(call.call_connection_id), 10)
        await board.drain()
        posted = [d.event for d in board.poster.deliveries]
    finally:
        await board.aclose()
    kinds = [e["type"].rpartition(".")[2] for e in posted]
    assert kinds == ["CallConnected", "ParticipantsUpdated", "MediaStreamingStarted", "RecordingStateChanged",
                     "CallTransferAccepted", "RecordingStateChanged", "MediaStreamingStopped", "CallDisconnected"]
    for kind, event in zip(kinds, posted, strict=True):
        model_type = getattr(generated, kind)
        declared = {spec["key"] for spec in model_type._attribute_map.values()}
        assert set(event["data"]) <= declared, f"{kind}: {set(event['data']) - declared} not in the SDK model"
        model = model_type.deserialize(event["data"])
        assert model.call_connection_id == call.call_connection_id
        assert model.correlation_id == call.correlation_id and model.server_call_id == call.server_call_id
        if kind == "ParticipantsUpdated":
            assert model.sequence_number == 1
            assert [p.identifier.raw_id for p in model.participants] == ["4:+15550100", board.bot_id]
        if kind.startswith("MediaStreaming"):
            update = generated.MediaStreamingUpdate.deserialize(event["data"]["mediaStreamingUpdate"])
            assert update.media_streaming_status in ("mediaStreamingStarted", "mediaStreamingStopped")
        if kind == "CallTransferAccepted":
            assert (model.operation_context, model.transfer_target.raw_id) == ("xfer", "4:+15550123")
