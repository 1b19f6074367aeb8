"""A ./config folder does not hide the built-in pipelines (issue 12, defect 10)."""

import logging
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from voicegraph.cli import main
from voicegraph.paths import builtin_config_dir, pipeline_path, pipelines_dir

BUILTIN = builtin_config_dir() / "pipelines"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with its own config/pipelines holding one pipeline, 'mine'."""
    (tmp_path / "config" / "pipelines").mkdir(parents=True)
    (tmp_path / "config" / "pipelines" / "mine.yaml").write_text((BUILTIN / "text.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_local_pipeline_is_found_first(project: Path) -> None:
    assert pipeline_path("mine") == Path.cwd() / "config" / "pipelines" / "mine.yaml"


def test_a_builtin_pipeline_missing_locally_is_used_with_a_notice(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="voicegraph.paths"):
        assert pipeline_path("text") == BUILTIN / "text.yaml"
    assert caplog.messages == [f"pipeline 'text' is not in {project / 'config' / 'pipelines'}; using the built-in "
                               f"{BUILTIN / 'text.yaml'}"]


def test_a_name_found_nowhere_names_both_places(project: Path) -> None:
    with pytest.raises(ConfigError) as info:
        pipeline_path("nope")
    assert str(info.value) == (f"no pipeline named 'nope' in {project / 'config' / 'pipelines'} or {BUILTIN} "
                               "(pipelines: acs, acs_azure, acs_media_only, azure, local, local_llm, mine, scenario, scenario_text, text)")


def test_the_cli_reaches_builtin_pipelines_from_a_project(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "text"]) == 0  # used to fail: config/pipelines/text.yaml: cannot read
    assert capsys.readouterr().out.startswith("flowchart LR\n")


def test_a_config_folder_without_pipelines_falls_back_for_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "config" / "agents").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="voicegraph.paths"):
        assert pipelines_dir() == BUILTIN
    assert "does not exist; using the built-in pipelines" in caplog.text


def test_paths_and_file_names_are_taken_as_given(project: Path) -> None:
    assert pipeline_path("some/where.yaml") == Path("some/where.yaml")
    assert pipeline_path("config/pipelines/mine.yaml") == Path("config/pipelines/mine.yaml")
