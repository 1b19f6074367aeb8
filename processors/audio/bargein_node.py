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

``recover: true`` (false barge-in recovery): the first decision is ``BotPause(turn)``
instead, at the same moment, so the caller hears the bot stop as fast as before; the
transport keeps the rest of the utterance. The flush follows only when the speech proves
a real interruption: ``min_words`` words in the STT's interims (``UserWords``; noise tags
and backchannel words such as "okay", "uh-huh" do not count) or speech still going
``confirm_ms`` after its onset. A cough, a noise or a backchannel gets ``BotResume(turn)``
``resume_ms`` after it stopped (or at once when the endpointing ends the caller's turn
first) and the bot plays on from where it paused; the heard history is the transport's,
so it holds what was actually played either way. The caller's turn that such speech
opened is no turn of the conversation: its ``TurnEnd`` goes on with ``reason:
backchannel``, and the STT drops it instead of finalising it, so the brain never answers
an "uh-huh" (nor takes it as a new turn while the bot's answer is still playing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Annotated

from pipeline.frames import (
    BACKCHANNEL,
    BotPause,
    BotResume,
    BotStartedSpeaking,
    BotStoppedSpeaking,
    ControlFrame,
    EventFrame,
    FlushStart,
    FlushStop,
    InputAudio,
    TurnEnd,
    UserStartedSpeaking,
    UserStoppedSpeaking,
    UserWords,
)
from pipeline.processor import Processor
from pipeline.settings import Doc, Range

from .bargein import BargeIn, BargeInParams, Decision, Interrupt, Pause, Resume, content_words

__all__ = ["BargeInProcessor", "BargeInSettings"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BargeInSettings:
    """When caller speech over the bot interrupts it."""

    min_speech_ms: Annotated[float, Range(ge=0), Doc(
        "how long the caller must talk over the bot (guards against coughs and echo; keep it <= the VAD's start_ms)"
    )] = 200.0
    enabled: Annotated[bool, Doc("false: the caller never interrupts the bot")] = True
    recover: Annotated[bool, Doc(
        "pause the bot at once, flush only on a real interruption, resume after a cough or an 'uh-huh'"
    )] = False
    confirm_ms: Annotated[float, Range(ge=0), Doc(
        "with recover: speech still reported this long after its onset is an interruption "
        "(keep it above the longest backchannel + the VAD's stop_ms)"
    )] = 900.0
    min_words: Annotated[int, Range(ge=1), Doc(
        "with recover: this many words heard by the STT (not 'okay', 'uh-huh') are an interruption")] = 3
    resume_ms: Annotated[float, Range(ge=0), Doc(
        "with recover: the bot plays on this long after speech that proved nothing stopped "
        "(minus the VAD's start_ms: the longest mid-sentence pause that keeps it paused)")] = 600.0


class BargeInProcessor(Processor):
    """Barge-in policy on the caller's audio path (see module docstring)."""

    consumes = (InputAudio,)
    produces = (InputAudio,)
    Settings = BargeInSettings
    settings: BargeInSettings

    def __init__(self, settings: BargeInSettings | None = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        settings = self.settings
        self.policy = BargeIn(BargeInParams(
            min_speech_ms=settings.min_speech_ms,
            confirm_ms=settings.confirm_ms if settings.recover else None,
            min_words=settings.min_words,
            resume_ms=settings.resume_ms,
        ))
        #: Every decision taken, in order (pauses, resumes, interrupts).
        self.decisions: list[Decision] = []
        self.interrupts: list[Interrupt] = []
        self._caller_turn = 0  # the caller's turn whose words count (the latest speech's)
        self._pause_turn = 0  # the caller's turn whose speech paused the bot, until decided
        self._backchannel = 0  # the caller's latest turn that proved no interruption
        self._flush_stop: int | None = None

    def on_event(self, event: EventFrame) -> None:
        kind = type(event)
        if kind is UserWords:
            assert isinstance(event, UserWords)
            if event.turn == self._caller_turn:
                self._act(self.policy.on_words(content_words(event.text), self.ctx.audio_ms))
        elif kind is UserStartedSpeaking:
            assert isinstance(event, UserStartedSpeaking)
            self._caller_turn = event.turn
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

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        if type(frame) is TurnEnd and frame.turn:
            assert isinstance(frame, TurnEnd)
            if frame.turn == self._pause_turn:
                self._act(self.policy.on_user_turn_ended(self.ctx.audio_ms))
            if frame.turn == self._backchannel:
                return replace(frame, reason=BACKCHANNEL)
        return None

    async def process(self, frame: InputAudio) -> None:
        self._act(self.policy.tick(self.ctx.audio_ms))
        if self._flush_stop is not None:
            turn, self._flush_stop = self._flush_stop, None
            await self.push(FlushStop(turn=turn))
        await self.push(frame)

    def _act(self, decisions: list[Decision]) -> None:
        if not self.settings.enabled:
            return
        for decision in decisions:
            turn = decision.turn or 0
            self.decisions.append(decision)
            if isinstance(decision, Pause):
                self._pause_turn = self._caller_turn
                logger.debug("%s: bot paused on turn %d (caller spoke at %.0f ms, paused at %.0f ms)",
                             self.name, turn, decision.speech_started_at_ms, decision.at_ms)
                self.emit(BotPause(turn=turn))
            elif isinstance(decision, Interrupt):
                self._pause_turn = 0
                logger.info("%s: barge-in on turn %d (caller spoke at %.0f ms, decided at %.0f ms)",
                            self.name, turn, decision.speech_started_at_ms, decision.at_ms)
                self.interrupts.append(decision)
                self.emit(FlushStart(turn=turn))
                self._flush_stop = turn
            else:
                assert isinstance(decision, Resume)
                self._backchannel, self._pause_turn = self._pause_turn, 0
                logger.info("%s: false barge-in on turn %d (caller turn %d dropped), bot resumed at %.0f ms",
                            self.name, turn, self._backchannel, decision.at_ms)
                self.emit(BotResume(turn=turn))
