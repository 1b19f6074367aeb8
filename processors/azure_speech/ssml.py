"""SSML for Azure AI Speech: what the TTS adapter sends, and what the local peer reads.

:func:`build_ssml` wraps one clause in ``<speak><voice>`` with the agent's voice, its
speaking style (``mstts:express-as``), rate and pitch (``prosody``) and ``xml:lang``.
The clause is always text, never markup: an LLM reply (or a caller who got the LLM to
repeat them) may hold ``<``, ``&``, quotes, ``]]>`` or a whole ``</voice><voice ...>``;
each is escaped, and characters XML 1.0 forbids (NUL and most C0 controls, lone
surrogates, U+FFFE/U+FFFF) are dropped, because the service refuses a document that
holds one (WebSocket close 1007) and the turn would be lost. The attributes come from
configuration, so :class:`Voice` checks them up front and names the bad one.

:func:`parse_ssml` is the peer's side: it reads what any SDK sends (``speak_text``
builds the document itself, ``speak_ssml`` passes the caller's) into the voice and
the text to say, and refuses a document the service would refuse (not XML, no
``speak`` root, a DTD: entity tricks are never expanded) with :class:`SsmlError`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from pipeline.errors import ConfigError, ProtocolError

__all__ = ["MSTTS_NS", "SSML_NS", "SsmlError", "SsmlRequest", "Voice", "build_ssml", "parse_ssml", "xml_text"]

SSML_NS = "http://www.w3.org/2001/10/synthesis"
#: The namespace the SDKs declare for Microsoft's extensions (``mstts:express-as``).
MSTTS_NS = "http://www.w3.org/2001/mstts"

_LANG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
_VOICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ():,._-]{0,127}$")
_STYLE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
# Prosody values as the service takes them: a relative change (+10%, -2st, +50Hz), a
# multiplier (1.2) or a named level (x-slow ... x-fast, x-low ... x-high, default).
_PROSODY = re.compile(r"^(?:[+-]?\d{1,3}(?:\.\d+)?(?:%|st|Hz)?|x-slow|slow|medium|fast|x-fast|"
                      r"x-low|low|high|x-high|default)$")
# What XML 1.0 allows (section 2.2): tab, LF, CR and everything from U+0020 up, but
# surrogates and U+FFFE/U+FFFF.
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SPACE = re.compile(r"\s+")


class SsmlError(ProtocolError):
    """An SSML document the service would refuse; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Voice:
    """Who speaks, and how: an Azure neural voice and its delivery.

    Attributes:
        name: The voice (``en-US-JennyNeural``).
        lang: ``xml:lang`` of the document (BCP 47, ``en-US``); blank: taken from the
            voice name's first two parts, else ``en-US``.
        style: A speaking style of the voice (``cheerful``, ``customerservice``); blank: none.
        rate: Speaking rate (``+10%``, ``1.2``, ``fast``); blank: the voice's own.
        pitch: Pitch (``-5%``, ``+2st``, ``high``); blank: the voice's own.

    Raises:
        ConfigError: a value the service would refuse, named.
    """

    name: str
    lang: str = ""
    style: str = ""
    rate: str = ""
    pitch: str = ""

    def __post_init__(self) -> None:
        checks = (("name", self.name, _VOICE, True), ("lang", self.lang, _LANG, False),
                  ("style", self.style, _STYLE, False), ("rate", self.rate, _PROSODY, False),
                  ("pitch", self.pitch, _PROSODY, False))
        for field, value, pattern, required in checks:
            if (value or required) and not pattern.match(value):
                raise ConfigError(f"Azure voice {field} {value!r} is not valid SSML ({_RULES[field]})")

    @property
    def language(self) -> str:
        """The document's ``xml:lang``."""
        if self.lang:
            return self.lang
        parts = self.name.split("-")
        guess = "-".join(parts[:2])
        return guess if len(parts) > 2 and _LANG.match(guess) else "en-US"


_RULES = {
    "name": "a voice name such as en-US-JennyNeural",
    "lang": "a BCP 47 tag such as en-US",
    "style": "a style name such as cheerful",
    "rate": "+10%, 1.2 or x-slow..x-fast",
    "pitch": "-5%, +2st, +50Hz or x-low..x-high",
}


def xml_text(text: str) -> str:
    """``text`` as XML character data: ``& < >`` escaped, characters XML forbids dropped."""
    return escape(_NOT_XML_CHAR.sub("", text))


def build_ssml(text: str, voice: Voice) -> str:
    """The SSML document that says ``text`` (plain text, escaped here) with ``voice``."""
    body = xml_text(text)
    if voice.rate or voice.pitch:
        attrs = "".join(f" {key}={quoteattr(value)}" for key, value in (("rate", voice.rate), ("pitch", voice.pitch))
                        if value)
        body = f"<prosody{attrs}>{body}</prosody>"
    if voice.style:
        body = f"<mstts:express-as style={quoteattr(voice.style)}>{body}</mstts:express-as>"
    return (f'<speak version="1.0" xmlns="{SSML_NS}" xmlns:mstts="{MSTTS_NS}" xml:lang={quoteattr(voice.language)}>'
            f"<voice name={quoteattr(voice.name)}>{body}</voice></speak>")


@dataclass(frozen=True, slots=True)
class SsmlRequest:
    """What one SSML document asks for: the voice(s) and the words, in order.

    Attributes:
        lang: The ``xml:lang`` of ``speak``.
        voices: Each ``voice`` element's name, in document order.
        text: The words to say: every text node, whitespace collapsed, with ``break``
            and block elements (``p``, ``s``) read as spaces.
    """

    lang: str
    voices: tuple[str, ...]
    text: str


_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def parse_ssml(ssml: str) -> SsmlRequest:
    """Read an SSML document as the service does (see the module docstring).

    Raises:
        SsmlError: not well-formed XML, a DTD, no ``speak`` root, or no voice named.
    """
    if "<!DOCTYPE" in ssml.upper() or "<!ENTITY" in ssml.upper():
        raise SsmlError("SSML must not declare a DTD or entities")
    try:
        root = ET.fromstring(ssml)
    except ET.ParseError as exc:
        raise SsmlError(f"SSML is not well-formed XML: {exc}") from None
    if _local(root.tag) != "speak":
        raise SsmlError(f"SSML root element is <{_local(root.tag)}>, not <speak>")
    voices = tuple(el.get("name", "").strip() for el in root.iter() if _local(el.tag) == "voice")
    if not voices or not all(voices):
        raise SsmlError("SSML names no voice (a <voice name=...> element is required)")
    words: list[str] = []
    _collect(root, words)
    return SsmlRequest(lang=root.get(_XML_LANG, ""), voices=voices, text=_SPACE.sub(" ", "".join(words)).strip())


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


_SPOKEN_AS_SPACE = frozenset({"break", "p", "s", "voice", "speak", "bookmark", "mstts:silence", "silence"})


def _collect(element: ET.Element, out: list[str]) -> None:
    """Append the text ``element`` says, in document order."""
    spaced = _local(element.tag) in _SPOKEN_AS_SPACE
    if spaced:
        out.append(" ")
    if element.text:
        out.append(element.text)
    for child in element:
        _collect(child, out)
        if child.tail:
            out.append(child.tail)
    if spaced:
        out.append(" ")
