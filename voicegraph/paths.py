"""Where config lives: ./config when run from a checkout, else next to the packages.

A ``config/`` folder in the working directory is used first, so a project can keep its
own pipelines next to its code. It does not hide the built-in ones: a pipeline *name*
(``voicegraph call --pipeline text``) not found under ``./config/pipelines`` is taken
from the built-in folder, with a logged notice naming both places; a name found in
neither is an error listing both. The same holds for the default folder of ``validate``
and of the ASGI app's readiness check when ``./config`` has no ``pipelines/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.errors import ConfigError

__all__ = ["builtin_config_dir", "config_dir", "pipeline_path", "pipelines_dir"]

logger = logging.getLogger(__name__)


def builtin_config_dir() -> Path:
    """The ``config/`` folder that ships with voicegraph."""
    return Path(__file__).resolve().parent.parent / "config"


def config_dir() -> Path:
    """The ``config/`` folder: the working directory's, else the built-in one."""
    here = Path.cwd() / "config"
    if here.is_dir():
        return here
    return builtin_config_dir()


def pipelines_dir() -> Path:
    """The pipelines folder: ``config_dir()/pipelines``, else (with a notice) the built-in one."""
    folder = config_dir() / "pipelines"
    builtin = builtin_config_dir() / "pipelines"
    if not folder.is_dir() and builtin.is_dir() and not _same(folder, builtin):
        logger.warning("%s does not exist; using the built-in pipelines in %s", folder, builtin)
        return builtin
    return folder


def pipeline_path(name_or_path: str) -> Path:
    """A pipeline given by path, or by name under ``./config/pipelines/`` or the built-in folder.

    Raises ``ConfigError`` naming every place looked in when a name is found nowhere.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in name_or_path:
        return path
    local = config_dir() / "pipelines" / f"{name_or_path}.yaml"
    if local.is_file():
        return local
    builtin = builtin_config_dir() / "pipelines" / f"{name_or_path}.yaml"
    if _same(local, builtin):
        places = [local.parent]
    else:
        if builtin.is_file():
            logger.warning("pipeline '%s' is not in %s; using the built-in %s", name_or_path, local.parent, builtin)
            return builtin
        places = [local.parent, builtin.parent]
    known = sorted({p.stem for folder in places if folder.is_dir() for p in folder.glob("*.yaml")})
    raise ConfigError(f"no pipeline named '{name_or_path}' in {' or '.join(str(p) for p in places)} "
                      f"(pipelines: {', '.join(known) or 'none'})")


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()
