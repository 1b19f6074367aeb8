"""Azure Speech settings from the environment, and the SDK config made from them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pipeline.errors import ConfigError
from processors.azure_speech.config import ENTRA_SCOPE, AzureSpeechSettings, EntraToken, speech_config


def test_host_with_and_without_key() -> None:
    s = AzureSpeechSettings.from_env({"AZURE_SPEECH_HOST": "ws://127.0.0.1:5000"})
    assert (s.auth, s.host, s.key, s.language) == ("host", "ws://127.0.0.1:5000", None, "en-US")
    s = AzureSpeechSettings.from_env({"AZURE_SPEECH_HOST": "wss://speech.local", "AZURE_SPEECH_KEY": "k" * 32})
    assert (s.auth, s.key) == ("host", "k" * 32)
    assert "k" * 32 not in s.describe()


def test_key_and_region() -> None:
    s = AzureSpeechSettings.from_env(
        {"AZURE_SPEECH_KEY": "0123456789abcdef", "AZURE_SPEECH_REGION": "westeurope", "AZURE_SPEECH_LANGUAGE": "de-DE"}
    )
    assert (s.auth, s.region, s.language) == ("key", "westeurope", "de-DE")
    config = speech_config(s)
    assert config.region == "westeurope"
    assert config.subscription_key == "0123456789abcdef"
    assert config.speech_recognition_language == "de-DE"


def test_overrides_win_over_env() -> None:
    s = AzureSpeechSettings.from_env(
        {"AZURE_SPEECH_HOST": "ws://127.0.0.1:1"}, overrides={"host": "ws://127.0.0.1:2", "language": "fr-FR"}
    )
    assert (s.host, s.language) == ("ws://127.0.0.1:2", "fr-FR")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "not configured"),
        ({"AZURE_SPEECH_KEY": "0123456789abcdef"}, "AZURE_SPEECH_REGION is missing"),
        ({"AZURE_SPEECH_REGION": "westeurope"}, "neither AZURE_SPEECH_KEY nor AZURE_SPEECH_RESOURCE_ID"),
        ({"AZURE_SPEECH_REGION": "West Europe", "AZURE_SPEECH_KEY": "0123456789abcdef"}, "'West Europe' is not a region"),
        ({"AZURE_SPEECH_REGION": "westeurope", "AZURE_SPEECH_KEY": "short"}, "AZURE_SPEECH_KEY looks malformed"),
        ({"AZURE_SPEECH_HOST": "http://x:1"}, "must be ws://host:port"),
        ({"AZURE_SPEECH_HOST": "ws://x:1/speech"}, "no path"),
        ({"AZURE_SPEECH_HOST": "ws://x:1", "AZURE_SPEECH_REGION": "eastus"}, "not both"),
        ({"AZURE_SPEECH_HOST": "ws://x:1", "AZURE_SPEECH_LANGUAGE": "english please"}, "not a BCP-47"),
        ({"AZURE_SPEECH_REGION": "eastus", "AZURE_SPEECH_RESOURCE_ID": "speech-1"}, "ARM id"),
    ],
)
def test_bad_settings_name_what_is_wrong(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        AzureSpeechSettings.from_env(env)


def test_unknown_override_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'regoin'"):
        AzureSpeechSettings.from_env({}, overrides={"regoin": "x"})


@dataclass
class _Access:
    token: str
    expires_on: int


class _Credential:
    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str) -> _Access:
        self.scopes.extend(scopes)
        return _Access(f"tok{len(self.scopes)}", 1000 + 3600 * len(self.scopes))


def test_entra_token_is_refreshed_before_expiry() -> None:
    now = [1000.0]
    cred = _Credential()
    token = EntraToken("/subscriptions/s/rg/r", cred, margin_s=300.0, clock=lambda: now[0])  # type: ignore[arg-type]
    assert token.stale()
    assert token.fetch() == "aad#/subscriptions/s/rg/r#tok1"
    assert token.expires_on == 4600.0
    now[0] = 4299.0  # 301 s before expiry: still good
    assert token.fetch() == "aad#/subscriptions/s/rg/r#tok1"
    now[0] = 4300.0  # inside the margin
    assert token.stale()
    assert token.fetch() == "aad#/subscriptions/s/rg/r#tok2"
    assert cred.scopes == [ENTRA_SCOPE, ENTRA_SCOPE]


def test_entra_config_carries_the_token() -> None:
    s = AzureSpeechSettings.from_env(
        {"AZURE_SPEECH_REGION": "eastus", "AZURE_SPEECH_RESOURCE_ID": "/subscriptions/s/x"}
    )
    assert s.auth == "entra"
    with pytest.raises(ConfigError, match="needs a token"):
        speech_config(s)
    assert speech_config(s, token="aad#/subscriptions/s/x#t").authorization_token == "aad#/subscriptions/s/x#t"
