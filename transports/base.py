"""Transport: the duplex contract every transport shares. Subclasses add only their wire.

A transport is the node at both ends of a call's graph (``caller -> ... -> caller``): a
source of the caller's audio and the sink of the bot's. This base owns everything that
does not depend on the wire (see docs/design/transports.md):

* **Inbound.** The wire announces the caller's format once (:meth:`input_format`, an
  ``AudioFormat(stream="in")``) and then hands over audio as it arrives
  (:meth:`receive_audio`, one ``InputAudio`` each). The wire's :meth:`serve` runs for
  as long as the call: when it returns, the caller has hung up and the stream ends.
* **Outbound, paced.** Bot ``TTSText`` and ``OutputAudio`` go into a :class:`Playout`
  (lead buffer, one turn at a time, what-was-heard ledger). At each tick of the worker's
  shared :mod:`pacer <transports.pacer>` the transport takes at most one frame from it,
  synchronously (nothing wakes while there is nothing to play), and hands the frame to
  its sender task, which awaits :meth:`send_audio`. One frame at a time is in flight:
  a tick that finds the wire still taking the last one is skipped (``slots_missed``),
  so a slow wire never gets a burst.
* **Bot speaking events.** ``BotStartedSpeaking(turn, interruptible)`` when the first
  frame of a turn goes out (``interruptible`` from the turn's ``ResponseStart``), and
  ``BotStoppedSpeaking(turn, played_ms, interrupted, heard_text)`` when it played out or
  was flushed. Turns play one after the other in turn order; only a flush cuts one.
* **Flush (barge-in).** ``on_flush`` is synchronous: it drops the buffered audio at once
  (a frame taken but not yet sent included) and emits ``BotStoppedSpeaking``; if any
  audio of the turn had gone out, it wakes the sender task at once, between ticks, to
  call :meth:`clear_audio` (ACS sends ``StopAudio`` there) before any further frame. No
  await happens inside ``on_flush``.
* **Pause and resume (a possible barge-in).** ``BotPause(turn)`` stops the turn playing
  between two frames and keeps the rest (the frame taken at the last tick still goes
  out); if audio of it had gone out, the wire is cleared as for a flush, so the far end
  goes quiet at once. ``BotResume(turn)`` plays on from the sample it stopped at; a
  ``FlushStart`` during the pause ends the turn as usual, reporting what was heard up
  to the pause (the wire is not cleared twice).
* **Format check.** Bot audio must arrive at the line rate, mono: an
  ``AudioFormat(stream="out")`` that says otherwise is a configuration error (a
  ``resample`` node is missing), reported as a ``FrameError`` naming the rates.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any

from pipeline.errors import ConfigError, FrameError, StateError
from pipeline.frames import (
    AudioFormat,
    BotPause,
    BotResume,
    BotStartedSpeaking,
    BotStoppedSpeaking,
    ControlFrame,
    DataFrame,
    EventFrame,
    InputAudio,
    OutputAudio,
    ResponseEnd,
    ResponseStart,
    TTSText,
)
from pipeline.processor import Processor

from .pacer import pacer_for
from .playout import Playout, PlayoutEvent, PlayoutStarted, PlayoutStopped

__all__ = ["LINE_RATES", "Transport"]

#: Line rates a transport accepts: narrowband telephony, wideband, ACS's 24 kHz, WebRTC.
LINE_RATES = (8000, 16000, 24000, 48000)
_FRAME_MS = (10, 20, 30)


class Transport(Processor, ABC):
    """Base of every transport: the duplex contract (see module docstring).

    Args:
        sample_rate: the line's rate, both ways (:data:`LINE_RATES`).
        frame_ms: the outbound frame period: 10, 20 (the telephony norm) or 30 ms.
        lead_ms: audio buffered before a response starts playing (absorbs TTS jitter).
    """

    duplex = True
    produces: tuple[type[DataFrame], ...] = (InputAudio,)  # a wire may add its own (ACS: DTMF)
    consumes = (OutputAudio, TTSText)

    def __init__(
        self,
        settings: Any = None,
        *,
        name: str | None = None,
        sample_rate: int = 16000,
        frame_ms: int = 20,
        lead_ms: int = 60,
    ) -> None:
        super().__init__(settings, name=name)
        if sample_rate not in LINE_RATES:
            raise ConfigError(f"line sample_rate must be one of {', '.join(map(str, LINE_RATES))}, got {sample_rate}")
        if frame_ms not in _FRAME_MS:
            raise ConfigError(f"frame_ms must be 10, 20 or 30, got {frame_ms}")
        if lead_ms < 0:
            raise ConfigError(f"lead_ms must be >= 0, got {lead_ms}")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.playout = Playout(sample_rate, frame_ms=frame_ms, lead_ms=lead_ms)
        #: Bot frames the wire took.
        self.frames_sent = 0
        #: Ticks skipped because the wire was still taking the previous frame.
        self.slots_missed = 0
        #: The turn of the frame being handed to the wire (for wires that label audio).
        self.sending_turn = 0
        self._outbox: tuple[int, bytes] | None = None  # (turn, frame) taken at the last tick, not yet sent
        self._sending = False
        self._clear = False  # a flush or pause cut audio the wire may still hold: clear it
        self._wire_clear = True  # no bot audio sent since the wire was last cleared
        self._wakeup: asyncio.Future[None] | None = None  # the sender task waits on it
        self._interruptible: dict[int, bool] = {}
        self._input_rate = 0

    # --- the wire: what each transport adds ----------------------------------------------

    @abstractmethod
    async def serve(self) -> None:
        """Run the wire's inbound side: announce the format, receive audio, until hang-up.

        Call :meth:`input_format` once, then :meth:`receive_audio` for each chunk. When
        this returns the call's input has ended (``EndOfStream`` follows).
        """

    @abstractmethod
    async def send_audio(self, pcm: bytes) -> None:
        """Put one frame of bot audio (PCM16 mono at the line rate, ``frame_ms`` long) on
        the wire. Called at most once per tick by the playout task; it may await (a socket
        write), and slots that pass meanwhile are skipped, not sent in a burst."""

    async def clear_audio(self) -> None:
        """Tell the far end to drop bot audio it still holds (ACS: ``StopAudio``).

        Called by the playout task right after a flush cut a turn that had audio out,
        before any further frame. The default does nothing (a wire with no buffer).
        """

    # --- inbound: for the wire ---------------------------------------------------------

    async def input_format(self, sample_rate: int, channels: int = 1) -> None:
        """The caller's audio format, once, before any :meth:`receive_audio`."""
        if channels != 1:
            raise FrameError(f"{self.name}: caller audio must be mono PCM16, got {channels} channels")
        self._input_rate = sample_rate
        await self.push(AudioFormat(sample_rate, stream="in"))

    async def receive_audio(self, pcm: bytes) -> None:
        """Audio from the caller (PCM16 mono at the announced rate) into the graph."""
        if not self._input_rate:
            raise StateError(f"{self.name}: caller audio before input_format() announced its rate")
        if len(pcm) % 2:
            raise FrameError(f"{self.name}: caller audio must be whole PCM16 samples, got {len(pcm)} bytes")
        await self.push(InputAudio(pcm))

    # --- the processor side -------------------------------------------------------------

    def latency_ms(self) -> tuple[float, float]:
        return (float(self.frame_ms), float(self.frame_ms + self.playout.lead_ms))

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                sender = tasks.create_task(self._send(), name=f"{self.ctx.call_id}:{self.name}:send")
                with pacer_for(self.ctx.clock, self.frame_ms).every_tick(self._on_tick):
                    try:
                        await self.serve()
                    finally:
                        sender.cancel()
        except ExceptionGroup as group:  # one wire failure: report it, not a group of one
            raise group.exceptions[0] from None

    async def process(self, frame: OutputAudio | TTSText) -> None:
        if isinstance(frame, TTSText):
            self.playout.add_text(frame.turn, frame.text)
        else:
            self.playout.add_audio(frame.turn, frame.pcm)

    async def on_control(self, frame: ControlFrame) -> ControlFrame | None:
        if isinstance(frame, AudioFormat):
            if frame.stream == "out" and (frame.sample_rate != self.sample_rate or frame.channels != 1):
                raise FrameError(f"bot audio at {frame.sample_rate} Hz, {frame.channels} channel(s) on a "
                                 f"{self.sample_rate} Hz mono line: put a 'resample' node (stream: out) "
                                 f"before '{self.name}'")
        elif isinstance(frame, ResponseStart):
            current = self.playout.turn
            self._interruptible = {t: v for t, v in self._interruptible.items() if t >= current}
            self._interruptible[frame.turn] = frame.interruptible
        elif isinstance(frame, ResponseEnd):
            events = self.playout.end_response(frame.turn)
            if events:
                self._announce(events)
        return None

    def on_flush(self, turn: int) -> None:
        events = self.playout.flush(turn)
        if not events:
            return
        if any(isinstance(ev, PlayoutStopped) and ev.played_ms > 0 for ev in events):
            self._outbox = None  # taken at the last tick, but not heard yet: drop it too
            self._clear_wire()
        self._announce(events)

    def on_event(self, event: EventFrame) -> None:
        kind = type(event)
        if kind is BotPause:
            if self.playout.pause(event.turn):
                self._clear_wire()
        elif kind is BotResume:
            events = self.playout.resume(event.turn)
            if events:
                self._announce(events)

    # --- internals ----------------------------------------------------------------------

    def _on_tick(self, slot_ns: int) -> None:
        """At each tick of the pacer (synchronous, in the call's context): take a frame."""
        if self._outbox is not None or self._sending:
            self.slots_missed += 1  # the wire is still taking the last frame: no burst later
            return
        turn = self.playout.turn  # before next_frame: after a turn's last frame, the next is current
        frame, events = self.playout.next_frame()
        if events:
            self._announce(events)  # a start is announced as its first frame goes out
        if frame is not None:
            self._outbox = (turn, frame)
            self._wake_sender()

    async def _send(self) -> None:
        """The sender task: hands each frame taken at a tick to the wire, and clears the
        wire after a flush. It wakes only when there is something to do."""
        loop = asyncio.get_running_loop()
        while True:
            if self._outbox is None and not self._clear:
                self._wakeup = loop.create_future()
                await self._wakeup
            # A frame still here was taken before a pause (a flush drops it): it was
            # counted as heard, so it goes out, and the clear follows it.
            out, self._outbox = self._outbox, None
            if out is not None:
                self.sending_turn, frame = out
                self._sending = True
                self._wire_clear = False
                try:
                    await self.send_audio(frame)
                finally:
                    self._sending = False
                self.frames_sent += 1
            if self._clear:
                self._clear = False
                self._wire_clear = True
                await self.clear_audio()

    def _clear_wire(self) -> None:
        """Have the sender clear the wire now, not at the next tick (the far end stops
        sooner), unless nothing was sent since it was last cleared."""
        if not self._wire_clear:
            self._clear = True
            self._wake_sender()

    def _wake_sender(self) -> None:
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _announce(self, events: list[PlayoutEvent]) -> None:
        now = self.ctx.clock.now_ns()
        for ev in events:
            if isinstance(ev, PlayoutStarted):
                self.emit(BotStartedSpeaking(turn=ev.turn, interruptible=self._interruptible.get(ev.turn, True),
                                             ts=now))
            else:
                self._interruptible.pop(ev.turn, None)
                self.emit(BotStoppedSpeaking(turn=ev.turn, played_ms=ev.played_ms, interrupted=ev.interrupted,
                                             heard_text=ev.heard_text, ts=now))
