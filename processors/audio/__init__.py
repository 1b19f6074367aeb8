"""Audio front end: resampling, voice activity, endpointing and barge-in.

Everything here is pure and synchronous: objects take audio or events together with the
time (milliseconds, an argument, never read from a clock) and return events. Thin
pipeline processors wrap them; tests drive them on virtual time.

- :mod:`~processors.audio.resample` -- :class:`Resampler`, streaming soxr conversion.
- :mod:`~processors.audio.vad` -- :class:`Vad`, speech start/stop from 10-30 ms frames.
- :mod:`~processors.audio.endpointing` -- :class:`Endpointing`, when the caller's turn ends.
- :mod:`~processors.audio.bargein` -- :class:`BargeIn`, when caller speech stops the bot.
"""

from processors.audio.bargein import BargeIn, BargeInParams, BargeInState, Interrupt
from processors.audio.endpointing import (
    Endpointing,
    EndpointingEvent,
    EndpointingParams,
    EndReason,
    FixedSilence,
    ModelSilence,
    SilenceStrategy,
    TurnEnded,
    TurnSnapshot,
    TurnStarted,
    TurnState,
)
from processors.audio.resample import (
    INPUT_QUALITY,
    OUTPUT_QUALITY,
    SUPPORTED_RATES,
    Quality,
    Resampler,
    measure_delay_ms,
)
from processors.audio.vad import (
    Classifier,
    SpeechStarted,
    SpeechStopped,
    Vad,
    VadEvent,
    VadParams,
    VadState,
    webrtc_classifier,
)

__all__ = [
    # resample
    "INPUT_QUALITY",
    "OUTPUT_QUALITY",
    "SUPPORTED_RATES",
    "Quality",
    "Resampler",
    "measure_delay_ms",
    # vad
    "Classifier",
    "SpeechStarted",
    "SpeechStopped",
    "Vad",
    "VadEvent",
    "VadParams",
    "VadState",
    "webrtc_classifier",
    # endpointing
    "EndReason",
    "Endpointing",
    "EndpointingEvent",
    "EndpointingParams",
    "FixedSilence",
    "ModelSilence",
    "SilenceStrategy",
    "TurnEnded",
    "TurnSnapshot",
    "TurnStarted",
    "TurnState",
    # barge-in
    "BargeIn",
    "BargeInParams",
    "BargeInState",
    "Interrupt",
]
