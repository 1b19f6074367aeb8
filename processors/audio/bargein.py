"""Barge-in policy: when caller speech over the bot pauses it, interrupts it, or not.

A pure, synchronous state machine. Inputs carry their time: the bot started or stopped
speaking, the caller's speech started or stopped (from the VAD), the words the STT has
heard of it so far, a prompt became uninterruptible or interruptible again, and
:meth:`BargeIn.tick`. Outputs: :class:`Pause`, :class:`Resume` and :class:`Interrupt`
(at most one per bot utterance, which the pipeline turns into ``FlushStart(turn)``).

When does the bot yield?
------------------------
The caller's speech must have lasted ``min_speech_ms`` (default 200 ms) while the bot
is speaking and interruptible. The decision time is, exactly::

    max(speech onset + min_speech_ms, bot start, end of the uninterruptible part)

200 ms is longer than a click or a burst of the bot's own echo leaking through an
imperfect canceller (typically under 150 ms), and equal to the VAD's default start
window. Because the VAD reports a start with the onset time, one ``start_ms`` after it,
a ``min_speech_ms`` no longer than the VAD's ``start_ms`` makes the decision the moment
the VAD reports the start: within one VAD start window of the onset, which is the
reaction time callers get.

Pause first, flush only on proof (``confirm_ms`` set)
-----------------------------------------------------
Without ``confirm_ms`` the decision is an :class:`Interrupt`. With it, the decision is a
:class:`Pause`: the bot goes quiet at once and keeps the rest of its utterance. The
pause becomes an :class:`Interrupt` when the speech proves a real interruption:

* the STT has heard ``min_words`` words of it (:meth:`BargeIn.on_words`), or
* the VAD still reports speech ``confirm_ms`` after the onset that paused the bot. The
  VAD reports a stop one stop window after the speech ends, so a backchannel of length
  L is "still speaking" until L + the VAD's ``stop_ms``: keep ``confirm_ms`` above both
  (default 900 ms: a 600 ms "okay, uh-huh" plus a 300 ms stop window). A caller who
  talks on for minutes is an interruption after ``confirm_ms``.

When the speech stops without proof (a cough, a noise, "uh-huh"), the bot resumes
``resume_ms`` after it stopped (default 600 ms), unless the caller starts again
meanwhile: then the bot stays paused and the new speech counts from the first onset.

While the bot speaks an uninterruptible prompt (a legal disclaimer), nothing fires; if
the caller is still talking when the prompt becomes interruptible, the decision is made
then. After an :class:`Interrupt` the machine stays INTERRUPTED until the bot stops or
starts a new utterance, so one utterance never yields two flushes.

States::

    BOT_SILENT --bot starts--> BOT_SPEAKING --caller speaks--> OVERLAP --long enough-->
    INTERRUPTED (no confirm_ms) | PAUSED --proof--> INTERRUPTED;
    PAUSED --caller quiet resume_ms--> BOT_SPEAKING;
    OVERLAP --caller stops early--> BOT_SPEAKING;  any --bot stops--> BOT_SILENT
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import Enum

__all__ = ["BargeIn", "BargeInParams", "BargeInState", "Decision", "Interrupt", "Pause", "Resume", "content_words"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class BargeInParams:
    """Tuning of :class:`BargeIn`.

    Attributes:
        min_speech_ms: how long the caller must speak over the bot before it yields
            (default 200 ms; see the module docstring). Keep it at most the VAD's
            ``start_ms`` so the decision comes when the VAD reports the speech.
        confirm_ms: None: yielding is interrupting. Otherwise the bot pauses, and the
            speech interrupts when the VAD still reports it this long after its onset
            (keep it above the longest backchannel plus the VAD's ``stop_ms``).
        min_words: with ``confirm_ms``: this many words heard by the STT interrupt.
        resume_ms: with ``confirm_ms``: a pause with no proof resumes this long after
            the caller's speech stopped. Speech is known one VAD start window after it
            starts, so the pause a caller may make mid-sentence without the bot playing
            on is ``resume_ms`` minus the VAD's ``start_ms`` (default 600 - 200 ms).
    """

    min_speech_ms: float = 200.0
    confirm_ms: float | None = None
    min_words: int = 3
    resume_ms: float = 600.0

    def __post_init__(self) -> None:
        if self.min_speech_ms < 0:
            raise ValueError(f"BargeInParams.min_speech_ms must be >= 0, got {self.min_speech_ms}")
        if self.confirm_ms is not None and self.confirm_ms < self.min_speech_ms:
            raise ValueError(f"BargeInParams.confirm_ms ({self.confirm_ms}) must be >= min_speech_ms "
                             f"({self.min_speech_ms}): the bot pauses before the speech can confirm")
        if self.min_words < 1:
            raise ValueError(f"BargeInParams.min_words must be >= 1, got {self.min_words}")
        if self.resume_ms < 0:
            raise ValueError(f"BargeInParams.resume_ms must be >= 0, got {self.resume_ms}")


class BargeInState(Enum):
    """Where the bot's current utterance stands."""

    BOT_SILENT = "bot_silent"
    BOT_SPEAKING = "bot_speaking"
    OVERLAP = "overlap"  # caller speaking over the bot, not yet long enough
    PAUSED = "paused"  # the bot is quiet, waiting for proof of an interruption or a resume
    INTERRUPTED = "interrupted"  # decided for this utterance; waits for the bot to stop


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Stop the bot: the caller barged in.

    Attributes:
        turn: the turn the interrupted bot utterance belongs to (None if not given).
        at_ms: when the decision became due (see the module docstring).
        speech_started_at_ms: onset of the caller's speech that first made the bot
            yield; ``at_ms`` minus this is the time to the flush.
    """

    turn: int | None
    at_ms: float
    speech_started_at_ms: float


@dataclass(frozen=True, slots=True)
class Pause:
    """Make the bot quiet now, keeping the rest of its utterance (``confirm_ms`` set).

    ``at_ms`` minus ``speech_started_at_ms`` is the barge-in reaction time.
    """

    turn: int | None
    at_ms: float
    speech_started_at_ms: float


@dataclass(frozen=True, slots=True)
class Resume:
    """The speech over the paused bot was no interruption: play on from where it paused."""

    turn: int | None
    at_ms: float


Decision = Interrupt | Pause | Resume

#: Words that acknowledge the bot without taking the turn: said over the bot they are a
#: backchannel, not an interruption, however many (``okay yeah uh-huh``).
BACKCHANNEL = frozenset(
    "ah aha alright ahh hm hmm huh mhm mm mmhmm mmm oh ok okay right sure uh uhhuh uhuh um yeah yep yes".split()
)
_NOISE = re.compile(r"[\[(<*][^\])>*]*[\])>*]")  # Whisper's "[cough]", "(laughs)", "*sigh*"
_WORD = re.compile(r"[a-z0-9']+")


def content_words(text: str) -> int:
    """The words of an interim transcript that count towards an interruption: not noise
    tags, not backchannel words ("uh-huh" and "mm-hmm" are one backchannel word each)."""
    text = _NOISE.sub(" ", text.lower()).replace("-", "")
    return sum(1 for word in _WORD.findall(text) if word.strip("'") not in BACKCHANNEL)


class BargeIn:
    """Barge-in decisions for one call.

    Args:
        params: tuning; defaults suit telephony.

    Every method returns the decisions it caused, in order (at most two: a pause and
    the interrupt or resume that follows it, when the input came late).
    """

    def __init__(self, params: BargeInParams | None = None) -> None:
        self._params = params if params is not None else BargeInParams()
        self._state = BargeInState.BOT_SILENT
        self._turn: int | None = None
        self._bot_started_at = 0.0
        self._user_onset: float | None = None  # onset of caller speech in progress
        self._user_stopped_at = 0.0  # end of the caller's last speech
        self._paused_onset = 0.0  # onset of the speech that paused the bot
        self._uninterruptible = False
        self._interruptible_since = float("-inf")

    @property
    def params(self) -> BargeInParams:
        """The tuning in use."""
        return self._params

    @property
    def state(self) -> BargeInState:
        """Current state."""
        return self._state

    @property
    def uninterruptible(self) -> bool:
        """True while the bot's speech must not be interrupted."""
        return self._uninterruptible

    @property
    def user_speaking(self) -> bool:
        """True between the caller's speech start and stop."""
        return self._user_onset is not None

    def on_bot_started_speaking(self, at_ms: float, turn: int | None = None) -> list[Decision]:
        """The bot's audio for ``turn`` started playing at ``at_ms`` (a new utterance)."""
        self._turn = turn
        self._bot_started_at = at_ms
        self._set_state(
            BargeInState.OVERLAP if self._user_onset is not None else BargeInState.BOT_SPEAKING,
            at_ms,
        )
        return self._decide(at_ms)

    def on_bot_stopped_speaking(self, at_ms: float) -> list[Decision]:
        """The bot's audio stopped at ``at_ms`` (finished, or flushed after an interrupt)."""
        events = self._decide(at_ms)
        self._set_state(BargeInState.BOT_SILENT, at_ms)
        return events

    def on_user_speech_started(self, at_ms: float, now_ms: float | None = None) -> list[Decision]:
        """The caller started speaking at ``at_ms``.

        Args:
            at_ms: speech onset (:attr:`~processors.audio.vad.SpeechStarted.at_ms`).
            now_ms: when the VAD reported it, if later than the onset (it usually is,
                by the VAD's start window). The decision is evaluated at this time, so
                the decision can be returned by this very call.
        """
        events = self._decide(at_ms)  # a resume due before this onset still happens
        self._user_onset = at_ms
        if self._state is BargeInState.BOT_SPEAKING:
            self._set_state(BargeInState.OVERLAP, at_ms)
        return events + self._decide(at_ms if now_ms is None else now_ms)

    def on_user_speech_stopped(self, at_ms: float) -> list[Decision]:
        """The caller stopped speaking at ``at_ms``.

        Speech that was long enough before ``at_ms`` still counts (the tick that would
        have caught it was late); shorter speech, such as a cough, is dropped, and a
        pause it caused resumes ``resume_ms`` later.
        """
        events = self._decide(at_ms)
        self._user_onset = None
        self._user_stopped_at = at_ms
        if self._state is BargeInState.OVERLAP:
            self._set_state(BargeInState.BOT_SPEAKING, at_ms)
        return events + self._decide(at_ms)

    def on_words(self, words: int, at_ms: float) -> list[Decision]:
        """The STT heard ``words`` words of the caller's speech by ``at_ms``: with
        ``confirm_ms`` set, ``min_words`` of them make a pause an interruption."""
        events = self._decide(at_ms)
        if self._state is BargeInState.PAUSED and words >= self._params.min_words:
            events += self._interrupt(at_ms, self._paused_onset)
        return events

    def on_user_turn_ended(self, at_ms: float) -> list[Decision]:
        """Endpointing ended the caller's turn at ``at_ms``. While paused with the caller
        quiet and no proof, that turn was no interruption: the bot resumes now, without
        waiting for ``resume_ms``."""
        events = self._decide(at_ms)
        if self._state is BargeInState.PAUSED and self._user_onset is None:
            self._set_state(BargeInState.BOT_SPEAKING, at_ms)
            events.append(Resume(turn=self._turn, at_ms=at_ms))
        return events

    def set_uninterruptible(self, flag: bool, at_ms: float) -> list[Decision]:
        """Mark the bot's speech from ``at_ms`` on as (un)interruptible.

        Set it before an uninterruptible prompt starts playing and clear it when the
        prompt has played; it is independent of the bot's utterances.
        """
        if flag:
            events = self._decide(at_ms)  # speech that qualified before still counts
            self._uninterruptible = True
            return events
        if self._uninterruptible:
            self._uninterruptible = False
            self._interruptible_since = at_ms
        return self._decide(at_ms)

    def tick(self, now_ms: float) -> list[Decision]:
        """Time passes: fire the decisions due at or before ``now_ms``."""
        return self._decide(now_ms)

    def reset(self) -> None:
        """Forget everything (call ended or transferred)."""
        self._set_state(BargeInState.BOT_SILENT, None)
        self._turn = None
        self._user_onset = None
        self._uninterruptible = False
        self._interruptible_since = float("-inf")

    def _decide(self, now_ms: float) -> list[Decision]:
        events: list[Decision] = []
        if self._state is BargeInState.OVERLAP and not self._uninterruptible:
            assert self._user_onset is not None
            due = max(
                self._user_onset + self._params.min_speech_ms,
                self._bot_started_at,
                self._interruptible_since,
            )
            if due > now_ms:
                return events
            if self._params.confirm_ms is None:
                return self._interrupt(due, self._user_onset)
            self._set_state(BargeInState.PAUSED, due)
            self._paused_onset = self._user_onset
            events.append(Pause(turn=self._turn, at_ms=due, speech_started_at_ms=self._user_onset))
        if self._state is BargeInState.PAUSED:
            confirm_ms = self._params.confirm_ms
            assert confirm_ms is not None
            if self._user_onset is not None:
                # From the onset that paused the bot: a caller who pauses mid-sentence
                # ("No wait, ... I need") and goes on is still the same interruption.
                due = max(self._paused_onset + confirm_ms, self._user_onset)
                if due <= now_ms:
                    events += self._interrupt(due, self._paused_onset)
            else:
                due = self._user_stopped_at + self._params.resume_ms
                if due <= now_ms:
                    self._set_state(BargeInState.BOT_SPEAKING, due)
                    events.append(Resume(turn=self._turn, at_ms=due))
        return events

    def _interrupt(self, at_ms: float, onset: float) -> list[Decision]:
        self._set_state(BargeInState.INTERRUPTED, at_ms)
        return [Interrupt(turn=self._turn, at_ms=at_ms, speech_started_at_ms=onset)]

    def _set_state(self, state: BargeInState, at_ms: float | None) -> None:
        if state is not self._state:
            logger.debug("barge-in %s -> %s at %s ms", self._state.name, state.name, at_ms)
            self._state = state
