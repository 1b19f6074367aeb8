"""A local Cosmos DB for the tests: ``@vercel/cosmosdb-server`` (npm) on a free loopback port,
and an HTTP proxy in front of it that can cut the line, throttle (429 with
``x-ms-retry-after-ms``) or refuse auth, as a real account does.

The server is installed by ``scripts/test-services.sh`` into
``$VOICEGRAPH_TEST_SERVICES`` (default ``~/.cache/voicegraph/test-services``); without it
(or without node) the Cosmos tests are skipped with that reason. It speaks the Cosmos
REST protocol with two known differences the tests tolerate: a missing item is a 500
(not a 404), and partition-scoped queries need the partition key in the WHERE clause.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

# The Cosmos DB emulator's published key (not a secret): the local server accepts any key.
EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
_READY = re.compile(rb"Ready to accept HTTP connections at ([\d.]+):(\d+)")


def server_cli() -> Path:
    """The installed server's ``lib/cli.js``."""
    base = Path(os.environ.get("VOICEGRAPH_TEST_SERVICES")
                or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "voicegraph" / "test-services")
    return base / "cosmosdb-server" / "node_modules" / "@vercel" / "cosmosdb-server" / "lib" / "cli.js"


@pytest.fixture(scope="module")
def cosmos_url() -> Iterator[str]:
    """A running local Cosmos DB server for the module: its http URL."""
    cli = server_cli()
    node = shutil.which("node")
    if node is None or not cli.is_file():
        pytest.skip(f"the local Cosmos DB server is not installed ({cli}); run scripts/test-services.sh")
    process = subprocess.Popen([node, str(cli), "-p", "0", "--host", "127.0.0.1", "--no-ssl"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the server prints its address once it listens
        match = _READY.search(line)
        if match is None:
            raise RuntimeError(f"the local Cosmos DB server did not start: {line!r}")
        yield f"http://{match.group(1).decode()}:{match.group(2).decode()}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


class CosmosProxy:
    """An HTTP proxy to the local server on a free port, with switchable faults."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.down = False  # connections are cut
        self.status: int | None = None  # every request answered with this status (401, 403, 503...)
        self.throttle = 0  # the next N document writes answered 429
        self.delay_s = 0.0  # every answer held this long (a store timing out)
        self.retry_after_ms = 30
        self.writes = 0  # document writes (create/upsert POST .../docs, replace PUT .../docs/ID) that reached it
        self.consistency: set[str] = set()  # x-ms-consistency-level of the requests seen
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # the server being slow, not a test waiting
        if self.down:
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=503)
        path = request.path.rstrip("/")
        is_write = (request.method == "POST" and path.endswith("/docs")
                    and request.headers.get("x-ms-documentdb-isquery", "").lower() != "true") or \
            (request.method == "PUT" and "/docs/" in path)
        if is_write:
            self.writes += 1
        self.consistency.add(request.headers.get("x-ms-consistency-level", ""))
        if self.status is not None:
            return _error(self.status, {401: "Unauthorized", 403: "Forbidden"}.get(self.status, "Error"),
                          "refused by the test proxy")
        if is_write and self.throttle > 0:
            self.throttle -= 1
            return _error(429, "TooManyRequests", "Request rate is large. More Request Units may be needed.",
                          {"x-ms-retry-after-ms": str(self.retry_after_ms), "x-ms-substatus": "3200"})
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=body) as answer:
            data = await answer.read()
            keep = {k: v for k, v in answer.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
            return web.Response(status=answer.status, headers=keep, body=data)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, headers={"content-type": "application/json", **(headers or {})},
                        text=json.dumps({"code": code, "message": message}))
