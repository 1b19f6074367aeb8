"""Barge-in policy: when caller speech over the bot becomes an interruption.

A pure, synchronous state machine. Inputs carry their time: the bot started or stopped
speaking, the caller's speech started or stopped (from the VAD), a prompt became
uninterruptible or interruptible again, and :meth:`BargeIn.tick`. The output is one
:class:`Interrupt` per bot utterance, which the pipeline turns into ``FlushStart(turn)``.

When does it fire?
------------------
The caller's speech must have lasted ``min_speech_ms`` (default 200 ms) while the bot
is speaking and interruptible. The decision time is, exactly::

    max(speech onset + min_speech_ms, bot start, end of the uninterruptible part)

200 ms is longer than a cough, a click, a "mm-hm" or a burst of the bot's own echo
leaking through an imperfect canceller (typically under 150 ms), and equal to the VAD's
default start window. Because the VAD reports a start with the onset time, one
``start_ms`` after it, a ``min_speech_ms`` no longer than the VAD's ``start_ms`` makes
the decision the moment the VAD reports the start: within one VAD start window of the
onset, which is the reaction time callers get.

While the bot speaks an uninterruptible prompt (a legal disclaimer), nothing fires; if
the caller is still talking when the prompt becomes interruptible, the interruption
fires then. After an :class:`Interrupt` the machine stays INTERRUPTED until the bot
stops or starts a new utterance, so one utterance never yields two flushes.

States (explicit so that later work can add "pause on onset, resume where the bot
stopped if it was a false barge-in" as a PAUSED state between OVERLAP and
INTERRUPTED)::

    BOT_SILENT --bot starts--> BOT_SPEAKING --caller speaks--> OVERLAP --long enough-->
    INTERRUPTED;  OVERLAP --caller stops early--> BOT_SPEAKING;  any --bot stops--> BOT_SILENT
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

__all__ = ["BargeIn", "BargeInParams", "BargeInState", "Interrupt"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class BargeInParams:
    """Tuning of :class:`BargeIn`.

    Attributes:
        min_speech_ms: how long the caller must speak over the bot before it yields
            (default 200 ms; see the module docstring). Keep it at most the VAD's
            ``start_ms`` so the decision comes when the VAD reports the speech.
    """

    min_speech_ms: float = 200.0

    def __post_init__(self) -> None:
        if self.min_speech_ms < 0:
            raise ValueError(f"BargeInParams.min_speech_ms must be >= 0, got {self.min_speech_ms}")


class BargeInState(Enum):
    """Where the bot's current utterance stands."""

    BOT_SILENT = "bot_silent"
    BOT_SPEAKING = "bot_speaking"
    OVERLAP = "overlap"  # caller speaking over the bot, not yet long enough
    INTERRUPTED = "interrupted"  # decided for this utterance; waits for the bot to stop


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Stop the bot: the caller barged in.

    Attributes:
        turn: the turn the interrupted bot utterance belongs to (None if not given).
        at_ms: when the decision became due (see the module docstring).
        speech_started_at_ms: onset of the caller's speech; ``at_ms`` minus this is
            the barge-in reaction time.
    """

    turn: int | None
    at_ms: float
    speech_started_at_ms: float


class BargeIn:
    """Barge-in decisions for one call.

    Args:
        params: tuning; defaults suit telephony.

    Every method returns the interrupts it caused (zero or one).
    """

    def __init__(self, params: BargeInParams | None = None) -> None:
        self._params = params if params is not None else BargeInParams()
        self._state = BargeInState.BOT_SILENT
        self._turn: int | None = None
        self._bot_started_at = 0.0
        self._user_onset: float | None = None  # onset of caller speech in progress
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

    def on_bot_started_speaking(self, at_ms: float, turn: int | None = None) -> list[Interrupt]:
        """The bot's audio for ``turn`` started playing at ``at_ms`` (a new utterance)."""
        self._turn = turn
        self._bot_started_at = at_ms
        self._set_state(
            BargeInState.OVERLAP if self._user_onset is not None else BargeInState.BOT_SPEAKING,
            at_ms,
        )
        return self._decide(at_ms)

    def on_bot_stopped_speaking(self, at_ms: float) -> list[Interrupt]:
        """The bot's audio stopped at ``at_ms`` (finished, or flushed after an interrupt)."""
        events = self._decide(at_ms)
        self._set_state(BargeInState.BOT_SILENT, at_ms)
        return events

    def on_user_speech_started(self, at_ms: float, now_ms: float | None = None) -> list[Interrupt]:
        """The caller started speaking at ``at_ms``.

        Args:
            at_ms: speech onset (:attr:`~processors.audio.vad.SpeechStarted.at_ms`).
            now_ms: when the VAD reported it, if later than the onset (it usually is,
                by the VAD's start window). The decision is evaluated at this time, so
                the interrupt can be returned by this very call.
        """
        self._user_onset = at_ms
        if self._state is BargeInState.BOT_SPEAKING:
            self._set_state(BargeInState.OVERLAP, at_ms)
        return self._decide(at_ms if now_ms is None else now_ms)

    def on_user_speech_stopped(self, at_ms: float) -> list[Interrupt]:
        """The caller stopped speaking at ``at_ms``.

        Speech that was long enough before ``at_ms`` still interrupts (the tick that
        would have caught it was late); shorter speech, such as a cough, is dropped.
        """
        events = self._decide(at_ms)
        self._user_onset = None
        if self._state is BargeInState.OVERLAP:
            self._set_state(BargeInState.BOT_SPEAKING, at_ms)
        return events

    def set_uninterruptible(self, flag: bool, at_ms: float) -> list[Interrupt]:
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

    def tick(self, now_ms: float) -> list[Interrupt]:
        """Time passes: fire a decision due at or before ``now_ms``."""
        return self._decide(now_ms)

    def reset(self) -> None:
        """Forget everything (call ended or transferred)."""
        self._set_state(BargeInState.BOT_SILENT, None)
        self._turn = None
        self._user_onset = None
        self._uninterruptible = False
        self._interruptible_since = float("-inf")

    def _decide(self, now_ms: float) -> list[Interrupt]:
        if self._state is not BargeInState.OVERLAP or self._uninterruptible:
            return []
        assert self._user_onset is not None
        due = max(
            self._user_onset + self._params.min_speech_ms,
            self._bot_started_at,
            self._interruptible_since,
        )
        if due > now_ms:
            return []
        self._set_state(BargeInState.INTERRUPTED, due)
        return [Interrupt(turn=self._turn, at_ms=due, speech_started_at_ms=self._user_onset)]

    def _set_state(self, state: BargeInState, at_ms: float | None) -> None:
        if state is not self._state:
            logger.debug("barge-in %s -> %s at %s ms", self._state.name, state.name, at_ms)
            self._state = state
