"""RulesBrain: a deterministic agent that answers from the transcript with YAML rules.

It stands where an LLM stands (final transcript in, streamed tokens out, bracketed by
ResponseStart/ResponseEnd) so pipelines, barge-in and latency can be exercised with no
model and no network. Rules are case-insensitive regular expressions tried in order; a
reply may use ``{text}`` (what the caller said) and the rule's named groups.

Keypad digits (``DTMF`` frames) are answered by the ``dtmf`` rules, tried on the digits
the same way (``{digits}`` and named groups in the reply); a key press is a user turn of
its own (it is bound to none), so its answer gets a turn from the call's counter and is
recorded in the conversation as ``[keys 1]``. A pipeline without STT sets
``answer_turn_ends`` so each end of a caller's turn is answered as an empty transcript
(the ``empty_reply``): the media path can then be run alone, with no recogniser. The
brain then stands where the STT would, and the caller's audio ends here as it would
there: it is taken and dropped, instead of travelling on through the TTS side of the
graph to the transport, fifty times a second per call.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated

from pipeline.errors import ConfigError
from pipeline.frames import DTMF, ControlFrame, DataFrame, FinalTranscript, InputAudio, Speak, TurnEnd
from pipeline.settings import Doc

from .brain import BrainProcessor, BrainSettings, stream_words

__all__ = ["RulesBrain", "RulesBrainSettings"]


@dataclass(frozen=True, kw_only=True)
class RulesBrainSettings(BrainSettings):
    """Regex rules and the replies they give (plus the ``greeting`` and ``apology`` every brain has)."""

    rules: Annotated[Mapping[str, str], Doc("regex pattern -> reply, tried in order")] = field(
        default_factory=lambda: MappingProxyType({}))
    fallback: Annotated[str, Doc("reply when no rule matches; {text} is what the caller said")] = "You said: {text}."
    empty_reply: Annotated[str, Doc("reply to a turn with an empty transcript (noise, nothing recognised)")] = (
        "Sorry, I did not catch that.")
    uninterruptible: Annotated[tuple[str, ...], Doc("patterns whose replies the caller cannot interrupt")] = ()
    dtmf: Annotated[Mapping[str, str], Doc("regex on the keypad digits pressed -> reply, tried in order")] = field(
        default_factory=lambda: MappingProxyType({}))
    dtmf_fallback: Annotated[str, Doc("reply to digits no dtmf rule matches; {digits} (blank: no reply)")] = ""
    answer_turn_ends: Annotated[bool, Doc(
        "answer each end of turn as an empty transcript (empty_reply): for a pipeline without STT only, "
        "since with one the turn would be answered twice")] = False


class RulesBrain(BrainProcessor):
    """Answers each final transcript by the first matching rule, streaming word tokens."""

    consumes: tuple[type[DataFrame], ...] = (FinalTranscript, Speak, DTMF)
    preemptable = True  # an answer is a pure function of the words
    Settings = RulesBrainSettings
    settings: RulesBrainSettings

    def __init__(self, settings: RulesBrainSettings | None = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        if self.settings.answer_turn_ends:
            self.consumes = (*self.consumes, InputAudio)
        self._rules = _compile(self.settings.rules, "rule")
        self._dtmf = _compile(self.settings.dtmf, "dtmf rule")
        try:
            self._fixed = [re.compile(p, re.IGNORECASE) for p in self.settings.uninterruptible]
        except re.error as exc:
            raise ConfigError(f"uninterruptible pattern is not a valid regular expression: {exc}") from exc

    def answer(self, text: str) -> str:
        """The reply to ``text`` (pure: no state, no I/O)."""
        text = text.strip()
        if not text:
            return self.settings.empty_reply
        for pattern, reply in self._rules:
            match = pattern.search(text)
            if match:
                return _fill(reply, text, match.groupdict())
        return _fill(self.settings.fallback, text, {})

    def answer_dtmf(self, digits: str) -> str:
        """The reply to keypad ``digits`` ("" for none; pure)."""
        for pattern, reply in self._dtmf:
            match = pattern.search(digits)
            if match:
                return _fill(reply, digits, match.groupdict())
        return _fill(self.settings.dtmf_fallback, digits, {})

    def respond(self, text: str, turn: int) -> AsyncIterator[str]:
        return stream_words(self.answer(text))

    async def process(self, frame: FinalTranscript | Speak | DTMF | InputAudio) -> None:
        if isinstance(frame, InputAudio):
            return  # the audio ends here, as at an STT (answer_turn_ends)
        if not isinstance(frame, DTMF):
            await super().process(frame)
            return
        reply = self.answer_dtmf(frame.digits)
        if not reply:
            return
        turn = self.ctx.next_turn()
        self._close_previous()
        self.conversation.add_user(f"[keys {frame.digits}]", turn)
        await self._speak(turn, stream_words(reply), interruptible=True)

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        if self.settings.answer_turn_ends and type(frame) is TurnEnd:
            await self.process(FinalTranscript("", turn=frame.turn))  # here: in order with the input
        return await super().on_control(frame)

    def interruptible_reply(self, text: str) -> bool:
        return not any(p.search(text) for p in self._fixed)


def _compile(rules: Mapping[str, str], what: str) -> list[tuple[re.Pattern[str], str]]:
    compiled = []
    for pattern, reply in rules.items():
        try:
            compiled.append((re.compile(pattern, re.IGNORECASE), reply))
        except re.error as exc:
            raise ConfigError(f"{what} /{pattern}/ is not a valid regular expression: {exc}") from exc
    return compiled


def _fill(template: str, text: str, groups: dict[str, str | None]) -> str:
    values = {k: v or "" for k, v in groups.items()}
    values["text"] = values["digits"] = text
    try:
        return str(template.format(**values))
    except (KeyError, IndexError, ValueError):
        return template
