"""The worker's default tool store is never seen half full by another thread.

Graphs are built in threads (the app's readiness check and a call's graph, at the same time
when the first call comes while the worker starts): a thread that found the store made but
not yet filled rejected every agent ("unknown tool 'transfer_to_human' (tools: none)").
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import agents.tools.store as store_module


def test_a_second_thread_gets_the_store_only_once_every_tool_is_in_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "_default", None)
    original = store_module.ToolStore.register
    seen_by_second: list[list[str]] = []
    second: list[threading.Thread] = []

    def register(self: store_module.ToolStore, fn: Any, **kwargs: Any) -> Any:
        if not second:  # while the first tool is being registered, another thread asks for the store
            thread = threading.Thread(target=lambda: seen_by_second.append(store_module.default_store().names()))
            second.append(thread)
            thread.start()
            thread.join(0.5)  # it must wait for the store to be complete, not return it now
        return original(self, fn, **kwargs)

    monkeypatch.setattr(store_module.ToolStore, "register", register)
    full = store_module.default_store().names()
    second[0].join(30)
    assert "transfer_to_human" in full and len(full) > 3
    assert seen_by_second == [full]
