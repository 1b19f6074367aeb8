"""The frame vocabulary: everything that travels through a call's graph.

Frames are small, frozen, slotted dataclasses. This module imports only the standard
library (and numpy, lazily, for audio views), so every layer can depend on it.

Three scheduling classes, as in GStreamer and Pipecat::

    DATA     audio, transcripts, LLM tokens, TTS text and audio. Ordered, queued where a
             node waits on I/O, dropped by a flush when they belong to a stale turn.
    CONTROL  in-band: ordered with the data (audio format, end of stream, response
             start/end, turn start/end, flush stop). Never dropped by a flush.
    EVENT    out-of-band: broadcast to every node by direct call, jumping every queue
             (start, cancel, flush start, user/bot speaking, errors, metrics).

Every frame carries ``turn``, the turn it was produced for: a user turn, or a bot
utterance of its own (a greeting); both numbers come from the call's one counter
(``ctx.next_turn()``). ``0`` means "not bound to a turn" (caller audio, formats): a flush
never drops those, and bot speech never has it. A frame
of turn ``n`` is stale once ``FlushStart(turn >= n)`` has been broadcast, so audio of an
interrupted turn is dropped by one comparison, never by timing luck.

``ts`` is the creation time in nanoseconds on the call's clock (``ctx.clock``): the
runner installs it with :func:`use_clock` for every task of the call, so a call on a
``VirtualClock`` stamps its frames in virtual time and latency figures are measured on
the same clock that paces the audio. Outside a call, frames use ``time.monotonic_ns``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "BACKCHANNEL",
    "AudioFormat",
    "BotPause",
    "BotResume",
    "BotStartedSpeaking",
    "AgentSwitch",
    "BotStoppedSpeaking",
    "CallAction",
    "Cancel",
    "ControlFrame",
    "DTMF",
    "DataFrame",
    "EndOfStream",
    "ErrorEvent",
    "EventFrame",
    "FinalTranscript",
    "FlushStart",
    "FlushStop",
    "Frame",
    "FrameClass",
    "InputAudio",
    "InterimTranscript",
    "LLMToken",
    "MetricsEvent",
    "ModelTurn",
    "OutputAudio",
    "ResponseEnd",
    "ResponseStart",
    "SafetyFlag",
    "Speak",
    "Start",
    "TTSText",
    "ToolCall",
    "Transcript",
    "TurnEnd",
    "TurnStart",
    "UserStartedSpeaking",
    "UserStoppedSpeaking",
    "UserWords",
    "now_ns",
    "reset_clock",
    "use_clock",
]

#: ``TurnEnd.reason`` of a caller turn that was only a backchannel or a noise over the bot.
BACKCHANNEL = "backchannel"

_CLOCK: ContextVar[Callable[[], int]] = ContextVar("voicegraph_clock", default=time.monotonic_ns)


def now_ns() -> int:
    """The current call's clock, in nanoseconds (``time.monotonic_ns`` outside a call)."""
    return _CLOCK.get()()


def use_clock(now: Callable[[], int]) -> Token[Callable[[], int]]:
    """Stamp frames made in this context (and tasks created from it) with ``now()``.

    Returns the token to pass to ``reset_clock`` when the call ends.
    """
    return _CLOCK.set(now)


def reset_clock(token: Token[Callable[[], int]]) -> None:
    """Undo :func:`use_clock`."""
    _CLOCK.reset(token)


class FrameClass(enum.IntEnum):
    """Scheduling class of a frame type (see the module docstring)."""

    DATA = 0
    CONTROL = 1
    EVENT = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """Base of every frame: the turn it belongs to and when it was created."""

    turn: int = 0
    ts: int = field(default_factory=now_ns, compare=False)

    kind: ClassVar[FrameClass] = FrameClass.DATA
    #: Sticky frames are remembered by the node that pushed them and replayed to late joiners.
    sticky: ClassVar[bool] = False


# --- scheduling-class bases -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DataFrame(Frame):
    """Payload: ordered, queued, dropped when its turn is flushed."""

    kind: ClassVar[FrameClass] = FrameClass.DATA


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlFrame(Frame):
    """In-band control: ordered with the data, never dropped by a flush."""

    kind: ClassVar[FrameClass] = FrameClass.CONTROL


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFrame(Frame):
    """Out-of-band: broadcast to every node at once, jumping all queues."""

    kind: ClassVar[FrameClass] = FrameClass.EVENT


# --- data -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputAudio(DataFrame):
    """Caller audio: PCM16 mono little-endian; the rate is in the sticky ``AudioFormat``."""

    pcm: bytes

    def samples(self) -> npt.NDArray[np.int16]:
        """A zero-copy int16 view of the PCM bytes."""
        import numpy as np

        return np.frombuffer(self.pcm, dtype=np.int16)


@dataclass(frozen=True, slots=True)
class OutputAudio(DataFrame):
    """Bot audio (TTS output) on its way to the caller; PCM16 mono."""

    pcm: bytes

    def samples(self) -> npt.NDArray[np.int16]:
        """A zero-copy int16 view of the PCM bytes."""
        import numpy as np

        return np.frombuffer(self.pcm, dtype=np.int16)


@dataclass(frozen=True, slots=True)
class Transcript(DataFrame):
    """What speech recognition heard. Times are ms from the start of the call's audio."""

    text: str
    confidence: float = 1.0
    start_ms: int = 0
    end_ms: int = 0


@dataclass(frozen=True, slots=True)
class InterimTranscript(Transcript):
    """A partial hypothesis: may still change."""


@dataclass(frozen=True, slots=True)
class FinalTranscript(Transcript):
    """The final text of a user turn (or typed text on a text-only call)."""


@dataclass(frozen=True, slots=True)
class LLMToken(DataFrame):
    """A piece of the agent's streamed answer."""

    text: str


@dataclass(frozen=True, slots=True)
class Speak(DataFrame):
    """Words the bot says on its own, not in answer to a caller's turn: a greeting, a
    prompt, a notice. ``turn`` is a turn handed out for it (``ctx.next_turn()``), so it
    can be barged in on and the heard-only history stays exact like any answer."""

    text: str
    interruptible: bool = True


@dataclass(frozen=True, slots=True)
class TTSText(DataFrame):
    """A clause or sentence ready to be spoken."""

    text: str


@dataclass(frozen=True, slots=True)
class DTMF(DataFrame):
    """Keypad digits the caller pressed (``0-9 * # A-D``), in the order pressed: a menu
    choice or a number the brain can use. ``turn`` is 0: a key press is not bound to a
    turn, so a flush never drops it."""

    digits: str


# --- in-band control --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioFormat(ControlFrame):
    """Sticky: the format of the audio that follows on one stream (``in`` or ``out``)."""

    sample_rate: int
    channels: int = 1
    stream: Literal["in", "out"] = "in"

    sticky: ClassVar[bool] = True

    @property
    def bytes_per_ms(self) -> float:
        """PCM16 bytes per millisecond of audio in this format."""
        return self.sample_rate * self.channels * 2 / 1000.0


@dataclass(frozen=True, slots=True)
class EndOfStream(ControlFrame):
    """The source has nothing more; travels in order behind the last data."""


@dataclass(frozen=True, slots=True)
class ResponseStart(ControlFrame):
    """The agent starts answering the user turn ``turn``.

    ``interruptible=False`` marks an answer the caller cannot barge in on (a legal
    disclaimer); the transport passes it on in ``BotStartedSpeaking``.
    """

    interruptible: bool = True


@dataclass(frozen=True, slots=True)
class ResponseEnd(ControlFrame):
    """The agent finished answering the user turn ``turn``."""


@dataclass(frozen=True, slots=True)
class TurnStart(ControlFrame):
    """The caller started user turn ``turn``; in-band, so it sits right before its audio.

    ``at_ms`` is the call-audio time of the speech onset (the start of the VAD window);
    ``stream_ms`` the call-audio time at which this frame sits in the audio stream (the
    end of the audio before it), so a node behind a queue can place the turn's audio
    without counting audio itself.
    """

    at_ms: float = 0.0
    stream_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class TurnEnd(ControlFrame):
    """Endpointing decided the caller finished turn ``turn``: finalise the transcript now.

    ``reason`` is why (``silence``, ``max_duration``); ``at_ms`` the call-audio time.
    :data:`BACKCHANNEL`: barge-in found the turn was no turn (a cough, an "uh-huh" over
    the bot): drop it, no transcript.
    """

    at_ms: float = 0.0
    reason: str = "silence"


@dataclass(frozen=True, slots=True)
class FlushStop(ControlFrame):
    """Second phase of a flush: in-band, resets per-turn state up to ``turn``."""


# --- out-of-band events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start(EventFrame):
    """The call starts; carries its id."""

    call_id: str = ""


@dataclass(frozen=True, slots=True)
class Cancel(EventFrame):
    """Stop the call now (hang-up, shutdown); nothing more is processed."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class FlushStart(EventFrame):
    """First phase of a flush (barge-in): drop everything of turns up to ``turn``."""


@dataclass(frozen=True, slots=True)
class BotPause(EventFrame):
    """Barge-in, first step: the caller may be interrupting ``turn``. The transport stops
    playing its audio now and keeps the rest, until ``BotResume`` or ``FlushStart``."""


@dataclass(frozen=True, slots=True)
class BotResume(EventFrame):
    """The speech over paused ``turn`` was no interruption (a cough, an "uh-huh"): play
    on from where it paused."""


@dataclass(frozen=True, slots=True)
class UserWords(EventFrame):
    """STT: an interim ``text`` of the caller's open ``turn``, as it is heard. Barge-in
    reads it for proof of a real interruption (enough words, not "uh-huh"); the VAD
    node's text end of turn judges it. ``heard_ms``: the call-audio time up to which
    the STT had heard when it produced ``text`` (words older than a speech stop are
    stale for that pause)."""

    text: str = ""
    heard_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class UserStartedSpeaking(EventFrame):
    """VAD: the caller started speaking (``at_ms``: call-audio time of the onset)."""

    at_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class UserStoppedSpeaking(EventFrame):
    """VAD: the caller stopped speaking (``at_ms``: call-audio time of the stop)."""

    at_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class BotStartedSpeaking(EventFrame):
    """The transport started playing the bot's audio for ``turn``."""

    interruptible: bool = True


@dataclass(frozen=True, slots=True)
class BotStoppedSpeaking(EventFrame):
    """The transport stopped playing bot audio for ``turn`` (finished, or flushed).

    ``heard_text`` is the part of the answer the caller actually heard: whole clauses
    played, plus the played share of the clause cut off by a barge-in.
    """

    played_ms: float = 0.0
    interrupted: bool = False
    heard_text: str = ""


@dataclass(frozen=True, slots=True)
class ErrorEvent(EventFrame):
    """A node failed on something; ``fatal`` ends the call, otherwise it goes on."""

    node: str
    message: str
    fatal: bool = False
    error: BaseException | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class MetricsEvent(EventFrame):
    """A measurement: ``name`` in ``unit`` for ``node`` (and ``turn`` when per turn)."""

    node: str
    name: str
    value: float
    unit: str = "ms"


@dataclass(frozen=True, slots=True)
class ModelTurn(EventFrame):
    """A model request of ``turn`` was answered (a turn with tool calls makes several):
    the ``route`` and ``why`` it was chosen, the ``deployment`` and ``model`` that served it,
    the deployments passed over (``failovers``, each ``"name: reason"``), the time to first
    token on the call's clock and the token usage the server reported."""

    route: str
    deployment: str
    model: str
    why: str = ""
    failovers: tuple[str, ...] = ()
    first_token_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ToolCall(EventFrame):
    """The brain ran tool ``name`` for ``turn``: ``arguments`` and ``result`` are the JSON
    texts the model wrote and read back; ``error`` says what went wrong, if anything."""

    name: str
    arguments: str
    result: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class AgentSwitch(EventFrame):
    """The agent in charge changed in ``turn``: ``agent_from`` (blank at call start) handed
    the call to ``agent_to`` because of ``reason`` (a handoff, an intent, the scenario's
    entry); ``announced``: the new agent introduced itself; ``voice``: the new agent's TTS
    voice (its agent file's ``voice``; blank: the pipeline's); ``phrases``: the new agent's
    phrase list (its agent file's ``phrases``), added to the STT's while it is in charge."""

    agent_from: str
    agent_to: str
    reason: str = ""
    announced: bool = True
    voice: str = ""
    phrases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CallAction(EventFrame):
    """The brain asks for a call action in ``turn``: ``action`` is ``"transfer"`` (to a
    human) or ``"hangup"``; the transport acts on it when it has a control plane."""

    action: str
    reason: str = ""
    agent: str = ""


@dataclass(frozen=True, slots=True)
class SafetyFlag(EventFrame):
    """Something was screened out in ``turn``: ``flag`` (``ignore_instructions``,
    ``prompt_leak``, ``markup``, ...), the ``matched`` text and its ``source``
    (``transcript``, ``tool:<name>``, ``reply``)."""

    flag: str
    matched: str
    source: str
