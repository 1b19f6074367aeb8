"""The barge-in processor: turns the caller talking over the bot into a two-phase flush.

A thin wrapper over the pure ``bargein.BargeIn`` policy. It listens to the speaking
events (the VAD's, the transport's) and reads the time from the call's audio clock
(``ctx.audio_ms``, advanced by the VAD node ahead of it); it counts no audio itself.
When the policy decides, it emits ``FlushStart(turn)``, which reaches every node at
once: queues purge, the LLM and TTS streams stop, the transport drops what it has
buffered. On the next audio frame it sends ``FlushStop(turn)`` in-band behind it, so
every node downstream resets what it kept for the interrupted turn in order with the
data (``Processor.on_flush_stop``).

``BotStartedSpeaking(interruptible=False)`` (a legal disclaimer) suspends barge-in until
that utterance ends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from pipeline.frames import (
    BotStartedSpeaking,
    BotStoppedSpeaking,
    EventFrame,
    FlushStart,
    FlushStop,
    InputAudio,
    UserStartedSpeaking,
    UserStoppedSpeaking,
)
from pipeline.processor import Processor
from pipeline.settings import Doc, Range

from .bargein import BargeIn, BargeInParams, Interrupt

__all__ = ["BargeInProcessor", "BargeInSettings"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BargeInSettings:
    """When caller speech over the bot interrupts it."""

    min_speech_ms: Annotated[float, Range(ge=0), Doc(
        "how long the caller must talk over the bot (guards against coughs and echo; keep it <= the VAD's start_ms)"
    )] = 200.0
    enabled: Annotated[bool, Doc("false: the caller never interrupts the bot")] = True


class BargeInProcessor(Processor):
    """Barge-in policy on the caller's audio path (see module docstring)."""

    consumes = (InputAudio,)
    produces = (InputAudio,)
    Settings = BargeInSettings
    settings: BargeInSettings

    def __init__(self, settings: BargeInSettings | None = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        self.policy = BargeIn(BargeInParams(min_speech_ms=self.settings.min_speech_ms))
        self.interrupts: list[Interrupt] = []
        self._flush_stop: int | None = None

    def on_event(self, event: EventFrame) -> None:
        kind = type(event)
        if kind is UserStartedSpeaking:
            assert isinstance(event, UserStartedSpeaking)
            self._act(self.policy.on_user_speech_started(event.at_ms, max(self.ctx.audio_ms, event.at_ms)))
        elif kind is UserStoppedSpeaking:
            assert isinstance(event, UserStoppedSpeaking)
            self._act(self.policy.on_user_speech_stopped(event.at_ms))
        elif kind is BotStartedSpeaking:
            assert isinstance(event, BotStartedSpeaking)
            now_ms = self.ctx.audio_ms
            decisions = self.policy.on_bot_started_speaking(now_ms, event.turn)
            decisions += self.policy.set_uninterruptible(not event.interruptible, now_ms)
            self._act(decisions)
        elif kind is BotStoppedSpeaking:
            now_ms = self.ctx.audio_ms
            self._act(self.policy.on_bot_stopped_speaking(now_ms))
            self._act(self.policy.set_uninterruptible(False, now_ms))

    async def process(self, frame: InputAudio) -> None:
        self._act(self.policy.tick(self.ctx.audio_ms))
        if self._flush_stop is not None:
            turn, self._flush_stop = self._flush_stop, None
            await self.push(FlushStop(turn=turn))
        await self.push(frame)

    def _act(self, decisions: list[Interrupt]) -> None:
        if not self.settings.enabled:
            return
        for decision in decisions:
            turn = decision.turn or 0
            logger.info("%s: barge-in on turn %d (caller spoke at %.0f ms, decided at %.0f ms)",
                        self.name, turn, decision.speech_started_at_ms, decision.at_ms)
            self.interrupts.append(decision)
            self.emit(FlushStart(turn=turn))
            self._flush_stop = turn
