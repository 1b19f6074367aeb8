"""The caller's ear: what a local caller heard of the bot, and how fast the bot yielded.

Two small recorders a local transport keeps beside its wire, for reports and tests:

* :class:`HeardAudio` keeps the bot's frames as they reached the caller, with when and
  for which turn each went out, and saves them as a WAV file (``record:`` setting).
* :class:`BargeInMeter` measures each barge-in's reaction time: from the moment the
  caller's voice reached the line, talking over the bot, to the moment the bot's audio
  was cut (the flush). The caller is the only party that knows the first instant: the
  VAD reports speech one start window later.
"""

from __future__ import annotations

from pathlib import Path

from .wav import write_wav

__all__ = ["BargeInMeter", "HeardAudio"]


class HeardAudio:
    """The bot's audio as the caller heard it, frame by frame."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.pcm = bytearray()
        #: (time ns, turn) of every frame, in order.
        self.frames: list[tuple[int, int]] = []

    def add(self, now_ns: int, turn: int, pcm: bytes) -> None:
        """A frame of ``turn`` reached the caller at ``now_ns``."""
        self.pcm += pcm
        self.frames.append((now_ns, turn))

    @property
    def ms(self) -> float:
        """How much bot audio was heard, in ms."""
        return len(self.pcm) / (self.sample_rate * 2 / 1000)

    def save(self, path: str | Path) -> None:
        """Write what was heard as a WAV file (blocking: run it off the loop)."""
        write_wav(path, bytes(self.pcm), self.sample_rate)


class BargeInMeter:
    """Barge-in reaction times: the caller's voice onset -> the bot's audio cut."""

    def __init__(self) -> None:
        #: Bot turn -> reaction time in ms, for each turn the caller cut off.
        self.reaction_ms: dict[int, float] = {}
        self._onset_ns: int | None = None

    def voice_on(self, now_ns: int) -> None:
        """The caller's voice reached the line (the first loud frame of a line)."""
        self._onset_ns = now_ns

    def voice_off(self) -> None:
        """The caller finished the line."""
        self._onset_ns = None

    def bot_cut(self, turn: int, now_ns: int) -> None:
        """The bot's audio of ``turn`` was flushed, or paused, at ``now_ns``.

        Only a cut while the caller is saying a line is its barge-in; any other is not
        recorded. The first cut of a turn is the reaction the caller heard (a pause, then
        the flush that confirmed it).
        """
        if self._onset_ns is not None and turn not in self.reaction_ms:
            self.reaction_ms[turn] = (now_ns - self._onset_ns) / 1e6
