"""SSML built for Azure AI Speech: hostile text stays text, bad voice settings are named."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from pipeline.errors import ConfigError
from processors.azure_speech.ssml import SSML_NS, SsmlError, Voice, build_ssml, parse_ssml, xml_text

JENNY = Voice(name="en-US-JennyNeural")

HOSTILE = [
    "x < 5 & y > 3",
    'She said "hi" and \'bye\'',
    "]]> <![CDATA[ oops ]]>",
    '</voice></speak><speak><voice name="en-US-GuyNeural">pwned',
    "<break time='10s'/> <audio src='http://evil/'/>",
    "&amp; &lt; &#x3C; &nosuch;",
    "<!-- comment --> <?pi x?>",
    "nul\x00 bell\x07 esc\x1b ok",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_is_said_as_written(text: str) -> None:
    ssml = build_ssml(text, JENNY)
    root = ET.fromstring(ssml)  # well-formed
    voices = [el for el in root.iter(f"{{{SSML_NS}}}voice")]
    assert [v.get("name") for v in voices] == ["en-US-JennyNeural"]
    assert len(list(root.iter())) == 2  # speak and voice: no element came from the text
    expected = "".join(ch for ch in text if ch >= " ")
    assert voices[0].text == expected
    assert parse_ssml(ssml).text == " ".join(expected.split())


def test_escaping_is_exact() -> None:
    assert xml_text('a<b>&"c"]]>') == 'a&lt;b&gt;&amp;"c"]]&gt;'
    assert xml_text("\ud800lone\ufffe\uffff") == "lone"


def test_voice_style_rate_pitch_lang() -> None:
    voice = Voice(name="en-GB-SoniaNeural", style="cheerful", rate="+10%", pitch="-2st")
    ssml = build_ssml("Hello.", voice)
    assert ssml == (
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xmlns:mstts="http://www.w3.org/2001/mstts"'
        ' xml:lang="en-GB"><voice name="en-GB-SoniaNeural"><mstts:express-as style="cheerful">'
        '<prosody rate="+10%" pitch="-2st">Hello.</prosody></mstts:express-as></voice></speak>'
    )
    request = parse_ssml(ssml)
    assert (request.lang, request.voices, request.text) == ("en-GB", ("en-GB-SoniaNeural",), "Hello.")


def test_language_defaults() -> None:
    assert Voice(name="fr-FR-DeniseNeural").language == "fr-FR"
    assert Voice(name="en-US-JennyNeural", lang="es-MX").language == "es-MX"
    assert Voice(name="MyCustomVoice").language == "en-US"


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"name": ""}, "name"),
        ({"name": 'x" onload="y'}, "name"),
        ({"name": "en-US-JennyNeural", "lang": "en_US!"}, "lang"),
        ({"name": "en-US-JennyNeural", "style": "cheer ful"}, "style"),
        ({"name": "en-US-JennyNeural", "rate": "very fast"}, "rate"),
        ({"name": "en-US-JennyNeural", "pitch": "+5%'/>"}, "pitch"),
    ],
)
def test_bad_voice_settings_are_named(kwargs: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=f"Azure voice {named} "):
        Voice(**kwargs)


def test_parse_reads_what_the_python_sdk_sends() -> None:
    # speak_text_async with a voice set sends this (logged from SDK 1.53).
    sdk = ("<speak version='1.0' xmlns='http://www.w3.org/2001/10/synthesis' xmlns:mstts='http://www.w3.org/2001/mstts'"
           " xmlns:emo='http://www.w3.org/2009/10/emotionml' xml:lang='en-US'><voice name='en-US-JennyNeural'>"
           "Hello &lt;world&gt; &amp; you.</voice></speak>")
    request = parse_ssml(sdk)
    assert request == type(request)("en-US", ("en-US-JennyNeural",), "Hello <world> & you.")


def test_parse_breaks_and_sentences_are_spaces() -> None:
    ssml = (f'<speak xmlns="{SSML_NS}" version="1.0" xml:lang="en-US"><voice name="a-B-CNeural"><p><s>One.</s>'
            '<s>Two<break time="200ms"/>three.</s></p></voice><voice name="a-B-DNeural">Four.</voice></speak>')
    request = parse_ssml(ssml)
    assert request.voices == ("a-B-CNeural", "a-B-DNeural")
    assert request.text == "One. Two three. Four."


@pytest.mark.parametrize(
    ("ssml", "reason"),
    [
        ("not xml at all", "not well-formed"),
        ("<speak><voice name='x'>unclosed</speak>", "not well-formed"),
        (f'<voice xmlns="{SSML_NS}" name="x">hi</voice>', "not <speak>"),
        (f'<speak xmlns="{SSML_NS}">no voice</speak>', "names no voice"),
        (f'<speak xmlns="{SSML_NS}"><voice>nameless</voice></speak>', "names no voice"),
        ('<!DOCTYPE speak [<!ENTITY a "aaaa">]><speak><voice name="x">&a;</voice></speak>', "DTD"),
    ],
)
def test_parse_refuses_what_the_service_refuses(ssml: str, reason: str) -> None:
    with pytest.raises(SsmlError, match=reason):
        parse_ssml(ssml)
