"""pipeline.models.shared: each model loads once per process, different models in parallel."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.models import shared

TIMEOUT = 10  # seconds; only a bound on a hang


def test_two_callers_of_one_key_share_one_load() -> None:
    key = ("test-model", uuid.uuid4().hex)
    loading, release = threading.Event(), threading.Event()
    loads: list[object] = []

    def factory() -> object:
        loading.set()
        release.wait(TIMEOUT)
        loads.append(object())
        return loads[-1]

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(shared, key, factory)
        assert loading.wait(TIMEOUT)
        second = pool.submit(shared, key, factory)  # waits for the first load, does not start its own
        release.set()
        assert first.result(TIMEOUT) is second.result(TIMEOUT) is loads[0]
    assert len(loads) == 1
    assert shared(key, factory) is loads[0]


def test_different_models_load_in_parallel() -> None:
    # Each factory waits for the other to have started: with one lock for every key
    # (as before), the second could not start until the first gave up.
    a_started, b_started = threading.Event(), threading.Event()

    def load_a() -> bool:
        a_started.set()
        return b_started.wait(TIMEOUT)

    def load_b() -> bool:
        b_started.set()
        return a_started.wait(TIMEOUT)

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(shared, ("test-a", uuid.uuid4().hex), load_a)
        b = pool.submit(shared, ("test-b", uuid.uuid4().hex), load_b)
        assert a.result(TIMEOUT + 1) and b.result(TIMEOUT + 1)


def test_a_failed_load_is_not_cached() -> None:
    key = ("test-model", uuid.uuid4().hex)

    def broken() -> object:
        raise FileNotFoundError("no model.bin")

    with pytest.raises(FileNotFoundError, match=r"no model\.bin"):
        shared(key, broken)
    assert shared(key, lambda: "loaded") == "loaded"
