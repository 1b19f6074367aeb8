"""The process-wide model cache: heavy resources every call shares, loaded once.

Speech models and voices take up to a second and a hundred megabytes to load. A call
must never pay that on the event loop, and two calls must never pay it twice, so each
is made once per worker process by ``shared(key, factory)`` and handed to every call.

Loading is blocking: call ``shared`` off the loop (a node calls it through
``run_blocking`` in its ``setup``). Each key has its own lock, so two different models
load in parallel on two executor threads, while two calls asking for the same model at
once load it once: the second waits for the first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import TypeVar

__all__ = ["shared"]

T = TypeVar("T")

_models: dict[Hashable, object] = {}
_loading: dict[Hashable, threading.Lock] = {}
_guard = threading.Lock()  # guards the two dicts, never held while a model loads


def shared(key: Hashable, factory: Callable[[], T]) -> T:
    """The process-wide instance for ``key``, made by ``factory()`` on first use.

    Blocking (a model load takes up to a second): call it off the loop. A factory that
    raises caches nothing, so the next call tries again.
    """
    with _guard:
        if key in _models:
            return _models[key]  # type: ignore[return-value]
        lock = _loading.setdefault(key, threading.Lock())
    with lock:
        with _guard:
            if key in _models:  # loaded by whoever held the lock before us
                return _models[key]  # type: ignore[return-value]
        model = factory()
        with _guard:
            _models[key] = model
            del _loading[key]
        return model

