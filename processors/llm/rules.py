"""RulesBrain: a deterministic agent that answers from the transcript with YAML rules.

It stands where an LLM stands (final transcript in, streamed tokens out, bracketed by
ResponseStart/ResponseEnd) so pipelines, barge-in and latency can be exercised with no
model and no network. Rules are case-insensitive regular expressions tried in order; a
reply may use ``{text}`` (what the caller said) and the rule's named groups.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated

from pipeline.errors import ConfigError
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


class RulesBrain(BrainProcessor):
    """Answers each final transcript by the first matching rule, streaming word tokens."""

    Settings = RulesBrainSettings
    settings: RulesBrainSettings

    def __init__(self, settings: RulesBrainSettings | None = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        self._rules: list[tuple[re.Pattern[str], str]] = []
        for pattern, reply in self.settings.rules.items():
            try:
                self._rules.append((re.compile(pattern, re.IGNORECASE), reply))
            except re.error as exc:
                raise ConfigError(f"rule /{pattern}/ is not a valid regular expression: {exc}") from exc
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

    def respond(self, text: str, turn: int) -> AsyncIterator[str]:
        return stream_words(self.answer(text))

    def interruptible_reply(self, text: str) -> bool:
        return not any(p.search(text) for p in self._fixed)


def _fill(template: str, text: str, groups: dict[str, str | None]) -> str:
    values = {k: v or "" for k, v in groups.items()}
    values["text"] = text
    try:
        return str(template.format(**values))
    except (KeyError, IndexError, ValueError):
        return template
