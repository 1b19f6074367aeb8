"""The media caller's ear: the bot's audio as a person on the phone hears it (sans-I/O).

ACS plays the bot's audio to the caller through a jitter buffer: each frame that arrives
is played at real time after the ones before it. :class:`CallerEar` is that buffer's
bookkeeping, with the time given as an argument (nanoseconds on the caller's clock), so
it is tested without sockets or sleeps:

* :meth:`CallerEar.audio`: a frame arrived; it is played when the frames before it have
  played (``max(arrival, end of the previous frame)``), and kept in a
  :class:`~transports.local.heard.HeardAudio` at that play time.
* The bot's audio comes in *responses*: a frame that arrives after the line was quiet
  (everything played, then nothing for ``quiet_ms``: the caller heard silence) starts a new
  :class:`Response`. The caller cannot see the server's turn numbers; this is how it
  tells one answer from the next, as a person does.
* :meth:`CallerEar.stop`: ``StopAudio`` arrived: what was buffered and not yet played is
  dropped (counted in ``dropped_ms``), and the response is over. A frame that still
  arrives while the caller is talking over the bot, or within ``quiet_ms`` of the stop,
  belongs to the stopped response: it is counted in ``late_frames`` and not played. A
  correct server sends none.
* The spacing of frames that arrive back to back (one response, less than ``quiet_ms``
  apart) is kept per response: the issue's check that the bot's audio is paced at real
  time (about one frame per 20 ms, not a burst).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from transports.local.heard import HeardAudio

__all__ = ["CallerEar", "Response", "spacing_summary"]


@dataclass(slots=True)
class Response:
    """One stretch of the bot's audio as the caller received it."""

    #: 1, 2, ... in the order the caller heard them.
    number: int
    first_ns: int
    last_ns: int = 0
    frames: int = 0
    #: Play time of the response's audio, ms (what the caller heard; a stop cuts it).
    heard_ms: float = 0.0
    #: When ``StopAudio`` ended it (0: it played out).
    stopped_ns: int = 0
    #: Audio buffered but not yet played when it was stopped, ms.
    dropped_ms: float = 0.0
    #: Frames of this response that arrived after its ``StopAudio`` (a server bug).
    late_frames: int = 0
    #: Arrival gaps between consecutive frames, ms.
    spacing_ms: list[float] = field(default_factory=list)
    _play_end_ns: int = 0


def spacing_summary(gaps: list[float]) -> dict[str, float | int]:
    """Count, median, p10/p90 and share of gaps within 15..25 ms of a frame's 20."""
    if not gaps:
        return {"gaps": 0}
    ordered = sorted(gaps)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 2)

    return {"gaps": len(gaps), "median_ms": round(statistics.median(gaps), 2), "p10_ms": pct(10),
            "p90_ms": pct(90), "within_5ms_of_20": round(sum(15 <= g <= 25 for g in gaps) / len(gaps), 3)}


class CallerEar:
    """The caller's playout buffer and the responses it heard (see module docstring)."""

    def __init__(self, sample_rate: int, *, quiet_ms: float = 200.0) -> None:
        self.sample_rate = sample_rate
        self.quiet_ns = int(quiet_ms * 1e6)
        self.heard = HeardAudio(sample_rate)
        self.responses: list[Response] = []
        #: ``StopAudio`` messages received, and frames that came after one for its response.
        self.stops = 0
        self.late_frames = 0
        self._ns_per_byte = 1e9 / (sample_rate * 2)
        self._current: Response | None = None  # receiving or playing now
        self._stopped: Response | None = None  # stopped; later frames are its, for a while
        self._talking = False

    # --- what arrives -----------------------------------------------------------------

    def audio(self, now_ns: int, pcm: bytes) -> Response:
        """A frame of the bot's audio arrived at ``now_ns``; returns its response."""
        stopped = self._stopped
        if stopped is not None and (self._talking or now_ns - stopped.stopped_ns < self.quiet_ns):
            stopped.late_frames += 1
            self.late_frames += 1
            return stopped
        self._stopped = None
        rsp = self._current
        if rsp is None or self._quiet_since(rsp, now_ns):
            rsp = self._current = Response(number=len(self.responses) + 1, first_ns=now_ns)
            self.responses.append(rsp)
        elif rsp.frames:
            rsp.spacing_ms.append((now_ns - rsp.last_ns) / 1e6)
        rsp.last_ns = now_ns
        rsp.frames += 1
        start = max(now_ns, rsp._play_end_ns)
        rsp._play_end_ns = start + int(len(pcm) * self._ns_per_byte)
        rsp.heard_ms += len(pcm) * self._ns_per_byte / 1e6
        self.heard.add(start, rsp.number, pcm)
        return rsp

    def stop(self, now_ns: int) -> Response | None:
        """``StopAudio`` arrived: drop what is buffered; returns the response it stopped."""
        self.stops += 1
        rsp = self._current
        if rsp is None or rsp.stopped_ns:
            return None
        rsp.stopped_ns = now_ns
        unplayed = max(0, rsp._play_end_ns - now_ns)
        rsp.dropped_ms = unplayed / 1e6
        rsp.heard_ms -= rsp.dropped_ms
        rsp._play_end_ns = now_ns
        self._current, self._stopped = None, rsp
        return rsp

    def talking(self, on: bool) -> None:
        """The caller started (``True``) or finished saying a line."""
        self._talking = on

    # --- what the caller notices ------------------------------------------------------

    def playing(self, now_ns: int) -> Response | None:
        """The response being received or played at ``now_ns``, if any."""
        rsp = self._current
        if rsp is None or self._quiet_since(rsp, now_ns):
            return None
        return rsp

    def heard_for_ms(self, now_ns: int) -> float:
        """How long the current response has been playing to the caller (0: none is)."""
        rsp = self.playing(now_ns)
        return 0.0 if rsp is None else (now_ns - rsp.first_ns) / 1e6

    def responses_since(self, since_ns: int) -> list[Response]:
        """Responses that started at or after ``since_ns``."""
        return [r for r in self.responses if r.first_ns >= since_ns]

    def spacing_ms(self) -> list[float]:
        """Every arrival gap within a response, over the call."""
        return [gap for rsp in self.responses for gap in rsp.spacing_ms]

    def _quiet_since(self, rsp: Response, now_ns: int) -> bool:
        # Over when it was stopped, or when the caller has heard quiet_ms of silence: all of
        # it played, and nothing came since.
        return bool(rsp.stopped_ns) or now_ns - max(rsp._play_end_ns, rsp.last_ns) >= self.quiet_ns
