"""Fixtures of the data tier's tests: a real ``redis-server`` per test (see redis_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sidecars.redis_server import RedisServer, redis_server_binary


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty ``redis-server`` on a free loopback port, killed after the test."""
    if redis_server_binary() is None:
        pytest.fail("redis-server is not installed: run scripts/test-services.sh (make test does)")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
