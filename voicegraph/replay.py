"""``voicegraph replay RECORDING --pipeline P``: a recorded call's caller, through another pipeline.

A recording (:mod:`processors.sidecars.recording`: stereo WAV, caller left, bot right) keeps
what the caller said exactly as the line carried it, silences included. Replay takes its
left channel and has the pipeline's speech caller play it, in real time, as one stretch of
line audio (after the pipeline's greeting, if it has one, like any scripted caller), then
prints the same report as ``voicegraph call``: so two pipelines (STT engines, brains,
voices) can be compared on the same real call. The report adds ``replay_of``, the
recording's path.

Refused before the call (:class:`ReplayError`, exit 2): a file that is not a 16-bit stereo
WAV, and a pipeline whose caller cannot play audio (a text pipeline).
"""

from __future__ import annotations

import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import build_graph, load_pipeline
from processors.sidecars.services import data_tier_from_env

from .call import CallOptionError, CallOptions, find_caller, run_call_report, with_data_tier
from .runtime import run

__all__ = ["ReplayError", "caller_channel", "run_replay"]


class ReplayError(CallOptionError):
    """A recording or a pipeline that cannot be replayed (exit code 2)."""


def caller_channel(recording: Path, out: Path) -> float:
    """Write the caller (left) channel of ``recording`` to ``out`` as a mono WAV; its length in ms."""
    try:
        with wave.open(str(recording), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise ReplayError(f"{recording}: no such recording") from None
    except (wave.Error, EOFError, OSError) as exc:
        raise ReplayError(f"{recording}: not a WAV recording ({exc})") from None
    if channels != 2 or width != 2:
        raise ReplayError(f"{recording}: a recording is 16-bit stereo (caller left, bot right); this file has "
                          f"{channels} channel(s) of {8 * width}-bit samples")
    left = np.frombuffer(frames, dtype="<i2")[0::2]
    with wave.open(str(out), "wb") as mono:
        mono.setnchannels(1)
        mono.setsampwidth(2)
        mono.setframerate(rate)
        mono.writeframes(left.tobytes())
    return len(left) * 1000 / rate


def run_replay(recording: Path, pipeline: Path, *, timeout_s: float | None = None) -> dict[str, Any]:
    """Replay ``recording``'s caller through ``pipeline``; the call's report (see module docstring).

    ``timeout_s`` (on the call's clock) defaults to the recording's length plus a minute.
    """
    graph = build_graph(load_pipeline(pipeline))
    caller = find_caller(graph)
    if getattr(caller, "configure_call", None) is None:
        raise ReplayError(f"pipeline '{graph.name}': its caller ({type(caller).__name__}) cannot play audio; "
                          "replay needs a speech pipeline (a speech_caller node)")
    with tempfile.TemporaryDirectory(prefix="voicegraph-replay-") as folder:
        mono = Path(folder) / recording.name  # the report says the caller played <its name>
        length_ms = caller_channel(recording, mono)
        # The caller plays the whole channel as one line, then waits for the last answer.
        limit = timeout_s if timeout_s is not None else length_ms / 1000 + 60
        options = CallOptions(pipeline=pipeline, wav=mono, timeout_s=limit)
        report = run(with_data_tier(data_tier_from_env(), run_call_report(graph, options, transport="replay")))
    report["replay_of"] = str(recording)
    return report
