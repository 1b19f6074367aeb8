"""Small general-purpose nodes."""

from __future__ import annotations

from pipeline.frames import DataFrame
from pipeline.processor import Processor

__all__ = ["Passthrough"]


class Passthrough(Processor):
    """Forwards every data frame unchanged: a probe point, and the baseline of perf/overhead.py."""

    consumes = (DataFrame,)
    produces = (DataFrame,)
