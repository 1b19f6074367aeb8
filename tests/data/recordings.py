"""Real human recordings with reference transcripts, for STT accuracy tests and benchmarks.

Nothing here is synthesised and nothing is committed to the repository: the audio comes
from Debian packages that ``make speech-data`` installs (``scripts/speech-data.sh``):

* ``asterisk-core-sounds-en-wav`` and ``-g722``: IVR prompts read by a professional voice
  (Allison Smith, CC-BY-SA-3.0), the same takes as 8 kHz PCM (telephony) and as 16 kHz
  G.722 (wideband telephony). Their texts are in ``core-sounds-en.txt`` of
  ``asterisk-core-sounds-en``.
* ``pocketsphinx-testdata``: CMU Sphinx's test recordings (BSD-2), 16 kHz: five
  sentences of a LibriVox reading of *Sense and Sensibility* (a read book, in a room),
  five card names spoken to a microphone, and "go forward ten meters".

:func:`load` gives every utterance at 8 kHz or 16 kHz. At 8 kHz the prompts are the
packaged 8 kHz takes, and the Sphinx recordings are band-limited to 8 kHz (soxr, high
quality), as a phone line would carry them; at 16 kHz the prompts are the G.722 takes.

The prompts are chosen by a rule, not by how well any engine hears them: every prompt of
6 to 25 words in the main folder, without symbols that are not words ("*", "#", "www.",
brackets, parentheses, quotes), misspellings in the text file, or a duplicate text, then every fourth
one in name order
(:data:`PROMPTS` is the result, fixed so the set does not change with the package).
"""

from __future__ import annotations

import gzip
import os
import re
import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import soxr

__all__ = ["DEBIAN_PACKAGES", "PROMPTS", "Recording", "load", "missing_packages"]

DEBIAN_PACKAGES = (
    "asterisk-core-sounds-en",
    "asterisk-core-sounds-en-wav",
    "asterisk-core-sounds-en-g722",
    "pocketsphinx-testdata",
)
"""What ``scripts/speech-data.sh`` installs (about 30 MB)."""

_PROMPT_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
_PROMPT_TEXTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
_SPHINX_DIR = Path("/usr/share/pocketsphinx/test/data")

PROMPTS = (
    "agent-alreadyon", "agent-user", "conf-getchannel", "conf-invalidpin",
    "conf-onlyone", "conf-waitforleader", "confbridge-lock-no-join", "confbridge-removed",
    "dir-first", "enter-num-blacklist", "pbx-invalidpark", "priv-callpending",
    "privacy-prompt", "queue-youarenext", "tt-allbusy", "vm-delete",
    "vm-forward", "vm-invalid-password", "vm-mismatch", "vm-next",
    "vm-opts-full", "vm-rec-busy", "vm-record-prepend", "vm-review-urgent",
    "vm-saveoper", "vm-tempgreeting2", "vm-tocallback", "vm-toforward",
    "vm-torerecord",
)
"""The IVR prompts of the set (see the module docstring for the rule that chose them)."""

_GOFORWARD = "go forward ten meters"  # the recording's grammar, goforward.gram


@dataclass(frozen=True, slots=True)
class Recording:
    """One utterance: PCM16 mono at ``rate``, and what was said.

    Attributes:
        name: ``source/id``, for example ``asterisk/vm-dialout`` or ``librivox/0870``.
        text: The reference transcript as the package gives it (digits may be figures).
        rate: Sample rate of ``pcm`` in Hz (8000 or 16000).
        pcm: The audio, PCM16 mono little-endian.
    """

    name: str
    text: str
    rate: int
    pcm: bytes

    @property
    def duration_ms(self) -> int:
        """Length of the audio in milliseconds."""
        return len(self.pcm) * 1000 // (2 * self.rate)


def missing_packages() -> list[str]:
    """The Debian packages of :data:`DEBIAN_PACKAGES` whose files are not installed."""
    marks = {
        "asterisk-core-sounds-en": _PROMPT_TEXTS,
        "asterisk-core-sounds-en-wav": _PROMPT_DIR / "vm-dialout.wav",
        "asterisk-core-sounds-en-g722": _PROMPT_DIR / "vm-dialout.g722",
        "pocketsphinx-testdata": _SPHINX_DIR / "goforward.raw",
    }
    return [name for name, path in marks.items() if not path.is_file()]


@cache
def load(rate: int) -> tuple[Recording, ...]:
    """Every utterance of the set at ``rate`` (8000 or 16000), prompts first.

    Raises:
        ValueError: for another rate.
        FileNotFoundError: a package is missing (the message names ``make speech-data``).
    """
    if rate not in (8000, 16000):
        raise ValueError(f"the recordings come at 8000 or 16000 Hz, not {rate}")
    missing = missing_packages()
    if missing:
        raise FileNotFoundError(
            f"speech test data not installed (Debian packages {', '.join(missing)}): run `make speech-data`"
        )
    texts = _prompt_texts()
    out = [Recording(f"asterisk/{name}", texts[name], rate, _prompt(name, rate)) for name in PROMPTS]
    for name, text, pcm in _sphinx_recordings():
        out.append(Recording(name, text, rate, pcm if rate == 16000 else _downsample(pcm)))
    return tuple(out)


def _prompt_texts() -> dict[str, str]:
    texts = {}
    with gzip.open(_PROMPT_TEXTS, "rt", encoding="utf-8") as lines:
        for line in lines:
            name, sep, text = line.partition(":")
            if sep and not line.startswith(";"):
                texts[name.strip()] = text.strip()
    return texts


def _prompt(name: str, rate: int) -> bytes:
    if rate == 8000:
        return _wav(_PROMPT_DIR / f"{name}.wav", 8000)
    import av  # faster-whisper's audio decoder (FFmpeg); only the G.722 takes need it

    with av.open(os.fspath(_PROMPT_DIR / f"{name}.g722"), format="g722") as container:
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
    return np.concatenate(chunks).astype("<i2").tobytes()


def _sphinx_recordings() -> list[tuple[str, str, bytes]]:
    out = []
    transcripts = (
        (_SPHINX_DIR / "librivox" / "transcription", "librivox", "sense_and_sensibility_01_austen_64kb-"),
        (_SPHINX_DIR / "cards" / "cards.transcription", "cards", ""),
    )
    for path, folder, prefix in transcripts:
        for line in path.read_text().splitlines():
            match = re.fullmatch(r"\s*<s>(.*)</s>\s*\((\S+)\)\s*", line)
            if match is None:
                continue
            text, utt = match[1].strip(), match[2]
            pcm = _wav(path.parent / f"{utt}.wav", 16000)
            out.append((f"{folder}/{utt.removeprefix(prefix)}", text, pcm))
    out.append(("sphinx/goforward", _GOFORWARD, (_SPHINX_DIR / "goforward.raw").read_bytes()))
    return out


def _wav(path: Path, rate: int) -> bytes:
    with wave.open(os.fspath(path)) as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (rate, 1, 2):
            raise ValueError(f"{path}: expected {rate} Hz mono PCM16")
        return wav.readframes(wav.getnframes())


def _downsample(pcm: bytes) -> bytes:
    audio = np.frombuffer(pcm, dtype="<i2")
    return soxr.resample(audio, 16000, 8000, quality="HQ").astype("<i2").tobytes()
