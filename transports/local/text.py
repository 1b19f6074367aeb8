"""TextCaller: a scripted caller that types instead of speaking.

A duplex transport: on its source side it sends each line of its script as the final
transcript of a new user turn; on its sink side it collects the agent's replies (LLM
tokens or TTS text, per turn, a greeting on a turn of its own included) and waits for
the ``ResponseEnd`` of the turn it opened before sending the next line, the way a person
waits for an answer. The wait is on the call's clock (``reply_timeout_s``). Used by
``voicegraph call`` on text pipelines and by tests.
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
        self._waiting = 0  # the turn whose answer the caller waits for
        self._answered: asyncio.Future[None] | None = None

    def set_script(self, lines: Sequence[str]) -> None:
        """Replace what the caller will say (before the call starts)."""
        self.script = list(lines)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        clock = self.ctx.clock
        for line in self.script:
            turn = self._waiting = self.ctx.next_turn()
            answered = self._answered = loop.create_future()
            await self.push(FinalTranscript(line, turn=turn))
            deadline = clock.now_ns() + int(self.settings.reply_timeout_s * 1e9)
            async with asyncio.TaskGroup() as tasks:
                expiry = tasks.create_task(clock.sleep_until(deadline), name=f"{self.name}:reply-timeout")
                await asyncio.wait((answered, expiry), return_when=asyncio.FIRST_COMPLETED)
                expiry.cancel()
            if not answered.done():
                logger.warning("%s: no reply to turn %d within %.1f s", self.name, turn,
                               self.settings.reply_timeout_s)

    async def process(self, frame: LLMToken | TTSText) -> None:
        parts = self._tokens.setdefault(frame.turn, [])
        # TTS text arrives as whole clauses: keep a space between them.
        parts.append(frame.text if isinstance(frame, LLMToken) else " " + frame.text)
        self.replies[frame.turn] = "".join(parts).strip()

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        answered = self._answered
        if type(frame) is ResponseEnd and frame.turn == self._waiting and answered is not None and not answered.done():
            answered.set_result(None)
        return None
