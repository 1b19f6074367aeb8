"""The media caller: ACS's side of a call's media WebSocket, as a scripted person on the phone.

:class:`AcsMediaCaller` connects to a server's media WebSocket the way ACS does (an
aiohttp client, with the headers ACS sends on the upgrade: ``Authorization: Bearer <JWT>``,
``x-ms-call-connection-id``, ``x-ms-call-correlation-id``), and plays the person at the
other end of the phone line:

* It opens the stream with ``AudioMetadata``, then sends one ``AudioData`` every 20 ms
  (the shared pacer's slots), in ACS's camelCase with ``timestamp``, ``participantRawID``
  and ``silent: true`` on silent chunks; messages come from the ACS codec
  (:class:`~transports.acs.codec.InboundEncoder`). With ``realtime=False`` the caller's
  lines go out as fast as the server takes them (tests); the waits between them still
  pass in real time, because the bot's audio comes at real time.
* It says its script (:mod:`transports.local.script`: lines synthesised off the event
  loop, or a WAV file) the way :class:`~transports.local.speech.SpeechCaller` does: the
  first line when the line opens, unless the bot speaks first (a greeting: then it
  waits for it); each next line when the bot's answer has finished, after a pause; or,
  with ``interrupt_after_ms``, talking over the answer that long after it started.
  After the last answer it pauses and hangs up (closes the socket).
* What the server sends (either casing, read with
  :class:`~transports.acs.codec.OutboundDecoder`) goes to its ear
  (:class:`~.caller_ear.CallerEar`): the bot's audio is played at real time, an answer
  is over when its audio has played and nothing came for ``quiet_ms``, and
  ``StopAudio`` drops what was buffered. A message it cannot read is counted and
  logged, and the call goes on.
* It measures, per line (:class:`CallerLine`): voice-to-voice, from the end of the
  line (the slot after its last frame) to the first frame of the bot's answer received;
  and, for a line said over the bot, the barge-in reaction, from the voice onset (the
  first loud frame, :func:`~transports.local.script.voice_onset_ms`) to ``StopAudio``
  received (:class:`~transports.local.heard.BargeInMeter`), and the bot frames of the
  stopped response that still came after it (there must be none).

It knows nothing of the server's turns: it hears what a person hears. Its clock is the
monotonic clock (the same as a real call's, so in-process measurements line up).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from pipeline.clock import MonotonicClock
from pipeline.errors import ProtocolError, VoicegraphError
from transports.acs.codec import InboundEncoder, OutboundDecoder
from transports.acs.messages import BotAudio, StopAudio
from transports.local.heard import BargeInMeter
from transports.local.script import Utterance, Voice, render_script
from transports.pacer import pacer_for

from .caller_ear import CallerEar, Response, spacing_summary

__all__ = ["AcsCallerSettings", "AcsMediaCaller", "CallerError", "CallerLine", "run"]

logger = logging.getLogger(__name__)

FRAME_MS = 20


class CallerError(VoicegraphError):
    """The media caller could not place its call (the socket was refused or never opened)."""


@dataclass(frozen=True, kw_only=True)
class AcsCallerSettings:
    """What the caller says and how it behaves on the line."""

    #: Lines said in turn: text (synthesised with ``voice``) or audio already at the line rate.
    say: tuple[str | Utterance, ...] = ()
    voice: Voice = "piper"
    #: A WAV file said as the one line instead of ``say``.
    wav: Path | None = None
    #: The line rate the call was answered with (ACS: 16000 or 24000).
    sample_rate: int = 16000
    #: The longest silence after the socket opens before the first line: the bot may speak
    #: first (a greeting; the caller then waits for it to finish); if it has not started
    #: by then, the caller speaks.
    opening_ms: float = 1000.0
    pause_ms: float = 500.0
    answer_timeout_s: float = 20.0
    #: Talk over each answer this long after it starts (``None``: wait for it to finish).
    interrupt_after_ms: float | None = None
    #: Nothing received for this long, and nothing left to play: the bot's answer is over.
    quiet_ms: float = 200.0
    #: ``False``: send each line as fast as the server takes it (tests).
    realtime: bool = True
    #: The speaker's raw id in ``AudioData`` (a phone number, as ACS writes one).
    participant: str = "4:+15555550100"
    #: A WAV path to keep the bot's audio as the caller heard it (blank: none).
    record: str = ""


@dataclass(slots=True)
class CallerLine:
    """One line as the caller said it, and what it measured around it (ns, monotonic)."""

    utterance: Utterance
    started_ns: int = 0
    onset_ns: int = 0
    ended_ns: int = 0
    #: The bot's response playing when the voice reached the line (the line talked over it).
    talked_over: Response | None = None
    #: When ``StopAudio`` arrived while the line was being said.
    stop_audio_ns: int = 0
    #: The first bot response that started after the line ended.
    answer: Response | None = None

    @property
    def voice_to_voice_ms(self) -> float | None:
        """End of the line -> first frame of the answer received."""
        if self.answer is None or not self.ended_ns:
            return None
        return round((self.answer.first_ns - self.ended_ns) / 1e6, 2)

    @property
    def barge_in_ms(self) -> float | None:
        """Voice onset over the bot -> ``StopAudio`` received (``None``: no barge-in)."""
        if self.talked_over is None or not self.stop_audio_ns:
            return None
        return round((self.stop_audio_ns - self.onset_ns) / 1e6, 2)

    def to_json(self) -> dict[str, Any]:
        over = self.talked_over
        return {"text": self.utterance.text, "voice_to_voice_ms": self.voice_to_voice_ms,
                "talked_over": over is not None, "barge_in_ms": self.barge_in_ms,
                "late_frames": 0 if over is None else over.late_frames}


class AcsMediaCaller:
    """A scripted person on an ACS phone line (see module docstring)."""

    def __init__(self, settings: AcsCallerSettings | None = None) -> None:
        self.settings = s = settings if settings is not None else AcsCallerSettings()
        self.encoder = InboundEncoder(s.sample_rate, participant=s.participant)
        self.decoder = OutboundDecoder(s.sample_rate)
        self.ear = CallerEar(s.sample_rate, quiet_ms=s.quiet_ms)
        self.meter = BargeInMeter()  # keyed by the response number, the caller's only "turn"
        self.clock = MonotonicClock()
        #: The lines, once rendered (:meth:`prepare`).
        self.lines: list[CallerLine] = []
        self.frames_sent = 0
        self.messages_refused = 0
        #: Who ended the call ("caller": it hung up; "server": the socket closed under it;
        #: "acs": the call ended on ACS's side, see :meth:`run`), and the close code.
        self.closed_by = ""
        self.close_code: int | None = None
        self._frame_bytes = s.sample_rate * FRAME_MS // 1000 * 2
        self._quiet = bytes(self._frame_bytes)
        self._now = 0
        self._speaking: CallerLine | None = None
        self._hung_up = False
        self._rushing = False
        self._prepared = False
        self._wall0 = datetime.now(UTC)
        self._mono0 = time.monotonic_ns()

    async def prepare(self) -> None:
        """Render the script (off the event loop: it loads a voice and synthesises)."""
        if self._prepared:
            return
        s = self.settings
        if s.wav is None and all(isinstance(line, Utterance) for line in s.say):
            utterances = [line for line in s.say if isinstance(line, Utterance)]
        else:
            utterances = await asyncio.to_thread(
                render_script, s.say, sample_rate=s.sample_rate, voice=s.voice, wav=s.wav)
        self.lines = [CallerLine(u) for u in utterances]
        self._prepared = True

    async def run(self, url: str, *, headers: Mapping[str, str] | None = None,
                  session: aiohttp.ClientSession | None = None, on_open: Callable[[], None] | None = None,
                  hung_up: asyncio.Event | None = None) -> None:
        """Connect to ``url`` (``ws://.../acs/media?token=...``), say the script, hang up.

        ``on_open`` is called once the upgrade succeeded; ``hung_up``, once set, ends the
        call from ACS's side (the bot hung up or transferred it): the caller closes the
        socket and ``closed_by`` is ``"acs"``. (The local ACS's media hook passes both:
        :class:`~.media_hook.CallerHook`.)

        Returns when the socket has closed, whoever closed it; raises :class:`CallerError`
        if the server refused the upgrade.
        """
        await self.prepare()
        own = session is None
        client = session if session is not None else aiohttp.ClientSession()
        try:
            try:
                ws = await client.ws_connect(url, headers=dict(headers or {}), autoping=True,
                                             timeout=aiohttp.ClientWSTimeout(ws_close=10.0))
            except aiohttp.WSServerHandshakeError as exc:
                raise CallerError(f"the media socket was refused: HTTP {exc.status} {exc.message}") from None
            except aiohttp.ClientError as exc:
                raise CallerError(f"the media socket could not be opened: {type(exc).__name__}: {exc}") from None
            if on_open is not None:
                on_open()
            async with ws, asyncio.TaskGroup() as tasks:
                tasks.create_task(self._receive(ws), name="acs-caller:receive")
                leave = tasks.create_task(self._leave_on(hung_up, ws), name="acs-caller:hung-up") \
                    if hung_up is not None else None
                await self._speak(ws)
                if leave is not None:
                    leave.cancel()
                if not ws.closed:
                    self.closed_by = self.closed_by or "caller"
                    await ws.close()
            self.close_code = ws.close_code
            for line in self.lines:
                self._answer_to(line)
        finally:
            if own:
                await client.close()
        if self.settings.record:
            await asyncio.to_thread(self.ear.heard.save, self.settings.record)

    def report(self) -> dict[str, Any]:
        """What the caller measured, as JSON-ready data."""
        return {
            "lines": [line.to_json() for line in self.lines],
            "responses": [{"number": r.number, "frames": r.frames, "heard_ms": round(r.heard_ms, 1),
                           "stopped": bool(r.stopped_ns), "dropped_ms": round(r.dropped_ms, 1),
                           "late_frames": r.late_frames} for r in self.ear.responses],
            "bot_frame_spacing": spacing_summary(self.ear.spacing_ms()),
            "frames_sent": self.frames_sent, "stop_audio": self.ear.stops, "late_frames": self.ear.late_frames,
            "messages_refused": self.messages_refused, "closed_by": self.closed_by, "close_code": self.close_code,
        }

    async def _leave_on(self, hung_up: asyncio.Event, ws: aiohttp.ClientWebSocketResponse) -> None:
        await hung_up.wait()
        self.closed_by = self.closed_by or "acs"
        self._hung_up = True
        await ws.close()

    # --- the ear ------------------------------------------------------------------------

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                continue
            now = self.clock.now_ns()
            try:
                event = self.decoder.decode(msg.data)
            except ProtocolError as exc:
                self.messages_refused += 1
                logger.warning("ACS media caller: ignoring a message from the server: %s", exc)
                continue
            if isinstance(event, BotAudio):
                self.ear.audio(now, event.pcm)
            elif isinstance(event, StopAudio):
                stopped = self.ear.stop(now)
                line = self._speaking
                if stopped is not None:
                    self.meter.bot_cut(stopped.number, now)
                    if line is not None and line.talked_over is stopped and not line.stop_audio_ns:
                        line.stop_audio_ns = now
        if not self.closed_by:
            self.closed_by = "server"
        self._hung_up = True

    # --- the voice ----------------------------------------------------------------------

    async def _speak(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_str(self.encoder.metadata(frame_bytes=self._frame_bytes))
        self._now = self.clock.now_ns()  # the line opens now: the first wait counts from here
        with pacer_for(self.clock, FRAME_MS).subscribe() as ticks:
            frames = self._frames()
            while True:
                # The slot comes first, then the frame is decided (as in SpeechCaller): every
                # decision, and every time noted in it, is the slot's the frame goes out in.
                if self._rushing:
                    await asyncio.sleep(0)  # as fast as the server takes it, but never hog the loop
                    self._now = self.clock.now_ns()
                else:
                    slot = await ticks.next()
                    self._now = slot if slot is not None else self.clock.now_ns()
                pcm = next(frames, None)
                if pcm is None or self._hung_up or ws.closed:
                    return
                stamp = self._wall0 + timedelta(microseconds=(self._now - self._mono0) / 1000)
                try:
                    await ws.send_str(self.encoder.audio(pcm, timestamp=stamp, silent=not pcm.strip(b"\0")))
                except ConnectionError:
                    return  # the server hung up: the receive loop has seen it
                self.frames_sent += 1

    # The voice is a generator of frames, one per slot, as in SpeechCaller:
    # each decision (keep waiting, or talk now) is taken when its slot has come.

    def _frames(self) -> Iterator[bytes]:
        s = self.settings
        yield from self._silence(s.opening_ms, until=lambda: self.ear.playing(self._now) is not None)
        previous: CallerLine | None = None
        for line in self.lines:
            yield from self._wait_for_cue(previous)
            yield from self._say(line)
            previous = line
        yield from self._silence(s.answer_timeout_s * 1000, until=lambda: self._answered(previous))
        yield from self._silence(s.pause_ms)

    def _wait_for_cue(self, previous: CallerLine | None) -> Iterator[bytes]:
        """Wait for the answer to ``previous`` (or a greeting) to finish, then pause; or
        talk over it once it has played ``interrupt_after_ms``."""
        if previous is None and self.ear.playing(self._now) is None:
            return  # nobody spoke when the line opened: say the first line now
        s = self.settings
        limit = s.answer_timeout_s * 1000
        after = s.interrupt_after_ms
        if after is not None:
            since = previous.ended_ns if previous is not None else 0
            yield from self._silence(limit, until=lambda: self._answer_played(since, after)
                                     or self._answered(previous))
            if not self._answered(previous):
                return  # the bot is speaking: talk over it now
        else:
            yield from self._silence(limit, until=lambda: self._answered(previous))
        yield from self._silence(s.pause_ms)

    def _say(self, line: CallerLine) -> Iterator[bytes]:
        fb = self._frame_bytes
        pcm = line.utterance.pcm
        onset = int(line.utterance.voice_start_ms // FRAME_MS)
        self._speaking = line
        self.ear.talking(True)
        for k, offset in enumerate(range(0, len(pcm), fb)):
            chunk = pcm[offset:offset + fb]
            chunk = chunk if len(chunk) == fb else chunk + bytes(fb - len(chunk))
            if k == 0:
                line.started_ns = self._now
            if k == onset:  # the voice reaches the line: a barge-in's reaction starts here
                line.onset_ns = self._now
                line.talked_over = self.ear.playing(self._now)
                self.meter.voice_on(self._now)
            yield chunk
            self._rushing = not self.settings.realtime  # the line's next frames: at once, in a test
        # Resumed one slot after the last frame went out (realtime): the line's audio has ended.
        self._rushing = False
        line.ended_ns = self._now
        self._speaking = None
        self.ear.talking(False)
        self.meter.voice_off()

    def _silence(self, max_ms: float, *, until: Callable[[], bool] | None = None) -> Iterator[bytes]:
        """Paced silence until ``until()`` holds or ``max_ms`` have passed."""
        start = self._now
        while (self._now - start) / 1e6 < max_ms and (until is None or not until()):
            yield self._quiet

    # --- what the caller notices of the bot -------------------------------------------

    def _answered(self, line: CallerLine | None) -> bool:
        """Nothing is playing, and (after a line) an answer to it came."""
        if self.ear.playing(self._now) is not None:
            return False
        return line is None or self._answer_to(line) is not None

    def _answer_to(self, line: CallerLine) -> Response | None:
        if line.answer is None and line.ended_ns:
            after = self.ear.responses_since(line.ended_ns)
            line.answer = after[0] if after else None
        return line.answer

    def _answer_played(self, since_ns: int, ms: float) -> bool:
        rsp = self.ear.playing(self._now)
        return rsp is not None and rsp.first_ns >= since_ns and self.ear.heard_for_ms(self._now) >= ms


async def run(url: str, *, headers: Mapping[str, str] | None = None, sample_rate: int = 16000,
              settings: AcsCallerSettings | None = None, session: aiohttp.ClientSession | None = None,
              ) -> AcsMediaCaller:
    """Place one call on the media socket at ``url`` with a caller of ``settings`` (at
    ``sample_rate``, which overrides the settings'), and return it when the call is over."""
    base = settings if settings is not None else AcsCallerSettings()
    if base.sample_rate != sample_rate:
        base = replace(base, sample_rate=sample_rate)
    caller = AcsMediaCaller(base)
    await caller.run(url, headers=headers, session=session)
    return caller

