"""Smoke test of perf/engine_threads.py: a child process with a setting installed really
builds its engines and executor with those sizes. No timing assertions."""

from __future__ import annotations

import subprocess
import sys

from tests.perf.scripts import PERF

SCRIPT = """
import sys
sys.path.insert(0, {root!r})
sys.argv = ["engine_threads"]
import importlib.util
spec = importlib.util.spec_from_file_location("engine_threads", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.install(2, 3, 5)
from pipeline.offload import blocking_executor
from processors.stt.whisper_engine import WhisperEngine
from processors.tts.piper_engine import PiperEngine
seen = {{}}
import ctranslate2, onnxruntime
real_model, real_session = ctranslate2.models.Whisper, onnxruntime.InferenceSession
class Model:
    def __init__(self, *a, **kw):
        seen["cpu_threads"] = kw.get("intra_threads", kw.get("cpu_threads"))
        raise RuntimeError("stop here")
ctranslate2.models.Whisper = Model
try:
    WhisperEngine(cpu_threads=1)
except Exception:
    pass
def session(path, sess_options=None, **kw):
    seen["ort_threads"] = sess_options.intra_op_num_threads
    raise RuntimeError("stop here")
onnxruntime.InferenceSession = session
try:
    PiperEngine(threads=1)
except Exception:
    pass
print(seen["cpu_threads"], seen["ort_threads"], blocking_executor().workers)
"""


def test_install_sets_the_engines_threads_and_the_executor_size() -> None:
    code = SCRIPT.format(root=str(PERF.parent), path=str(PERF / "engine_threads.py"))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "3", "5"]
