"""Fixtures of the data tier's tests: a real ``redis-server`` per test, or a real three-node
Redis Cluster (see redis_server.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sidecars.redis_server import RedisServer, cluster_port, redis_server_binary


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


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Three fresh ``redis-server`` nodes made one Redis Cluster (no replicas), stopped after."""
    if shutil.which("redis-cli") is None or redis_server_binary() is None:
        pytest.fail("redis-server and redis-cli are not installed: run scripts/test-services.sh (make test does)")
    nodes: list[RedisServer] = []
    try:
        for i in range(3):
            folder = tmp_path / f"node{i}"
            folder.mkdir()
            node = RedisServer(folder, port=cluster_port(),
                               extra=("--cluster-enabled", "yes", "--cluster-config-file", str(folder / "nodes.conf")))
            node.start()
            nodes.append(node)
        created = subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
                                  "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True,
                                 timeout=60)
        assert created.returncode == 0, created.stdout + created.stderr
        yield nodes
    finally:
        for node in nodes:
            node.stop()
