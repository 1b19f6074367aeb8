"""Smoke test of perf/stt_wer.py: every engine runs on a few real recordings and reports
finite figures. No timing assertions: speed belongs to the benchmark's own run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.recordings import load, missing_packages
from tests.perf.scripts import load_script

if missing_packages() and not os.environ.get("CI"):
    pytest.skip("speech test data not installed: make speech-data", allow_module_level=True)

PATH = Path(__file__).resolve().parents[2] / "perf" / "stt_wer.py"
stt_wer = load_script("stt_wer")


@pytest.mark.parametrize("name", stt_wer.ENGINES)
def test_each_engine_reports_a_row(name: str) -> None:
    engine = stt_wer.open_engine(name, 2)
    recordings = list(load(8000))[:2]
    row = stt_wer.measure(name, engine, recordings, 300)
    assert (row.engine, row.rate, row.utterances) == (name, 8000, 2)
    assert row.words == 28  # "That agent is already logged on ..." and "Agent login ..."
    assert 0 <= row.errors <= row.words and row.wer == round(row.errors / row.words, 3)
    assert row.final_ms_p50 >= 0 and math.isfinite(row.final_ms_p90) and row.cores_per_call > 0
    # The one-shot stream decodes once per utterance; the incremental one several times.
    expected = {"whisper-one-shot": 1.0, "pocketsphinx": 0.0}
    if name in expected:
        assert row.decodes_per_utterance == expected[name]
    else:
        assert row.decodes_per_utterance > 3
    assert not hasattr(engine, "__dict__") or "decode" not in vars(engine)  # the counter is removed


def test_cli_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "stt_wer.json"
    subprocess.run(
        [sys.executable, str(PATH), "--limit", "1", "--engines", "whisper-one-shot", "--json", str(out)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    doc = json.loads(out.read_text())
    assert (doc["silence_ms"], doc["threads"], doc["step_ms"]) == ([600, 250], 1, 800)
    # Both ends of turn (the silence window, Smart Turn's complete_ms) side by side, per rate.
    assert [(r["engine"], r["rate"], r["silence_ms"], r["utterances"]) for r in doc["rows"]] == [
        ("whisper-one-shot", 8000, 600, 1), ("whisper-one-shot", 8000, 250, 1),
        ("whisper-one-shot", 16000, 600, 1), ("whisper-one-shot", 16000, 250, 1),
    ]
