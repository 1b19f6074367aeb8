"""``voicegraph validate`` for agent and scenario files.

A file in a folder named ``agents`` is an agent file: its folder is loaded the way the
orchestrator loads it (:class:`~agents.registry.AgentRegistry`: inheritance from
``base.yaml``, the prompt template, tools in the tool store, handoff targets, the IVR
flow), and the file's own problem, if any, is reported at ``file:line``. A file in a
folder named ``scenarios`` is a scenario file, checked by
:func:`~agents.scenarios.load_scenario` against the agents of the sibling ``agents``
folder; every agent file there counts, broken or not, so a broken agent is reported once,
at its own file. The CLI is not on an event loop, so files are read in place.
"""

from __future__ import annotations

from pathlib import Path

from agents.registry import BASE, AgentRegistry
from agents.scenarios import load_scenario
from pipeline.errors import ConfigError

__all__ = ["AGENT_FOLDER", "SCENARIO_FOLDER", "AgentFolders", "check_agent", "check_scenario", "kind_of"]

AGENT_FOLDER = "agents"
SCENARIO_FOLDER = "scenarios"


def kind_of(path: Path) -> str:
    """``agent``, ``scenario`` or ``pipeline``, by the name of the file's folder."""
    folder = path.parent.name
    return {AGENT_FOLDER: "agent", SCENARIO_FOLDER: "scenario"}.get(folder, "pipeline")


class AgentFolders:
    """Each agents folder loaded once per ``validate`` run."""

    def __init__(self) -> None:
        self._registries: dict[Path, AgentRegistry] = {}

    def registry(self, folder: Path) -> AgentRegistry:
        """The agents of ``folder``, loaded (blocking)."""
        key = folder.resolve()
        registry = self._registries.get(key)
        if registry is None:
            registry = self._registries[key] = AgentRegistry(folder)
            registry.load()
        return registry


def check_agent(path: Path, folders: AgentFolders) -> str:
    """What ``validate`` prints for a good agent file; ``ConfigError`` (file:line) for a bad one."""
    if not path.is_file():
        raise ConfigError("no such file" if not path.exists() else "not a file", file=str(path))
    registry = folders.registry(path.parent)
    health = registry.health().get(path.stem)
    if health is None:  # not *.yaml: the registry never reads it
        raise ConfigError("an agent file ends in .yaml (the registry reads no other files)", file=str(path))
    if health.status == "error":
        raise ConfigError(health.error)  # already file:line: message
    if path.stem == BASE:
        return f"ok: {path} (the defaults every agent inherits)"
    spec = registry.get(path.stem)
    steps = len(spec.flow.get("steps") or {})
    return (f"ok: {path} (agent {spec.name}: {len(spec.tools)} tools, {len(spec.handoffs)} handoffs, "
            f"flow of {steps} steps)")


def check_scenario(path: Path, folders: AgentFolders) -> str:
    """What ``validate`` prints for a good scenario file; ``ConfigError`` (file:line) for a bad one."""
    agents_folder = path.parent.parent / AGENT_FOLDER
    names = None
    if agents_folder.is_dir():
        names = {stem for stem in folders.registry(agents_folder).health() if stem != BASE}
    scenario = load_scenario(path, names)
    checked = "" if names is not None else f"; agents not checked: no {agents_folder}"
    return (f"ok: {path} (scenario {scenario.name}: entry {scenario.entry}, {len(scenario.agents)} agents, "
            f"{len(scenario.intents)} intents, {len(scenario.demo)} demo lines{checked})")

