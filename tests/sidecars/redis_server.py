"""A real ``redis-server`` for the tests: started on a free loopback port, no persistence.

``RedisServer.start()`` runs ``redis-server`` (Debian's package; ``scripts/test-services.sh``
installs it) bound to 127.0.0.1 on a port found free, with RDB and AOF off, and returns
once the server has logged that it accepts connections. ``stop()`` kills it (a crash, as
far as clients can tell) and ``start()`` again brings it back on the same port, empty:
that is how the tests take Redis away in the middle of a call.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

__all__ = ["RedisServer", "free_port", "redis_server_binary"]

READY_LINE = "Ready to accept connections"


def redis_server_binary() -> str | None:
    """The ``redis-server`` executable, or None when it is not installed."""
    return shutil.which("redis-server")


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process (see module docstring)."""

    def __init__(self, workdir: Path, *, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed: run scripts/test-services.sh")
        self.binary = binary
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self.extra = extra
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20.0) -> None:
        """Start the server and wait (at most ``timeout_s``) until it accepts connections."""
        if self.process is not None:
            raise RuntimeError("redis-server already running")
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "notice",
                "--enable-debug-command", "local", *self.extra]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.log.append(line.rstrip())
                if READY_LINE in line:
                    ready.set()
            ready.set()  # the process ended: stop waiting

        threading.Thread(target=pump, name=f"redis-{self.port}-log", daemon=True).start()
        if not ready.wait(timeout_s) or process.poll() is not None:
            process.kill()
            process.wait()
            raise RuntimeError(f"redis-server on port {self.port} did not start:\n" + "\n".join(self.log[-20:]))
        self.process = process

    def stop(self) -> None:
        """Kill the server (SIGKILL: nothing is saved, clients see the connection drop)."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port < 55000:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
                return port
