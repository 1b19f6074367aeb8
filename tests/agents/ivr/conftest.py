"""Fixtures of the IVR tests: the domain data on a temp state dir, and a fixed "today"."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from agents.ivr import IVREngine
from agents.tools.domain import Domain, use_domain

TODAY = date(2026, 11, 26)  # a Thursday


@pytest.fixture
def domain(tmp_path: Path) -> Iterator[Domain]:
    made = Domain(state_dir=tmp_path / "state", today=lambda: TODAY)
    previous = use_domain(made)
    yield made
    use_domain(previous)


@pytest.fixture
def engine() -> IVREngine:
    return IVREngine(today=lambda: TODAY)
