"""Endpointing: the pure state machine that decides when the caller finished a turn.

Inputs are method calls that carry their own time (speech started/stopped from the VAD,
transcripts from STT, an end-of-turn probability from a semantic model, and a periodic
:meth:`Endpointing.tick`); outputs are :class:`TurnStarted` and :class:`TurnEnded`
events. Nothing here reads a clock, sleeps or does I/O.

Rules
-----
* A turn starts at the first speech onset while no turn is open. Its id comes from the
  ``next_turn`` allocator given to the machine: in a call that is the call's one turn
  counter (``ctx.next_turn``), shared with the bot's own utterances, so the id in
  ``TurnStarted`` is the call's turn number. Standalone, ids count from 1.
* When speech stops, a silence window starts *at the moment the speech stopped*
  (:attr:`~processors.audio.vad.SpeechStopped.at_ms`, not the later moment the VAD was
  sure of it). Speech that resumes before the window ends continues the same turn; if
  the window elapses the turn ends with reason ``"silence"`` and ``at_ms`` equal to the
  speech stop plus the window, exactly. The VAD confirms a start ``start_ms`` after the
  onset, so a resumption is only seen in time if it begins at least ``start_ms`` before
  the window ends; with the defaults (600 ms window, 200 ms VAD start) a pause of less
  than 400 ms is always bridged (feed VAD events before calling ``tick``).
* A turn lasting ``max_turn_ms`` ends with reason ``"max_duration"`` so a turn is never
  stuck (a monologue, or a TV in the background keeping the VAD in SPEAKING). If the
  caller is still speaking then, the machine waits in CUT_OFF for that speech to stop
  before the next onset can open a new turn: ending turns every 30 s on background noise
  would cancel each answer the bot starts.

The window length comes from a :class:`SilenceStrategy`. The default,
:class:`FixedSilence`, always returns ``silence_ms``. :class:`ModelSilence` lets a
semantic end-of-turn model (Smart Turn, :mod:`processors.audio.turn_model`) decide: its
probability, fed through :meth:`Endpointing.on_end_of_turn_probability`, shortens the
window for a finished sentence and lengthens it for "my number is ...". A turn whose
window the model shortened below ``silence_ms`` ends with reason ``"model"``. The model
runs elsewhere (off the event loop, asked by the VAD node at each pause); only its
answer enters this machine, with the time it arrived.

:class:`~processors.audio.text_turn.TextSilence` sizes the window from the caller's
words instead (a rule-based judge of the transcript): the STT's interim text enters
through :meth:`Endpointing.on_words` with ``heard_ms``, the call-audio time up to which
the STT had heard when it produced the text. Words are *fresh* for a pause only when
``heard_ms`` reaches the speech stop; older words (the STT is behind, or the caller
said more since) are stale and the strategy sees none (``TurnSnapshot.words`` None), so
the silence window applies: the turn is never cut early on stale words. A turn whose
window the text judge shortened ends with reason ``"text"``.

Default window: 600 ms from the speech stop. 500 ms cuts off callers who pause
mid-sentence to think or to read digits; past 700 ms the bot feels slow (human
conversation leaves ~200 ms between turns, callers accept a little more from machines).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Protocol, runtime_checkable

__all__ = [
    "EndReason",
    "Endpointing",
    "EndpointingEvent",
    "EndpointingParams",
    "FixedSilence",
    "ModelSilence",
    "ReasonedStrategy",
    "SilenceStrategy",
    "TurnEnded",
    "TurnSnapshot",
    "TurnStarted",
    "TurnState",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointingParams:
    """Tuning of :class:`Endpointing`.

    Attributes:
        silence_ms: silence after a speech stop that ends the turn (default 600 ms; see
            the module docstring for why). Strategies may move it.
        max_turn_ms: longest turn, counted from its start (default 30 s).
    """

    silence_ms: float = 600.0
    max_turn_ms: float = 30_000.0

    def __post_init__(self) -> None:
        if self.silence_ms <= 0:
            raise ValueError(f"EndpointingParams.silence_ms must be positive, got {self.silence_ms}")
        if self.max_turn_ms <= 0:
            raise ValueError(
                f"EndpointingParams.max_turn_ms must be positive, got {self.max_turn_ms}"
            )


class TurnState(Enum):
    """Where the turn stands."""

    IDLE = "idle"  # no turn open
    SPEAKING = "speaking"  # turn open, caller speaking
    PAUSED = "paused"  # turn open, silence window running
    CUT_OFF = "cut_off"  # turn cut at max_turn_ms, waiting for that speech to stop


class EndReason(StrEnum):
    """Why a turn ended."""

    SILENCE = "silence"  # the silence window ran out (no model, or it judged "not done")
    MODEL = "model"  # the end-of-turn model judged the turn complete and cut the wait short
    TEXT = "text"  # the text judge found the words complete and cut the wait short
    MAX_DURATION = "max_duration"


@dataclass(frozen=True, slots=True)
class TurnStarted:
    """Turn ``turn_id`` started at ``at_ms`` (the speech onset)."""

    turn_id: int
    at_ms: float


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """Turn ``turn_id`` ended at ``at_ms`` for ``reason``.

    ``transcript`` holds the final transcripts received so far plus the latest interim
    one; STT finals often arrive after the turn ends, so treat it as a preview.
    """

    turn_id: int
    at_ms: float
    reason: EndReason
    transcript: str = ""


EndpointingEvent = TurnStarted | TurnEnded


@dataclass(frozen=True, slots=True)
class TurnSnapshot:
    """What a :class:`SilenceStrategy` may look at when sizing the silence window."""

    turn_id: int
    started_at_ms: float
    stopped_at_ms: float
    transcript: str
    end_of_turn_probability: float | None
    words: str | None = None  # the newest interim text heard up to the speech stop (fresh)


class SilenceStrategy(Protocol):
    """Sizes the silence window that ends a turn."""

    def silence_ms(self, turn: TurnSnapshot, base_ms: float) -> float:
        """Return the window in ms, counted from ``turn.stopped_at_ms``.

        ``base_ms`` is :attr:`EndpointingParams.silence_ms`. Called at each speech stop
        and again whenever a transcript, words or an end-of-turn probability arrives
        during the pause; the newest answer wins.
        """
        ...


@runtime_checkable
class ReasonedStrategy(SilenceStrategy, Protocol):
    """A :class:`SilenceStrategy` that names the reason for a window it shortened.

    Strategies without it report ``SILENCE`` (``MODEL`` once a model answered).
    """

    def shortened_by(self, turn: TurnSnapshot) -> EndReason:
        """The reason to report when this strategy's window is below ``base_ms``."""
        ...


@dataclass(frozen=True, slots=True)
class FixedSilence:
    """The default strategy: the window is always ``base_ms``."""

    def silence_ms(self, turn: TurnSnapshot, base_ms: float) -> float:
        """Return ``base_ms``."""
        return base_ms

    def shortened_by(self, turn: TurnSnapshot) -> EndReason:
        """Never shortens: ``SILENCE``."""
        return EndReason.SILENCE


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSilence:
    """Let a semantic end-of-turn model (Smart Turn) size the window.

    A turn the model judges complete (probability at least ``threshold``) ends
    ``complete_ms`` after the speech stop; one it judges incomplete ("my policy number
    is ...") waits ``incomplete_ms``, so a caller who pauses mid-sentence to read digits
    is not cut off. Until the model answers (or when it is unavailable) the window is
    ``base_ms``: silence-only endpointing.

    Defaults: 250 ms is about the gap people leave between turns (~200 ms) plus the
    VAD's own stop window; 1500 ms covers nearly all mid-sentence hesitations and
    digit-reading pauses (300-800 ms, rarely over a second) while a caller who really
    stopped still gets an answer in under two seconds.
    """

    complete_ms: float = 250.0
    incomplete_ms: float = 1500.0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.complete_ms <= self.incomplete_ms:
            raise ValueError(
                "ModelSilence needs 0 < complete_ms <= incomplete_ms, "
                f"got {self.complete_ms} and {self.incomplete_ms}"
            )
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"ModelSilence.threshold must be in (0, 1), got {self.threshold}")

    def silence_ms(self, turn: TurnSnapshot, base_ms: float) -> float:
        """``complete_ms`` or ``incomplete_ms`` by the model's verdict, else ``base_ms``."""
        probability = turn.end_of_turn_probability
        if probability is None:
            return base_ms
        return self.complete_ms if probability >= self.threshold else self.incomplete_ms

    def shortened_by(self, turn: TurnSnapshot) -> EndReason:
        """``MODEL`` once the model answered, else ``SILENCE``."""
        return EndReason.SILENCE if turn.end_of_turn_probability is None else EndReason.MODEL


class Endpointing:
    """Turn state machine for one call.

    Args:
        params: tuning; defaults suit telephony.
        strategy: sizes the silence window; default :class:`FixedSilence`.
        next_turn: hands out the id of each new turn (the call's turn counter); default
            a counter of this machine's own, from 1.

    Every method returns the events it caused, in order. Deadlines that fall at or
    before an input's time fire before that input is applied, so a late ``tick`` never
    changes the outcome, only when it is reported.
    """

    def __init__(
        self,
        params: EndpointingParams | None = None,
        *,
        strategy: SilenceStrategy | None = None,
        next_turn: Callable[[], int] | None = None,
    ) -> None:
        self._params = params if params is not None else EndpointingParams()
        self._strategy: SilenceStrategy = strategy if strategy is not None else FixedSilence()
        self._state = TurnState.IDLE
        self._next_turn = next_turn if next_turn is not None else itertools.count(1).__next__
        self._turn_id: int | None = None
        self._started_at = 0.0
        self._stopped_at = 0.0
        self._deadline = 0.0  # silence deadline, meaningful in PAUSED
        self._finals: list[str] = []
        self._interim = ""
        self._probability: float | None = None
        self._words = ""  # newest interim text of the open turn (UserWords)
        self._heard_ms = float("-inf")  # call-audio time up to which _words were heard

    @property
    def params(self) -> EndpointingParams:
        """The tuning in use."""
        return self._params

    @property
    def state(self) -> TurnState:
        """Current state."""
        return self._state

    @property
    def turn_id(self) -> int | None:
        """Id of the open turn, or None between turns."""
        return self._turn_id if self._state in (TurnState.SPEAKING, TurnState.PAUSED) else None

    @property
    def deadline_ms(self) -> float | None:
        """When the open turn will end if nothing else happens (None if no turn is open)."""
        if self._state is TurnState.PAUSED:
            return min(self._deadline, self._max_deadline)
        if self._state is TurnState.SPEAKING:
            return self._max_deadline
        return None

    def on_speech_started(self, at_ms: float) -> list[EndpointingEvent]:
        """The VAD reports speech that began at ``at_ms``."""
        events = self._advance(at_ms)
        if self._state in (TurnState.IDLE, TurnState.CUT_OFF):
            turn_id = self._next_turn()
            self._turn_id = turn_id
            self._started_at = at_ms
            self._finals = []
            self._interim = ""
            self._probability = None
            self._words, self._heard_ms = "", float("-inf")
            self._set_state(TurnState.SPEAKING, at_ms)
            events.append(TurnStarted(turn_id=turn_id, at_ms=at_ms))
        elif self._state is TurnState.PAUSED:
            # Resumed inside the window: same turn, and any earlier end-of-turn guess
            # was about a sentence the caller has now continued.
            self._probability = None
            self._set_state(TurnState.SPEAKING, at_ms)
        return events

    def on_speech_stopped(self, at_ms: float) -> list[EndpointingEvent]:
        """The VAD reports speech that stopped at ``at_ms`` (start of the silence)."""
        events = self._advance(at_ms)
        if self._state is TurnState.SPEAKING:
            self._stopped_at = at_ms
            self._set_state(TurnState.PAUSED, at_ms)
            self._deadline = self._stopped_at + self._window()
        elif self._state is TurnState.CUT_OFF:
            self._set_state(TurnState.IDLE, at_ms)
        return events

    def on_transcript(self, text: str, final: bool, at_ms: float) -> list[EndpointingEvent]:
        """STT produced ``text`` (interim or final) at ``at_ms`` for the open turn.

        Transcripts outside an open turn (late finals of an ended turn) are ignored.
        """
        events = self._advance(at_ms)
        if self._state not in (TurnState.SPEAKING, TurnState.PAUSED):
            logger.debug("endpointing: transcript outside a turn ignored: %r", text)
            return events
        if final:
            if text.strip():
                self._finals.append(text.strip())
            self._interim = ""
        else:
            self._interim = text.strip()
        self._resize_window(at_ms)
        return events

    def on_words(self, text: str, heard_ms: float, at_ms: float) -> list[EndpointingEvent]:
        """STT's newest interim ``text`` of the open turn, heard up to ``heard_ms``.

        Kept while the caller speaks; used by the strategy for a pause only if
        ``heard_ms`` reaches that pause's speech stop (see the module docstring). The
        window is resized from the speech stop, never to end before ``at_ms``.
        """
        events = self._advance(at_ms)
        if self._state not in (TurnState.SPEAKING, TurnState.PAUSED):
            return events
        if heard_ms >= self._heard_ms:
            self._words, self._heard_ms = text.strip(), heard_ms
        self._resize_window(at_ms)
        events += self._advance(at_ms)
        return events

    def on_end_of_turn_probability(self, probability: float, at_ms: float) -> list[EndpointingEvent]:
        """A semantic model estimates the caller is done with ``probability`` (0-1).

        Only used during a pause (an answer arriving while the caller speaks is about
        a sentence that is still growing, so it is dropped). The window is resized
        from the speech stop, but never to end before ``at_ms`` (the answer cannot act
        in the past).
        """
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"end-of-turn probability must be in [0, 1], got {probability}")
        events = self._advance(at_ms)
        if self._state is TurnState.PAUSED:
            self._probability = probability
            self._resize_window(at_ms)
            events += self._advance(at_ms)
        return events

    def tick(self, now_ms: float) -> list[EndpointingEvent]:
        """Time passes: fire the deadlines due at or before ``now_ms``."""
        return self._advance(now_ms)

    def reset(self) -> None:
        """Drop the open turn without an event (call ended)."""
        self._set_state(TurnState.IDLE, None)
        self._turn_id = None

    @property
    def _max_deadline(self) -> float:
        return self._started_at + self._params.max_turn_ms

    def _transcript(self) -> str:
        return " ".join([*self._finals, self._interim] if self._interim else self._finals)

    def _window(self) -> float:
        return max(0.0, self._strategy.silence_ms(self._snapshot(), self._params.silence_ms))

    def _snapshot(self) -> TurnSnapshot:
        assert self._turn_id is not None
        return TurnSnapshot(
            turn_id=self._turn_id,
            started_at_ms=self._started_at,
            stopped_at_ms=self._stopped_at,
            transcript=self._transcript(),
            end_of_turn_probability=self._probability,
            words=self._fresh_words(),
        )

    def _fresh_words(self) -> str | None:
        if self._state is TurnState.PAUSED and self._heard_ms >= self._stopped_at and self._words:
            return self._words
        return None

    def _resize_window(self, at_ms: float) -> None:
        if self._state is TurnState.PAUSED:
            self._deadline = max(self._stopped_at + self._window(), at_ms)

    def _advance(self, now_ms: float) -> list[EndpointingEvent]:
        if self._state is TurnState.PAUSED and self._deadline <= min(now_ms, self._max_deadline):
            return [self._end(self._deadline, self._silence_reason(), TurnState.IDLE)]
        if self._state in (TurnState.SPEAKING, TurnState.PAUSED) and self._max_deadline <= now_ms:
            after = TurnState.CUT_OFF if self._state is TurnState.SPEAKING else TurnState.IDLE
            return [self._end(self._max_deadline, EndReason.MAX_DURATION, after)]
        return []

    def _silence_reason(self) -> EndReason:
        if self._deadline - self._stopped_at >= self._params.silence_ms:
            return EndReason.SILENCE
        if isinstance(self._strategy, ReasonedStrategy):
            return self._strategy.shortened_by(self._snapshot())
        return EndReason.SILENCE if self._probability is None else EndReason.MODEL

    def _end(self, at_ms: float, reason: EndReason, after: TurnState) -> TurnEnded:
        assert self._turn_id is not None
        event = TurnEnded(
            turn_id=self._turn_id, at_ms=at_ms, reason=reason, transcript=self._transcript()
        )
        self._set_state(after, at_ms)
        self._turn_id = None
        return event

    def _set_state(self, state: TurnState, at_ms: float | None) -> None:
        if state is not self._state:
            logger.debug(
                "endpointing turn %s: %s -> %s at %s ms",
                self._turn_id,
                self._state.name,
                state.name,
                at_ms,
            )
            self._state = state
