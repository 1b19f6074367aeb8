"""models.yaml: the shipped file, route rules, endpoints from the environment, and errors that
name the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from processors.llm.openai_chat import Endpoint, EndpointNotConfigured
from processors.llm.router import ModelRouter, TurnFeatures, load_models

ROOT = Path(__file__).resolve().parents[3]


def test_the_shipped_models_file_routes_by_its_rules() -> None:
    config = load_models(ROOT / "config" / "models.yaml")
    assert set(config.routes) == {"fast", "reasoning", "cheap"} and config.default_route == "fast"
    assert config.choose(TurnFeatures(agent="legal", chars=500, tools=True))[0] == "reasoning"
    assert config.choose(TurnFeatures(intent="goodbye", chars=500))[0] == "cheap"
    assert config.choose(TurnFeatures(chars=12))[0] == "cheap"
    assert config.choose(TurnFeatures(chars=12, tools=True)) == ("fast", "default route")
    assert config.deployments["azure-o1"].first_token_timeout_ms == 20000


def test_deployments_without_their_environment_are_skipped_and_say_why() -> None:
    config = load_models(ROOT / "config" / "models.yaml")
    router = ModelRouter(config, env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_MODEL": "local-model"})
    assert router.skip_reason("azure-gpt-4o") == "not configured: set AZURE_OPENAI_ENDPOINT"
    assert router.skip_reason("openai-compatible") is None
    assert router._models["openai-compatible"] == "local-model"
    azure = ModelRouter(config, env={"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "OPENAI_API_VERSION": "v"})
    assert azure.skip_reason("azure-gpt-4o") == "not configured: set AZURE_OPENAI_API_KEY (or auth: entra)"


def test_endpoints_resolve_from_the_environment_and_values_there_win() -> None:
    openai_ep = Endpoint.resolve(kind="openai", base_url="http://file/v1", base_url_env="U", api_key_env="K",
                                 env={"U": "http://env/v1"})
    assert (openai_ep.base_url, openai_ep.api_key) == ("http://env/v1", "unused")
    entra = Endpoint.resolve(kind="azure", base_url_env="E", api_version="2024-10-21", auth="entra",
                             env={"E": "https://r.openai.azure.com"})
    assert entra.entra and not entra.api_key
    with pytest.raises(EndpointNotConfigured, match="set OPENAI_API_VERSION"):
        Endpoint.resolve(kind="azure", base_url_env="E", api_key_env="K", api_version_env="OPENAI_API_VERSION",
                         env={"E": "https://r", "K": "k"})


@pytest.mark.parametrize(("text", "expected"), [
    ("deployments: {}\nroutes: {a: [x]}\n", ":1: 'deployments' must be a non-empty mapping"),
    ("deployments:\n  x: {kind: openai, model: m}\nroutes:\n  fast: [x, y]\n",
     ":4: routes.fast: unknown deployment 'y' (deployments: x)"),
    ("deployments:\n  x:\n    kind: openai\n    model: m\n    first_token_timeout_ms: -1\nroutes: {fast: [x]}\n",
     ":5: deployments.x: setting 'first_token_timeout_ms': must be > 0 and <= 600000, got -1"),
    ("deployments:\n  x: {kind: gemini, model: m}\nroutes: {fast: [x]}\n",
     ":2: deployments.x: setting 'kind': expected one of 'openai' | 'azure', got 'gemini'"),
    ("deployments:\n  x: {kind: openai, model: m}\nroutes: {fast: [x]}\nrules:\n  - when: {agent: legal}\n"
     "    route: slow\n", ":5: rules[0]: unknown route 'slow' (routes: fast)"),
    ("deployments:\n  x: {kind: openai, model: m}\nroutes: {fast: [x]}\nrules:\n  - when: {mood: happy}\n"
     "    route: fast\n", ":5: rules[0].when: conditions are agent, intent, tools, min_chars, max_chars"),
    ("deployments:\n  x: {kind: openai, model: m}\nroutes: {fast: [x]}\ndefault_route: slow\n",
     ":4: default_route: unknown route 'slow'"),
    ("deployments:\n  x: {kind: openai, model: m}\nroutes: {fast: [x]}\nbreaker: {failures: 0}\n",
     ":4: breaker: setting 'failures': must be >= 1, got 0"),
    ("deployments:\n  x: {kind: openai, model: m}\nroutes: {fast: [x]}\nfallbacks: []\n",
     ":4: unknown key 'fallbacks'"),
])
def test_mistakes_are_config_errors_naming_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_models(path)
    assert str(error.value).startswith(f"{path}{expected}"), str(error.value)
