"""Which of a push recogniser's phrases belong to which caller turn: a pure state machine.

A streaming service (Azure AI Speech) hears the whole line and cuts it into phrases by its
own silence detection; the pipeline's turns come from our VAD and endpointing. The STT node
pushes every frame to the service and this machine joins the two, on call-audio time
(milliseconds from the first byte pushed), never on the wall clock:

- Phrases that end before the turn's audio starts (noise before it) are ignored.
- While a turn is open, each interim is shown as the turn's finals so far plus the
  hypothesis in progress.
- At ``TurnEnd`` the turn's final transcript is made as soon as no phrase is in progress
  (the service finalised what it heard); otherwise when the next final arrives, or, if
  the service stays silent, after ``final_timeout_ms`` more of call audio, from the finals
  plus the last hypothesis, so a turn is never stuck or lost.
- A new turn that starts while the previous one waits completes the previous one first.

Frames go out through ``emit`` (the node's own queue), in order with its other work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline.frames import FinalTranscript, Frame, InterimTranscript

from .azure_engine import AzureResult

__all__ = ["AzureTurns"]

logger = logging.getLogger(__name__)


class AzureTurns:
    """Maps :class:`AzureResult` phrases to turns (see module docstring).

    Args:
        emit: Takes each transcript frame.
        final_timeout_ms: Call audio after ``TurnEnd`` without a final before the turn is
            completed from what was heard.
        preroll_ms: Audio before ``TurnStart`` that still counts as the turn's (the VAD
            declares speech after its start window).
        interim: Emit interim transcripts.
    """

    def __init__(self, emit: Callable[[Frame], None], *, final_timeout_ms: int = 1500,
                 preroll_ms: int = 400, interim: bool = True) -> None:
        self._emit = emit
        self._timeout_ms = final_timeout_ms
        self._preroll_ms = preroll_ms
        self._interim_on = interim
        self.turn = 0
        self._start_ms = 0.0
        self._finals: list[AzureResult] = []
        self._hypothesis: AzureResult | None = None
        self._ended_at: float | None = None
        self.timeouts = 0

    @property
    def waiting(self) -> bool:
        """True between ``TurnEnd`` and the turn's final transcript."""
        return self._ended_at is not None

    def begin(self, turn: int, start_ms: float) -> None:
        """``TurnStart``: ``start_ms`` is the call-audio time of the turn's start."""
        if self.turn:
            self._complete()
        self.turn, self._start_ms = turn, start_ms
        self._finals, self._hypothesis, self._ended_at = [], None, None

    def end(self, turn: int, now_ms: float) -> None:
        """``TurnEnd`` of ``turn`` at call-audio time ``now_ms``."""
        if turn != self.turn or self._ended_at is not None:
            return
        self._ended_at = now_ms
        if self._finals and self._hypothesis is None:
            self._complete()

    def drop(self, turn: int) -> None:
        """The turn was flushed: forget it, emit nothing."""
        if self.turn and self.turn <= turn:
            self.turn, self._ended_at = 0, None

    def result(self, r: AzureResult) -> None:
        """An interim or final from the recogniser."""
        if not self.turn or r.end_ms <= self._start_ms - self._preroll_ms:
            return
        if r.kind == "interim":
            self._hypothesis = r
            if self._interim_on and self._ended_at is None and r.text:
                self._emit(InterimTranscript(self._text(), confidence=0.0, start_ms=self._first_ms(),
                                             end_ms=r.end_ms, turn=self.turn))
            return
        self._hypothesis = None
        if r.text:
            self._finals.append(r)
        if self._ended_at is not None:
            self._complete()

    def tick(self, now_ms: float) -> None:
        """Call audio advanced to ``now_ms``: complete a turn whose final is overdue."""
        if self._ended_at is not None and now_ms - self._ended_at >= self._timeout_ms:
            self.timeouts += 1
            logger.warning("azure speech: no final %d ms after turn %d ended: using what was heard",
                           self._timeout_ms, self.turn)
            self._complete()

    def _text(self) -> str:
        parts = [f.text for f in self._finals]
        if self._hypothesis is not None and self._hypothesis.text:
            parts.append(self._hypothesis.text)
        return " ".join(" ".join(parts).split())

    def _first_ms(self) -> int:
        first = self._finals[0] if self._finals else self._hypothesis
        return first.start_ms if first is not None else int(self._start_ms)

    def _complete(self) -> None:
        text = self._text()
        heard = [*self._finals, *([self._hypothesis] if self._hypothesis is not None else [])]
        confidence = min((f.confidence for f in self._finals), default=0.0) if self._finals else 0.0
        end_ms = max((r.end_ms for r in heard), default=int(self._ended_at or self._start_ms))
        self._emit(FinalTranscript(text, confidence=confidence, start_ms=self._first_ms(), end_ms=end_ms,
                                   turn=self.turn))
        self.turn, self._ended_at = 0, None
        self._finals, self._hypothesis = [], None
