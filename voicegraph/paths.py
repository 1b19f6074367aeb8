"""Where config lives: ./config when run from a checkout, else next to the packages."""

from __future__ import annotations

from pathlib import Path

__all__ = ["config_dir", "pipeline_path"]


def config_dir() -> Path:
    """The ``config/`` folder: the working directory's, else the source tree's."""
    here = Path.cwd() / "config"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "config"


def pipeline_path(name_or_path: str) -> Path:
    """A pipeline given by path, or by name under ``config/pipelines/``."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return config_dir() / "pipelines" / f"{name_or_path}.yaml"
