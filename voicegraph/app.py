"""The ASGI application: health and readiness now; transports mount their routes later.

``/healthz`` answers while the process lives. ``/readyz`` answers 200 only when every
pipeline under ``config/pipelines`` loads and validates (so a bad deploy never takes
traffic) and lists them; otherwise 503 with the errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pipeline.config import build_graph, load_pipeline
from pipeline.errors import ConfigError

from . import __version__
from .paths import config_dir

__all__ = ["create_app", "check_pipelines"]


def check_pipelines(folder: Path) -> tuple[list[str], list[str]]:
    """(names that validate, error messages) for every pipeline file in ``folder``."""
    ok: list[str] = []
    errors: list[str] = []
    for path in sorted(folder.glob("*.y*ml")):
        try:
            spec = load_pipeline(path)
            build_graph(spec)
            ok.append(spec.name)
        except ConfigError as exc:
            errors.append(str(exc))
    return ok, errors


def create_app(config: Path | None = None) -> Starlette:
    """Build the app; ``config`` defaults to the project's ``config/`` folder."""
    folder = (config or config_dir()) / "pipelines"

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    async def readyz(request: Request) -> JSONResponse:
        ok, errors = check_pipelines(folder)
        body: dict[str, Any] = {"pipelines": ok, "errors": errors}
        ready = bool(ok) and not errors
        body["status"] = "ready" if ready else "not ready"
        return JSONResponse(body, status_code=200 if ready else 503)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz)])
