"""Fixtures for the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _history_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's calls keep their history (SQLite, the default store) in a folder of their
    own, never in the working folder, so no test hears a caller another test remembered."""
    folder: Path = tmp_path_factory.mktemp("history")
    monkeypatch.setenv("VOICEGRAPH_HISTORY_PATH", str(folder / "history.db"))
