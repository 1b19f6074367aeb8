"""Does judging the caller's WORDS end turns sooner without cutting callers off?

Question
    On utterances with a mid-sentence pause of 300-800 ms at varied positions (after a
    function word, inside digit or letter dictation, after a filler, after a complete
    clause followed by more), how often does the turn end inside the pause with the
    text end of turn (``end_of_turn: text``: :mod:`processors.audio.text_turn`, complete
    250 ms, incomplete 1500 ms, else the 600 ms silence window) versus silence-only
    (600 ms), on the same audio; and on complete utterances, how long after the end of
    speech each ends the turn.

Method
    Audio: Piper sentences (tests.processors.audio.paused_speech: the comma's gap is
    stretched to the pause), 500 ms of silence before and 2.5 s after; 16 kHz. The
    shipped pure machines are driven on the audio clock in 20 ms frames: ``Vad``
    (webrtcvad, stop 300 ms) -> ``Endpointing`` with ``TextSilence`` or ``FixedSilence``;
    the caller's words come from the shipped incremental Whisper (``WhisperStream``, the
    STT node's 100 ms batches, 400 ms pre-roll), each interim handed to the machine with
    ``heard_ms`` = the audio fed and arriving ``decode`` ms later, the measured wall time
    of that decode on this machine (so a slow STT makes words late, as in a call). A
    false cut-off: a turn ended before the speech after the pause began. "clause+more"
    utterances ("yes, and also ...") are counted apart: the text judge is meant to end
    them after "yes". End of turn: last turn end - last speech stop.
    ``.venv/bin/python perf/end_of_turn_text.py [--json PATH]``

Result: see docs/design/speech.md (end of turn from the words).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processors.audio.endpointing import (  # noqa: E402
    Endpointing,
    EndpointingParams,
    FixedSilence,
    SilenceStrategy,
    TurnEnded,
    TurnStarted,
)
from processors.audio.text_turn import TextSilence  # noqa: E402
from processors.audio.vad import SpeechStarted, SpeechStopped, Vad, VadParams  # noqa: E402
from processors.stt.whisper_engine import WhisperEngine  # noqa: E402
from tests.processors.audio.paused_speech import paused  # noqa: E402
from tests.processors.stt.speech import RATE, frames, silence, utterance  # noqa: E402

#: Pause positions: (kind, sentence with the pause at its comma).
PAUSED = (
    ("function word", "my policy number is, four five six"),
    ("function word", "I would like to, change my address"),
    ("function word", "my date of birth is, the fourth of July"),
    ("function word", "I was calling because, my card was stolen"),
    ("function word", "the account is in the name of, John Smith"),
    ("function word", "I want to talk to someone about, my claim"),
    ("dictation", "my phone number is five five five, one two three four"),
    ("dictation", "the reference number is four seven, two nine"),
    ("dictation", "my postcode is L S one, four A B"),
    ("filler", "I need to check um, the status of my claim"),
    ("clause+more", "yes, and also my address changed"),
    ("clause+more", "my car was hit, and the other driver drove away"),
)
PAUSES_MS = (300, 550, 800)
COMPLETE = (
    "I want to change my address",
    "my card was stolen yesterday",
    "what are your opening hours",
    "I would like to file a claim",
    "can you help me with my policy",
    "yes",
    "no thank you",
    "the other driver hit my car",
    "I need a new insurance card",
    "thank you goodbye",
)
FEED_MS = 100
PREROLL_MS = 400
SILENCE_MS = 600.0


@dataclass
class Row:
    """One set-up's figures."""

    setup: str
    paused: int
    false_cutoffs: int
    false_cutoff_rate: float
    clause_more_split: int
    clause_more: int
    complete: int
    complete_eot_ms_p50: float
    complete_eot_ms_p90: float
    paused_eot_ms_p50: float
    reasons: dict[str, int]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else float("nan")


def simulate(pcm: bytes, strategy: SilenceStrategy, engine: WhisperEngine | None) -> tuple[list[TurnEnded], float]:
    """Turn ends and the last speech stop for ``pcm`` (see Method)."""
    vad = Vad(VadParams(), RATE)
    machine = Endpointing(EndpointingParams(silence_ms=SILENCE_MS), strategy=strategy)
    stream = engine.open_stream() if engine is not None else None
    bytes_per_ms = RATE * 2 / 1000
    history = bytearray()
    pending = bytearray()
    fed_ms = 0.0
    words: list[tuple[float, str, float]] = []  # (arrives at, text, heard_ms)
    ends: list[TurnEnded] = []
    last_stop = 0.0
    now = 0.0
    in_turn = False
    for chunk in frames(pcm):
        now += len(chunk) / bytes_per_ms
        history += chunk
        for at, text, heard in [w for w in words if w[0] <= now]:
            ends += [e for e in machine.on_words(text, heard, at) if isinstance(e, TurnEnded)]
        words = [w for w in words if w[0] > now]
        just_started = False
        for event in vad.feed(chunk, now):
            if isinstance(event, SpeechStarted):
                for ep in machine.on_speech_started(event.at_ms):
                    if isinstance(ep, TurnStarted) and stream is not None:
                        stream.reset()
                        start = max(0, len(history) - len(chunk) - int(PREROLL_MS * bytes_per_ms)) & ~1
                        just_started = True
                        pending = bytearray(history[start:])
                        fed_ms = start / bytes_per_ms
                        words = []
                        in_turn = True
            elif isinstance(event, SpeechStopped):
                last_stop = event.at_ms
                ends += [e for e in machine.on_speech_stopped(event.at_ms) if isinstance(e, TurnEnded)]
        new_ends = [e for e in machine.tick(now) if isinstance(e, TurnEnded)]
        ends += new_ends
        if new_ends:
            in_turn = False
        elif in_turn and stream is not None:
            if not just_started:
                pending += chunk
            if len(pending) >= FEED_MS * bytes_per_ms:
                batch, pending = bytes(pending), bytearray()
                fed_ms += len(batch) / bytes_per_ms
                started = time.perf_counter()
                hyp = stream.feed(batch)
                decode_ms = (time.perf_counter() - started) * 1000
                if hyp is not None and hyp.text.strip():
                    words.append((now + decode_ms, hyp.text, fed_ms))
    return ends, last_stop


def evaluate(setup: str, strategy: SilenceStrategy, engine: WhisperEngine | None) -> Row:
    cut = split = clause_more = 0
    paused_eot: list[float] = []
    complete_eot: list[float] = []
    reasons: dict[str, int] = {}
    count = 0
    for kind, text in PAUSED:
        for pause in PAUSES_MS:
            speech, gap_start = paused(text, pause)
            resume_ms = 500 + gap_start * 1000 / RATE + pause
            ends, stop = simulate(silence(500) + speech + silence(2500), strategy, engine)
            early = [e for e in ends if e.at_ms < resume_ms]
            if kind == "clause+more":
                clause_more += 1
                split += bool(early)
            else:
                count += 1
                cut += bool(early)
            if early:
                print(f"  {setup}: ended at {early[0].at_ms:.0f} ms in a {pause} ms pause ({kind}): {text!r}",
                      flush=True)
            if ends:
                paused_eot.append(ends[-1].at_ms - stop)
    for text in COMPLETE:
        ends, stop = simulate(silence(500) + utterance(text, pad_ms=0) + silence(2500), strategy, engine)
        if ends:
            complete_eot.append(ends[-1].at_ms - stop)
            reasons[ends[-1].reason] = reasons.get(ends[-1].reason, 0) + 1
    return Row(setup, count, cut, round(cut / count, 3), split, clause_more, len(COMPLETE),
               pct(complete_eot, 0.5), pct(complete_eot, 0.9), pct(paused_eot, 0.5), reasons)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    engine = WhisperEngine(cpu_threads=1)
    rows = [evaluate("silence", FixedSilence(), None), evaluate("text", TextSilence(), engine)]
    for r in rows:
        print(f"{r.setup:>8}: false cut-offs {r.false_cutoffs}/{r.paused} ({100 * r.false_cutoff_rate:.0f}%), "
              f"clause+more split {r.clause_more_split}/{r.clause_more}; complete turns end p50 "
              f"{r.complete_eot_ms_p50} ms p90 {r.complete_eot_ms_p90} ms ({r.reasons}); "
              f"paused turns end p50 {r.paused_eot_ms_p50} ms")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
