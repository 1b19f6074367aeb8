"""CallRecording: a call as a stereo WAV, caller left, bot right, aligned on the call's clock.

It watches the graph's transport (the duplex node) without changing it:

* the **caller** channel is the caller's audio as the transport pushed it into the graph
  (``InputAudio`` at the ``AudioFormat(stream="in")`` rate, the file's rate), laid end to
  end from the position of its first frame on the call clock: a line delivers audio
  continuously, silences included;
* the **bot** channel is what the caller heard: the audio pushed into the transport for a
  turn, placed where the transport started playing it (``BotStartedSpeaking``, on the
  call clock) and cut to what it played (``BotStoppedSpeaking.played_ms``), so a barged-in
  answer ends where the caller cut it. Bot audio at another rate is resampled (soxr).

The file is written as the call goes, behind it: every few seconds, the part of both
channels that can no longer change (up to the start of an answer still playing) is
interleaved and handed to one writer thread shared by every call (writes are in order;
the event loop never touches the disk). ``aclose`` writes the rest and closes the file;
a disk error is logged once, counted, and ends the recording, never the call.

``RecordingStarted`` (``source="local"``, ``location`` the file) is emitted with the
first caller audio. Files are named after the call id (characters other than letters,
digits, ``.-_`` become ``_``, with a short hash of the id so two odd ids never collide).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import re
import wave
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from pipeline.context import CallContext
from pipeline.frames import (
    AudioFormat,
    BotStartedSpeaking,
    BotStoppedSpeaking,
    EventFrame,
    FlushStart,
    Frame,
    InputAudio,
    OutputAudio,
)
from pipeline.graph import Graph

from .facts import CallFacts, RecordingStarted

__all__ = ["CallRecording", "recording_path"]

logger = logging.getLogger(__name__)

_WRITER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicegraph-recorder")
FLUSH_S = 5.0  # interleave and write once this much of both channels is settled


def recording_path(folder: Path, call_id: str) -> Path:
    """Where the recording of ``call_id`` goes (a safe file name, see module docstring)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", call_id)[:80].strip(".") or "call"
    if safe != call_id:
        safe += "-" + hashlib.sha1(call_id.encode()).hexdigest()[:8]
    return folder / f"{safe}.wav"


class _File:
    """The WAV file, used by the writer thread only."""

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        self._wav: Any = None

    def write(self, count: int, left: bytes, right: bytes) -> None:
        """Write ``count`` stereo frames: ``left`` and ``right`` PCM16, zero-padded to ``count``."""
        if self._wav is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._wav = wave.open(str(self.path), "wb")  # closed by close(), on this thread
            self._wav.setnchannels(2)
            self._wav.setsampwidth(2)
            self._wav.setframerate(self.rate)
        stereo = np.zeros((count, 2), dtype="<i2")
        stereo[:len(left) // 2, 0] = np.frombuffer(left, dtype="<i2")
        stereo[:len(right) // 2, 1] = np.frombuffer(right, dtype="<i2")
        self._wav.writeframes(stereo.tobytes())

    def close(self) -> None:
        if self._wav is not None:
            self._wav.close()  # patches the header's sizes


class CallRecording:
    """Records one call (see module docstring); attach before the call runs."""

    def __init__(self, graph: Graph, ctx: CallContext, facts: CallFacts, path: Path, *, started_ns: int) -> None:
        self.ctx = ctx
        self.facts = facts
        self.path = path
        self.started_ns = started_ns
        self.rate = 0  # the file's rate: the caller's
        self._flush_every = 0  # samples
        self.frames_written = 0
        self.errors = 0
        self._out_rate = 0
        self._resampler: soxr.ResampleStream | None = None
        self._base = 0  # samples already handed to the writer
        self._caller = bytearray()  # PCM16 from sample _base on
        self._caller_end = 0  # sample index after the caller's last frame
        self._bot = bytearray()
        self._answer: list[bytes] = []  # the bot audio of the answer now being played, not placed yet
        self._playing_from: int | None = None  # the sample where the answer now playing started
        self._file: _File | None = None
        self._writes: list[asyncio.Future[None]] = []
        self._failed = False
        self._closed = False

    @classmethod
    def attach(cls, graph: Graph, ctx: CallContext, facts: CallFacts, folder: Path, *,
               started_ns: int) -> CallRecording | None:
        """Record ``graph``'s call into ``folder``; None when the graph has no transport (a text call)."""
        line = next((name for name, node in graph.nodes.items() if node.duplex), None)
        if line is None:
            return None
        rec = cls(graph, ctx, facts, recording_path(folder, ctx.call_id), started_ns=started_ns)
        graph.probe(line, rec._on_caller)
        for feeder in graph.predecessors(line, taps=False):
            graph.probe(feeder, rec._on_bot)
        graph.watch_events(rec._on_event)
        return rec

    def _sample(self, ns: int) -> int:
        return max(0, round((ns - self.started_ns) * self.rate / 1e9))

    def _on_caller(self, frame: Frame) -> None:
        if type(frame) is AudioFormat:
            if frame.stream == "in" and not self.rate:
                self.rate = frame.sample_rate
                self._flush_every = int(FLUSH_S * self.rate)
            return
        if type(frame) is not InputAudio or not self.rate or self._closed:
            return
        if not self._caller_end:  # the first caller audio: the recording starts here
            self._caller_end = self._sample(frame.ts)
            self._file = _File(self.path, self.rate)
            self.facts.emit(RecordingStarted, recording_id=self.ctx.call_id, location=str(self.path), source="local")
        if (self._caller_end - self._base) * 2 == len(self._caller):
            self._caller += frame.pcm  # the usual case: the line's audio, end to end
        else:
            self._place(self._caller, self._caller_end, frame.pcm)
        self._caller_end += len(frame.pcm) // 2
        if self._caller_end - self._base >= self._flush_every:
            self._flush(final=False)

    def _on_bot(self, frame: Frame) -> None:
        if type(frame) is AudioFormat:
            if frame.stream == "out":
                self._out_rate = frame.sample_rate
            return
        if type(frame) is not OutputAudio or not self.rate or self._closed:
            return
        pcm = frame.pcm
        if self._out_rate and self._out_rate != self.rate:
            if self._resampler is None:
                self._resampler = soxr.ResampleStream(self._out_rate, self.rate, 1, dtype="int16")
            pcm = self._resampler.resample_chunk(np.frombuffer(pcm, dtype=np.int16)).tobytes()
        self._answer.append(pcm)

    def _on_event(self, event: EventFrame) -> None:
        if not self.rate or self._closed:
            return
        kind = type(event)
        if kind is BotStartedSpeaking:
            self._playing_from = self._sample(event.ts)
        elif kind is BotStoppedSpeaking and self._playing_from is not None:
            assert isinstance(event, BotStoppedSpeaking)
            played = b"".join(self._answer)
            heard = min(len(played) // 2, round(event.played_ms * self.rate / 1000))
            self._place(self._bot, self._playing_from, played[:heard * 2])
            self._answer = [played[heard * 2:]] if not event.interrupted and heard * 2 < len(played) else []
            self._playing_from = None
        elif kind is FlushStart and self._playing_from is None:
            self._answer = []  # cut before it played: the caller heard none of it

    def _place(self, channel: bytearray, at: int, pcm: bytes) -> None:
        start = (at - self._base) * 2
        if start < 0:  # before what was already written: only its tail can still go in
            pcm, start = pcm[-start:], 0
        end = start + len(pcm)
        if len(channel) < end:
            channel.extend(bytes(end - len(channel)))
        channel[start:end] = pcm

    def _flush(self, *, final: bool) -> None:
        settled = self._caller_end if self._playing_from is None else min(self._caller_end, self._playing_from)
        if final:
            settled = max(self._caller_end, self._base + len(self._bot) // 2)
        count = settled - self._base
        if count <= 0 or (not final and count < self._flush_every) or self._file is None or self._failed:
            return
        parts = []
        for channel in (self._caller, self._bot):
            got = min(count, len(channel) // 2) * 2
            parts.append(bytes(channel[:got]))
            del channel[:got]
        self._base = settled
        self.frames_written += count
        # Interleaving is left to the writer thread: the loop only cuts the settled part off.
        future = asyncio.get_running_loop().run_in_executor(_WRITER, self._file.write, count, parts[0], parts[1])
        self._writes = [w for w in self._writes if not w.done()] + [future]
        future.add_done_callback(self._written)

    def _written(self, future: asyncio.Future[None]) -> None:
        exc = None if future.cancelled() else future.exception()
        if exc is not None:
            self.errors += 1
            if not self._failed:
                self._failed = True
                logger.error("call %s: recording to %s failed (%s); the call goes on unrecorded",
                             self.ctx.call_id, self.path, exc)

    async def aclose(self) -> None:
        """Write what is left (an answer still playing: what was sent of it) and close the file."""
        if self._closed:
            return
        if self._playing_from is not None:  # the call ended mid-answer: keep what was sent
            self._place(self._bot, self._playing_from, b"".join(self._answer))
            self._playing_from = None
        self._answer = []
        self._flush(final=True)
        self._closed = True
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._file is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(_WRITER, self._file.close)
            except OSError as exc:
                self.errors += 1
                logger.error("call %s: closing the recording %s failed: %s", self.ctx.call_id, self.path, exc)
