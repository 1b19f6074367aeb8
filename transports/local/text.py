"""TextCaller: a scripted caller that types instead of speaking.

A duplex transport: on its source side it sends each line of its script as the final
transcript of a new user turn; on its sink side it collects the agent's reply (LLM
tokens or TTS text) and waits for ``ResponseEnd`` before sending the next line, the way
a person waits for an answer. Used by ``voicegraph call`` on text pipelines and by tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from pipeline.frames import ControlFrame, FinalTranscript, LLMToken, ResponseEnd, TTSText
from pipeline.processor import Processor
from pipeline.settings import Doc, Range

__all__ = ["TextCaller", "TextCallerSettings"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TextCallerSettings:
    """What the caller types."""

    lines: Annotated[tuple[str, ...], Doc("what the caller types, one turn each")] = ()
    reply_timeout_s: Annotated[float, Range(gt=0), Doc("how long to wait for each reply")] = 10.0


class TextCaller(Processor):
    """Sends scripted lines as turns and records the replies (see module docstring)."""

    duplex = True
    produces = (FinalTranscript,)
    consumes = (LLMToken, TTSText)
    Settings = TextCallerSettings
    settings: TextCallerSettings

    def __init__(self, settings: TextCallerSettings | None = None, *, name: str | None = None) -> None:
        super().__init__(settings, name=name)
        self.script: list[str] = list(self.settings.lines)
        #: turn -> reply text as received (tokens joined).
        self.replies: dict[int, str] = {}
        self._tokens: dict[int, list[str]] = {}
        self._answered: asyncio.Future[int] | None = None

    def set_script(self, lines: Sequence[str]) -> None:
        """Replace what the caller will say (before the call starts)."""
        self.script = list(lines)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for line in self.script:
            turn = self.ctx.next_turn()
            self._answered = loop.create_future()
            await self.push(FinalTranscript(line, turn=turn))
            try:
                await asyncio.wait_for(self._answered, self.settings.reply_timeout_s)
            except TimeoutError:
                logger.warning("%s: no reply to turn %d within %.1f s", self.name, turn,
                               self.settings.reply_timeout_s)

    async def process(self, frame: LLMToken | TTSText) -> None:
        parts = self._tokens.setdefault(frame.turn, [])
        # TTS text arrives as whole clauses: keep a space between them.
        parts.append(frame.text if isinstance(frame, LLMToken) else " " + frame.text)
        self.replies[frame.turn] = "".join(parts).strip()

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        if type(frame) is ResponseEnd and self._answered is not None and not self._answered.done():
            self._answered.set_result(frame.turn)
        return None
