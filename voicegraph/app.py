"""The ASGI application: health, readiness, and ACS phone calls: the Event Grid webhook
(``/acs/events``), the call callbacks (``/acs/callbacks``), the media WebSocket
(``/acs/media``) and the call actions (``/acs/calls``), sharing one registry of calls and
one Call Automation client per app (closed with the lifespan). A call runs ``acs.yaml``
(``acs_azure.yaml`` with ``VOICEGRAPH_SPEECH=azure``: :func:`acs_pipeline`)
unless it was dialled with another pipeline's name (any pipeline of the folder with an
``acs_media`` line); an agent's transfer or hang-up is carried out on the ACS call.

``/healthz`` answers while the process lives. ``/readyz`` answers 200 only when every
pipeline under ``config/pipelines`` loads and validates (so a bad deploy never takes
traffic) and lists them; otherwise 503 with the errors, or ``"starting"`` until the
first check has finished.

Checking means parsing YAML and building graphs: tens of milliseconds warm, about
600 ms cold (the first check imports every node type), far too long for the event loop
that carries the calls. So ``Readiness`` checks in a worker thread, once at start-up
(the app starts serving at once) and again whenever a pipeline file changes; it looks
for changes every ``poll_s`` seconds by comparing the folder's file names, sizes and
mtimes (one ``os.scandir``, also in the thread). ``/readyz`` only reads the last result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pipeline.config import build_graph, load_pipeline
from pipeline.errors import ConfigError
from processors.sidecars.services import DataTier, data_tier_from_env, install
from transports.acs.auth import NoAuth, RequestVerifier, verifier_from_env
from transports.acs.callbacks import CallbacksEndpoint
from transports.acs.control import CallControl, CallsApi
from transports.acs.events import EventsWebhook
from transports.acs.route import media_route
from transports.acs.sessions import CallSessions

from . import __version__
from .paths import pipelines_dir

__all__ = ["PipelineCheck", "Readiness", "acs_pipeline", "acs_pipelines", "check_pipelines", "create_app"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineCheck:
    """The outcome of checking a folder of pipelines."""

    ok: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    checked_at: float = field(default_factory=time.time)

    @property
    def ready(self) -> bool:
        return bool(self.ok) and not self.errors


def check_pipelines(folder: Path) -> PipelineCheck:
    """Load and validate every pipeline file in ``folder`` (blocking: call it off the loop).

    One bad file never stops the others from being checked, whatever it raises.
    """
    ok: list[str] = []
    errors: list[str] = []
    warnings: list[str] = []
    if not folder.is_dir():
        return PipelineCheck(errors=(f"{folder}: no such folder",))
    for path in sorted(folder.glob("*.y*ml")):
        try:
            spec = load_pipeline(path, warn=warnings.append)
            build_graph(spec)
            ok.append(spec.name)
        except ConfigError as exc:
            errors.append(str(exc))
        except Exception as exc:  # a bug in a node type: this file is not ready, the others still count
            logger.exception("checking %s", path)
            errors.append(f"{path}: unexpected {type(exc).__name__}: {exc}")
    if not ok and not errors:
        errors.append(f"{folder}: no pipeline files")
    return PipelineCheck(ok=tuple(ok), errors=tuple(errors), warnings=tuple(warnings))


class Readiness:
    """The last ``check_pipelines`` result of a folder, re-checked off the loop when files change."""

    def __init__(self, folder: Path, *, poll_s: float = 2.0) -> None:
        self.folder = folder
        self.poll_s = poll_s
        #: None until the first check has finished.
        self.result: PipelineCheck | None = None
        self.checks = 0
        self._stamp: object = None
        self._lock = threading.Lock()  # the watcher and an explicit check() never interleave

    def stamp(self) -> object:
        """What identifies the folder's current content: names, sizes and mtimes of its YAML files."""
        files = []
        try:
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    if entry.name.endswith((".yaml", ".yml")):
                        st = entry.stat()
                        files.append((entry.name, st.st_size, st.st_mtime_ns))
        except OSError as exc:
            return ("unreadable", str(exc))
        return tuple(sorted(files))

    def check(self, *, force: bool = False) -> bool:
        """Re-check if the files changed since the last check (or ``force``); True if it did.

        Blocking: run it in a thread (``refresh``) when on the event loop.
        """
        with self._lock:
            stamp = self.stamp()  # taken first: a change made during the check is seen next time
            if not force and self.result is not None and stamp == self._stamp:
                return False
            self.result = check_pipelines(self.folder)
            self._stamp = stamp
            self.checks += 1
            if not self.result.ready:
                logger.warning("not ready: %s", "; ".join(self.result.errors))
            return True

    async def refresh(self, *, force: bool = False) -> bool:
        """``check()`` in a worker thread, so the event loop never parses YAML."""
        return await asyncio.to_thread(self.check, force=force)

    async def watch(self) -> None:
        """Check now, then every ``poll_s`` seconds if a file changed; runs until cancelled."""
        force = True
        while True:
            try:
                await self.refresh(force=force)
                force = False
            except Exception as exc:  # never let the watcher die: report not ready instead
                logger.exception("readiness check failed")
                self.result = PipelineCheck(errors=(f"readiness check failed: {type(exc).__name__}: {exc}",))
            await asyncio.sleep(self.poll_s)

    def response(self) -> JSONResponse:
        """The ``/readyz`` answer from the last result (no I/O)."""
        result = self.result
        if result is None:
            return JSONResponse({"status": "starting", "pipelines": [], "errors": []}, status_code=503)
        body: dict[str, Any] = {
            "status": "ready" if result.ready else "not ready",
            "pipelines": list(result.ok),
            "errors": list(result.errors),
            "warnings": list(result.warnings),
            "checked_at": result.checked_at,
        }
        return JSONResponse(body, status_code=200 if result.ready else 503)


def acs_pipelines(folder: Path) -> tuple[str, ...]:
    """The pipelines of ``folder`` an ACS call can run (an ``acs_media`` node), ``acs`` first.

    Read from the YAML without building anything (blocking; at app creation). A file that
    does not parse is left out here; ``/readyz`` reports it.
    """
    names: list[str] = []
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else ():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        nodes = raw.get("nodes") if isinstance(raw, dict) else None
        if isinstance(nodes, dict) and any(isinstance(n, dict) and n.get("use") == "acs_media" for n in nodes.values()):
            names.append(path.stem)
    return tuple(sorted(names, key=lambda name: name != "acs"))


SPEECH_ENV = "VOICEGRAPH_SPEECH"


def acs_pipeline(folder: Path, env: Mapping[str, str] | None = None) -> Path:
    """The default pipeline of ACS calls: ``acs.yaml`` (the embedded engines), or
    ``acs_azure.yaml`` when ``VOICEGRAPH_SPEECH=azure``; the other stays dialable by name.

    An explicit switch rather than the mere presence of ``AZURE_SPEECH_*``, so a key left in
    the environment never moves calls to a paid service by surprise. With ``azure`` the
    Azure settings are checked here, once: a mistake is logged at start-up (calls would
    then run on the STT node's fallback engine).

    Raises:
        ConfigError: ``VOICEGRAPH_SPEECH`` is set to something else than ``embedded`` or ``azure``.
    """
    env = os.environ if env is None else env
    speech = env.get(SPEECH_ENV, "embedded").strip().lower() or "embedded"
    if speech == "embedded":
        return folder / "acs.yaml"
    if speech != "azure":
        raise ConfigError(f"{SPEECH_ENV}={env.get(SPEECH_ENV)!r}: must be 'embedded' or 'azure'")
    from processors.azure_speech.config import AzureSpeechSettings

    try:
        settings = AzureSpeechSettings.from_env(env)
        logger.info("ACS calls recognise speech on Azure AI Speech at %s", settings.describe())
    except ConfigError as exc:
        logger.error("%s=azure but %s: calls will use the embedded fallback engine", SPEECH_ENV, exc)
    return folder / "acs_azure.yaml"


def create_app(config: Path | None = None, *, poll_s: float = 2.0, control: CallControl | None = None,
               verifier: RequestVerifier | None = None, data_tier: DataTier | None = None) -> Starlette:
    """Build the app; ``config`` defaults to the project's ``config/`` folder.

    ``app.state.readiness`` is the app's ``Readiness``; its checks start with the app's
    lifespan (a server, or ``with TestClient(app)``). ``app.state.acs_sessions`` is the
    registry of ACS calls; ``app.state.acs_control`` acts on them (answer, dial, hang up,
    transfer, record; configured by the environment unless ``control`` is given, whose
    ``sessions`` are then the app's). The media socket runs the ``acs.yaml`` pipeline
    (``acs_azure.yaml`` with ``VOICEGRAPH_SPEECH=azure``: :func:`acs_pipeline`).
    ACS's requests (callbacks, media upgrades) are checked by ``verifier``, by default
    :func:`~transports.acs.auth.verifier_from_env` (closed with the lifespan; one key cache
    and one replay cache for both routes). ``VOICEGRAPH_ACS_NO_AUTH=1`` turns the checks off.

    ``data_tier`` is the worker's data tier (:mod:`processors.sidecars.services`: live
    state, history, events, recording; default: :func:`data_tier_from_env`), installed,
    started and closed with the lifespan; ``app.state.data_tier`` is it. With its live state
    on Redis (``REDIS_URL``), a call's media may reconnect to any worker sharing that Redis.
    """
    folder = config / "pipelines" if config is not None else pipelines_dir()
    readiness = Readiness(folder, poll_s=poll_s)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    async def readyz(request: Request) -> JSONResponse:
        return readiness.response()

    media_pipeline = acs_pipeline(folder)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        previous = install(tier)
        await tier.start()
        if media_pipeline.name == "acs_azure.yaml":
            from processors.stt.azure_engine import warm_up

            # The Speech SDK's first recogniser costs ~0.35 s: paid here, not by the first call.
            await asyncio.get_running_loop().run_in_executor(None, warm_up)
        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(readiness.watch(), name="readiness")
            yield
            watcher.cancel()
            await tier.aclose()
            install(previous)
            await acs.aclose()
            if own_verifier is not None:
                await own_verifier.aclose()

    default = media_pipeline.stem  # first: what inbound calls, and calls dialled without a name, run
    pipelines = (default, *(name for name in acs_pipelines(folder) if name != default))
    acs = control if control is not None else CallControl(CallSessions(), pipelines=pipelines)
    sessions = acs.sessions
    own_verifier = verifier_from_env() if verifier is None else None
    # The worker's side-cars, started with the lifespan; a bad configuration is a ConfigError now.
    tier = data_tier if data_tier is not None else data_tier_from_env()
    check: RequestVerifier = verifier or own_verifier or NoAuth()
    callbacks = CallbacksEndpoint(sessions, None if isinstance(check, NoAuth) else check, on_media_failed=acs.end_call)
    routes = [Route("/healthz", healthz), Route("/readyz", readyz), EventsWebhook(acs).route(), callbacks.route(),
              media_route(sessions, media_pipeline, verifier=check, act=acs.act,
                          data_tier=tier, live=tier.live), *CallsApi(acs).routes()]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.readiness = readiness
    app.state.acs_sessions = sessions
    app.state.acs_control = acs
    app.state.data_tier = tier
    return app

