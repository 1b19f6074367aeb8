"""MediaDecoder on literal ACS messages: each kind in both casings, the format state, and
every kind of bad input giving a ProtocolError that names what was wrong."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from pipeline.errors import ProtocolError
from transports.acs import (
    MAX_MESSAGE_CHARS,
    AudioChunk,
    AudioMetadata,
    Dtmf,
    FormatChanged,
    MediaDecoder,
    UnknownKind,
)

# The documented examples (audio-streaming-quickstart), verbatim apart from the data.
META_16K = '{"kind":"AudioMetadata","audioMetadata":{"subscriptionId":"89e8cb59-b991-48b0-b154-1db84f16a077","encoding":"PCM","sampleRate":16000,"channels":1,"length":640}}'
META_24K = '{"kind":"AudioMetadata","audioMetadata":{"subscriptionId":"89e8cb59-b991-48b0-b154-1db84f16a077","encoding":"PCM","sampleRate":24000,"channels":1,"length":960}}'
PCM = bytes(range(256)) * 2 + bytes(128)  # 640 bytes: 20 ms at 16 kHz, every byte value
B64 = base64.b64encode(PCM).decode()
AUDIO = '{"kind":"AudioData","audioData":{"timestamp":"2024-11-15T19:16:12.925Z","participantRawID":"8:acs:3d20e1de-0f28-41c5","data":"<B64>","silent":false}}'.replace("<B64>", B64)
WHEN = datetime(2024, 11, 15, 19, 16, 12, 925000, tzinfo=UTC)


def audio_message(pcm: bytes) -> str:
    return '{"kind":"AudioData","audioData":{"data":"' + base64.b64encode(pcm).decode() + '"}}'


def started(meta: str = META_16K) -> MediaDecoder:
    decoder = MediaDecoder()
    decoder.decode(meta)
    return decoder


def test_metadata_camel_case() -> None:
    decoder = MediaDecoder()
    assert decoder.format is None
    event = decoder.decode(META_16K)
    assert event == AudioMetadata(
        sample_rate=16000, channels=1, encoding="PCM", subscription_id="89e8cb59-b991-48b0-b154-1db84f16a077", length=640
    )
    assert decoder.format == event


def test_metadata_pascal_case() -> None:
    event = MediaDecoder().decode(
        '{"Kind":"AudioMetadata","AudioMetadata":{"SubscriptionId":"s-1","Encoding":"PCM","SampleRate":24000,"Channels":1,"Length":960}}'
    )
    assert event == AudioMetadata(sample_rate=24000, channels=1, encoding="PCM", subscription_id="s-1", length=960)


def test_metadata_without_descriptive_fields() -> None:
    # The JS SDK no longer reads length; subscriptionId only names the subscription.
    event = MediaDecoder().decode('{"kind":"AudioMetadata","audioMetadata":{"encoding":"pcm","sampleRate":16000,"channels":1}}')
    assert event == AudioMetadata(sample_rate=16000, encoding="pcm", subscription_id=None, length=None)


def test_audio_camel_case() -> None:
    event = started().decode(AUDIO)
    assert event == AudioChunk(pcm=PCM, sample_rate=16000, timestamp=WHEN, participant="8:acs:3d20e1de-0f28-41c5", silent=False)
    assert isinstance(event, AudioChunk) and event.duration_ms == 20.0


def test_audio_pascal_case_and_silent() -> None:
    silence = bytes(960)
    message = '{"Kind":"AudioData","AudioData":{"Timestamp":"2024-11-15T19:16:12.9250000+00:00","ParticipantRawId":"4:+15551234567","Data":"<B64>","Silent":true}}'.replace("<B64>", base64.b64encode(silence).decode())
    event = started(META_24K).decode(message)
    assert event == AudioChunk(pcm=silence, sample_rate=24000, timestamp=WHEN, participant="4:+15551234567", silent=True)
    assert isinstance(event, AudioChunk) and event.duration_ms == 20.0


def test_audio_with_only_data() -> None:
    event = started().decode('{"kind":"AudioData","audioData":{"data":"AQACAA=="}}')
    assert event == AudioChunk(pcm=b"\x01\x00\x02\x00", sample_rate=16000, timestamp=None, participant=None, silent=False)


def test_audio_null_and_empty_descriptive_fields_count_as_absent() -> None:
    event = started().decode('{"kind":"AudioData","audioData":{"data":"AQA=","timestamp":null,"participantRawID":"","silent":null}}')
    assert event == AudioChunk(pcm=b"\x01\x00", sample_rate=16000)


@pytest.mark.parametrize(
    ("message", "digits"),
    [
        ('{"kind":"DtmfData","dtmfData":{"data":"3"}}', "3"),
        ('{"Kind":"DtmfData","DtmfData":{"Data":"#"}}', "#"),
        ('{"kind":"DtmfData","dtmfData":{"data":"12*a"}}', "12*A"),
        ('{"kind":"DtmfData","dtmfData":{"data":"pound"}}', "#"),
        ('{"kind":"DtmfData","dtmfData":{"data":"Asterisk"}}', "*"),
    ],
)
def test_dtmf(message: str, digits: str) -> None:
    assert MediaDecoder().decode(message) == Dtmf(digits=digits)


def test_dtmf_with_timestamp_and_participant() -> None:
    event = MediaDecoder().decode(
        '{"kind":"DtmfData","dtmfData":{"data":"7","timestamp":"2024-11-15T19:16:12.925Z","participantRawID":"4:+15551234567"}}'
    )
    assert event == Dtmf(digits="7", timestamp=WHEN, participant="4:+15551234567")


def test_kind_value_in_any_case() -> None:
    event = started().decode('{"kind":"audioData","audioData":{"data":"AQA="}}')
    assert event == AudioChunk(pcm=b"\x01\x00", sample_rate=16000)


def test_unknown_kind_is_reported_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    decoder = started()
    message = '{"kind":"TranscriptionData","transcriptionData":{"text":"hello"}}'
    assert decoder.decode(message) == UnknownKind("TranscriptionData")
    assert decoder.decode(message) == UnknownKind("TranscriptionData")
    warnings = [r for r in caplog.records if "unknown kind" in r.getMessage()]
    assert len(warnings) == 1  # once per kind, not once per message
    assert decoder.decode(AUDIO) == AudioChunk(pcm=PCM, sample_rate=16000, timestamp=WHEN, participant="8:acs:3d20e1de-0f28-41c5")


def test_repeated_metadata_same_rate_is_not_a_change() -> None:
    decoder = started()
    again = decoder.decode(META_16K.replace("89e8cb59", "00000000"))
    assert isinstance(again, AudioMetadata) and again.subscription_id == "00000000-b991-48b0-b154-1db84f16a077"


def test_rate_change_mid_call_is_reported_and_adopted() -> None:
    decoder = started()
    assert isinstance(decoder.decode(AUDIO), AudioChunk)
    change = decoder.decode(META_24K)
    assert isinstance(change, FormatChanged)
    assert (change.old.sample_rate, change.new.sample_rate) == (16000, 24000)
    assert decoder.format == change.new
    chunk = decoder.decode(AUDIO)
    assert isinstance(chunk, AudioChunk)
    assert chunk.sample_rate == 24000 and chunk.duration_ms == pytest.approx(640 / 2 / 24)


def test_audio_before_metadata() -> None:
    with pytest.raises(ProtocolError, match="AudioData before a usable AudioMetadata: no AudioMetadata has been received yet"):
        MediaDecoder().decode(AUDIO)


def test_refused_metadata_withdraws_the_format_and_is_named_later() -> None:
    decoder = started()
    with pytest.raises(ProtocolError, match=r"audioMetadata.sampleRate: 8000 Hz is not supported"):
        decoder.decode(META_16K.replace("16000", "8000"))
    assert decoder.format is None
    with pytest.raises(ProtocolError, match=r"the last AudioMetadata was refused \(audioMetadata.sampleRate: 8000 Hz"):
        decoder.decode(AUDIO)
    # A good announcement restores the stream; it is not a "change" from the withdrawn one.
    assert isinstance(decoder.decode(META_24K), AudioMetadata)
    assert isinstance(decoder.decode(AUDIO), AudioChunk)


def test_a_refused_message_leaves_the_state_alone() -> None:
    decoder = started()
    with pytest.raises(ProtocolError):
        decoder.decode('{"kind":"AudioData","audioData":{"data":"AQ=="}}')
    assert decoder.format is not None and decoder.format.sample_rate == 16000
    assert isinstance(decoder.decode(AUDIO), AudioChunk)


BAD_METADATA = [
    ('"encoding":"PCM",', '"encoding":"OPUS",', r"audioMetadata.encoding: 'OPUS' is not supported"),
    ('"sampleRate":16000', '"sampleRate":"16000"', r"audioMetadata.sampleRate: expected an integer, got str '16000'"),
    ('"sampleRate":16000', '"sampleRate":16000.0', r"audioMetadata.sampleRate: expected an integer, got float 16000.0"),
    ('"sampleRate":16000', '"sampleRate":true', r"audioMetadata.sampleRate: expected an integer, got bool True"),
    ('"sampleRate":16000', '"sampleRate":48000', r"audioMetadata.sampleRate: 48000 Hz is not supported \(16000 or 24000\)"),
    ('"channels":1', '"channels":2', r"audioMetadata.channels: 2 is not supported \(mono only\)"),
    ('"length":640', '"length":641', r"audioMetadata.length: 641 is not a positive whole number of samples"),
    ('"length":640', '"length":0', r"audioMetadata.length: 0 is not a positive whole number of samples"),
    ('"encoding":"PCM",', '"encoding":"",', r"audioMetadata.encoding: empty"),
    ('"encoding":"PCM",', "", r"audioMetadata.encoding: missing"),
    (',"channels":1', "", r"audioMetadata.channels: missing"),
    ('"sampleRate":16000', '"sampleRate":null', r"audioMetadata.sampleRate: missing"),
    ('"subscriptionId":"89e8cb59-b991-48b0-b154-1db84f16a077"', '"subscriptionId":7', r"audioMetadata.subscriptionId: expected a string, got int 7"),
    ('"channels":1', '"channels":1,"Channels":2', r"audioMetadata.Channels: given twice, as 'channels' and 'Channels'"),
]


@pytest.mark.parametrize(("old", "new", "error"), BAD_METADATA)
def test_bad_metadata(old: str, new: str, error: str) -> None:
    message = META_16K.replace(old, new, 1)
    assert message != META_16K
    with pytest.raises(ProtocolError, match=error):
        MediaDecoder().decode(message)


BAD_AUDIO = [
    ('{"kind":"AudioData","audioData":{"data":"AQ=="}}', r"audioData.data: 1 bytes is not whole 16-bit samples"),
    ('{"kind":"AudioData","audioData":{"data":"AQID"}}', r"audioData.data: 3 bytes is not whole 16-bit samples"),
    ('{"kind":"AudioData","audioData":{"data":"not base64!"}}', r"audioData.data: not valid base64"),
    ('{"kind":"AudioData","audioData":{"data":"AQA"}}', r"audioData.data: not valid base64"),
    ('{"kind":"AudioData","audioData":{"data":"AQ\\u00e9A"}}', r"audioData.data: not valid base64"),
    ('{"kind":"AudioData","audioData":{"data":""}}', r"audioData.data: empty"),
    ('{"kind":"AudioData","audioData":{"silent":true}}', r"audioData.data: missing"),
    ('{"kind":"AudioData","audioData":{"data":[1,2]}}', r"audioData.data: expected a string, got list"),
    ('{"kind":"AudioData","audioData":{"data":"AQA=","silent":"false"}}', r"audioData.silent: expected true or false, got str 'false'"),
    ('{"kind":"AudioData","audioData":{"data":"AQA=","timestamp":"yesterday"}}', r"audioData.timestamp: not an ISO 8601 timestamp: 'yesterday'"),
    ('{"kind":"AudioData","audioData":{"data":"AQA=","timestamp":"2024-11-15T19:16:12"}}', r"audioData.timestamp: timestamp has no time zone"),
    ('{"kind":"AudioData","audioData":{"data":"AQA=","timestamp":1731698172}}', r"audioData.timestamp: expected a string, got int"),
    ('{"kind":"AudioData","audioData":{"data":"AQA=","participantRawID":{"id":1}}}', r"audioData.participantRawID: expected a string, got dict"),
    ('{"kind":"AudioData"}', r"audioData: missing"),
    ('{"kind":"AudioData","audioData":null}', r"audioData: missing"),
    ('{"kind":"AudioData","audioData":"AQA="}', r"audioData: expected an object, got str"),
    ('{"kind":"AudioData","audioData":{"data":"AQA=","Data":"AQA="}}', r"audioData.Data: given twice, as 'data' and 'Data'"),
]


@pytest.mark.parametrize(("message", "error"), BAD_AUDIO)
def test_bad_audio(message: str, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        started().decode(message)


def test_audio_over_the_chunk_bound() -> None:
    decoder = started()
    # One second at 16 kHz is the most one message may carry; one sample more is refused.
    second = bytes(32000)
    chunk = decoder.decode(audio_message(second))
    assert isinstance(chunk, AudioChunk) and len(chunk.pcm) == 32000 and chunk.duration_ms == 1000.0
    with pytest.raises(ProtocolError, match=r"audioData.data: about 32\d\d\d bytes, over the 32000-byte bound"):
        decoder.decode(audio_message(second + bytes(4)))


BAD_DTMF = [
    ('{"kind":"DtmfData","dtmfData":{"data":"x"}}', r"dtmfData.data: 'x' is not keypad digits \(0-9 \* # A-D\): 'X'"),
    ('{"kind":"DtmfData","dtmfData":{"data":"1 2"}}', r"dtmfData.data: '1 2' is not keypad digits"),
    ('{"kind":"DtmfData","dtmfData":{"data":""}}', r"dtmfData.data: empty"),
    ('{"kind":"DtmfData","dtmfData":{"data":5}}', r"dtmfData.data: expected a string, got int 5"),
    ('{"kind":"DtmfData","dtmfData":{}}', r"dtmfData.data: missing"),
    ('{"kind":"DtmfData"}', r"dtmfData: missing"),
]


@pytest.mark.parametrize(("message", "error"), BAD_DTMF)
def test_bad_dtmf(message: str, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        MediaDecoder().decode(message)


BAD_ENVELOPE = [
    ("", r"not JSON: Expecting value at line 1 column 1"),
    ('{"kind":"AudioData",', r"not JSON: Expecting property name enclosed in double quotes at line 1 column 21"),
    ("kind=AudioData", r"not JSON: Expecting value"),
    ("[1,2,3]", r"expected a JSON object, got list"),
    ('"AudioData"', r"expected a JSON object, got str"),
    ("null", r"expected a JSON object, got null"),
    ("{}", r"kind: missing"),
    ('{"kind":""}', r"kind: empty"),
    ('{"kind":7}', r"kind: expected a string, got int 7"),
    ('{"kind":"AudioData","Kind":"DtmfData"}', r"Kind: given twice, as 'kind' and 'Kind'"),
    ("[" * 100_000, r"not JSON we can read: nested too deeply"),
]


@pytest.mark.parametrize(("message", "error"), BAD_ENVELOPE)
def test_bad_envelope(message: str, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        MediaDecoder().decode(message)


def test_binary_frame_is_refused() -> None:
    decoder = started()
    with pytest.raises(ProtocolError, match=r"binary frame of \d+ bytes: ACS media messages are JSON text frames"):
        decoder.decode(AUDIO.encode())
    with pytest.raises(ProtocolError, match=r"binary frame of 640 bytes"):
        decoder.decode(PCM)


def test_ten_megabyte_message_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = started()
    parsed: list[str] = []
    real_loads = json.loads
    monkeypatch.setattr(json, "loads", lambda s: parsed.append(s) or real_loads(s))
    message = '{"kind":"AudioData","audioData":{"data":"%s"}}' % ("A" * 10_000_000)
    with pytest.raises(ProtocolError, match=rf"message of {len(message)} characters is over the {MAX_MESSAGE_CHARS}-character bound"):
        decoder.decode(message)
    assert parsed == []  # json.loads never saw it


def test_errors_are_value_errors_and_the_decoder_keeps_going() -> None:
    """What the adapter does: log each refused message and read on; good ones still decode."""
    decoder = MediaDecoder()
    stream = ["garbage", AUDIO, META_16K, "[]", AUDIO, '{"kind":"DtmfData","dtmfData":{"data":"9"}}', b"\x00\x01", AUDIO]
    decoded: list[object] = []
    errors: list[str] = []
    for message in stream:
        try:
            decoded.append(decoder.decode(message))
        except ValueError as exc:  # ProtocolError is a ValueError
            errors.append(str(exc).split(":")[0])
    assert [type(e).__name__ for e in decoded] == ["AudioMetadata", "AudioChunk", "Dtmf", "AudioChunk"]
    assert errors == ["not JSON", "AudioData before a usable AudioMetadata", "expected a JSON object, got list", "binary frame of 2 bytes"]


def test_audio_spelled_as_acs_sends_it_decodes_like_any_other_spelling() -> None:
    """The decoder reads ACS's own spelling on a fast path: same result as the general one."""
    pascal = AUDIO.replace('"kind"', '"Kind"').replace('"audioData"', '"AudioData"').replace(
        '"timestamp"', '"Timestamp"').replace('"participantRawID"', '"ParticipantRawId"').replace(
        '"data"', '"Data"').replace('"silent"', '"Silent"')
    fast, general = started().decode(AUDIO), started().decode(pascal)
    assert fast == general == AudioChunk(pcm=PCM, sample_rate=16000, timestamp=WHEN,
                                         participant="8:acs:3d20e1de-0f28-41c5", silent=False)


@pytest.mark.parametrize(("change", "named"), [
    (('"silent":false', '"silent":"no"'), "audioData.silent"),
    (('"2024-11-15T19:16:12.925Z"', '"2024-11-15T19:16:12.925"'), "audioData.timestamp"),
    (('"data":"', '"data":"!'), "audioData.data"),
    (('"silent":false', '"silent":false,"Data":"AAAA"'), "audioData.Data"),
])
def test_bad_audio_in_acs_spelling_is_still_refused_by_name(change: tuple[str, str], named: str) -> None:
    with pytest.raises(ProtocolError, match=named.replace(".", r"\.")):
        started().decode(AUDIO.replace(*change))
