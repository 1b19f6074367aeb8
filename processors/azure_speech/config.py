"""How voicegraph reaches Azure AI Speech: settings from the environment (or YAML), and the
SDK's :class:`SpeechConfig` made from them.

Three ways to authenticate, checked in this order:

1. ``AZURE_SPEECH_HOST`` (``ws://host:port`` or ``wss://...``): a Speech container or the
   local peer (``voicegraph peer speech``). ``AZURE_SPEECH_KEY``, if set, is sent as the
   ``Ocp-Apim-Subscription-Key`` header; a container needs none.
2. ``AZURE_SPEECH_KEY`` + ``AZURE_SPEECH_REGION``: the cloud service by key.
3. ``AZURE_SPEECH_RESOURCE_ID`` + ``AZURE_SPEECH_REGION`` (no key): Microsoft Entra ID. A
   token for ``https://cognitiveservices.azure.com/.default`` is fetched with
   ``azure-identity``'s ``DefaultAzureCredential`` and handed to the SDK as
   ``aad#<resource id>#<token>``, the form the service documents for Entra ID with a
   region endpoint. :class:`EntraToken` refreshes it before it expires.

Anything else is one :class:`~pipeline.errors.ConfigError` that names what is missing or
wrong; nothing here talks to the network except :meth:`EntraToken.fetch`, which blocks
(azure-identity's credentials are synchronous) and so runs in an executor.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import azure.cognitiveservices.speech as speechsdk
    from azure.core.credentials import TokenCredential

__all__ = [
    "ENTRA_SCOPE",
    "AzureSpeechSettings",
    "EntraToken",
    "speech_config",
]

ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"

_REGION = re.compile(r"^[a-z][a-z0-9]{1,39}$")  # "westeurope", "eastus2"
_LANGUAGE = re.compile(r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8})*$")  # BCP-47, loosely
_HOST = re.compile(r"^wss?://[^/\s?#]+$")  # scheme://host[:port], no path: the SDK adds it

Auth = Literal["host", "key", "entra"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AzureSpeechSettings:
    """Where and how to reach Azure AI Speech. Build with :meth:`from_env`.

    Attributes:
        auth: ``host`` (a container or the local peer), ``key`` or ``entra``.
        host: ``ws://host:port`` for ``auth == "host"``.
        region: The Azure region (``westeurope``) for ``key`` and ``entra``.
        key: The subscription key (``key``; optional with ``host``).
        resource_id: The Speech resource's ARM id, for ``entra``.
        language: Recognition language (BCP-47), ``en-US`` unless set.
    """

    auth: Auth
    host: str | None = None
    region: str | None = None
    key: str | None = None
    resource_id: str | None = None
    language: str = "en-US"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, overrides: Mapping[str, Any] | None = None
    ) -> AzureSpeechSettings:
        """Read ``AZURE_SPEECH_*`` from ``env`` (``os.environ`` by default).

        ``overrides`` (from a pipeline's YAML: ``host``, ``region``, ``key``,
        ``resource_id``, ``language``) win over the environment; empty strings count as
        unset.

        Raises:
            ConfigError: naming the variable that is missing or malformed.
        """
        source = os.environ if env is None else env
        values: dict[str, str | None] = {
            name: (source.get(f"AZURE_SPEECH_{name.upper()}") or None)
            for name in ("host", "region", "key", "resource_id", "language")
        }
        for name, value in (overrides or {}).items():
            if name not in values:
                raise ConfigError(f"azure speech: unknown setting '{name}' (known: {', '.join(values)})")
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"azure speech: '{name}' must be a string, not {type(value).__name__}")
            values[name] = value or None
        host, region, key, resource_id = values["host"], values["region"], values["key"], values["resource_id"]
        language = values["language"] or "en-US"
        if not _LANGUAGE.match(language):
            raise ConfigError(f"AZURE_SPEECH_LANGUAGE {language!r} is not a BCP-47 tag like 'en-US'")
        if host is not None:
            if not _HOST.match(host):
                raise ConfigError(
                    f"AZURE_SPEECH_HOST {host!r} must be ws://host:port or wss://host[:port] (no path)"
                )
            if region is not None:
                raise ConfigError("set AZURE_SPEECH_HOST or AZURE_SPEECH_REGION, not both")
            return cls(auth="host", host=host, key=key, language=language)
        if region is None:
            if key is not None or resource_id is not None:
                raise ConfigError("AZURE_SPEECH_REGION is missing (needed with AZURE_SPEECH_KEY or _RESOURCE_ID)")
            raise ConfigError(
                "Azure Speech is not configured: set AZURE_SPEECH_KEY + AZURE_SPEECH_REGION, "
                "or AZURE_SPEECH_HOST, or AZURE_SPEECH_RESOURCE_ID + AZURE_SPEECH_REGION (Entra ID)"
            )
        if not _REGION.match(region):
            raise ConfigError(f"AZURE_SPEECH_REGION {region!r} is not a region name like 'westeurope'")
        if key is not None:
            if key.strip() != key or len(key) < 8:
                raise ConfigError("AZURE_SPEECH_KEY looks malformed (too short, or has spaces)")
            return cls(auth="key", region=region, key=key, language=language)
        if resource_id is None:
            raise ConfigError("AZURE_SPEECH_REGION is set but neither AZURE_SPEECH_KEY nor AZURE_SPEECH_RESOURCE_ID is")
        if not resource_id.startswith("/subscriptions/"):
            raise ConfigError("AZURE_SPEECH_RESOURCE_ID must be the resource's ARM id (/subscriptions/...)")
        return cls(auth="entra", region=region, resource_id=resource_id, language=language)

    def with_language(self, language: str) -> AzureSpeechSettings:
        """A copy recognising ``language`` (BCP-47)."""
        if not _LANGUAGE.match(language):
            raise ConfigError(f"language {language!r} is not a BCP-47 tag like 'en-US'")
        return replace(self, language=language)

    def describe(self) -> str:
        """Where we connect, for logs; never the key or a token."""
        if self.auth == "host":
            return f"host {self.host} ({'with' if self.key else 'no'} key)"
        return f"region {self.region} ({self.auth})"


def speech_config(settings: AzureSpeechSettings, *, token: str | None = None) -> speechsdk.SpeechConfig:
    """The SDK's config for ``settings``; ``token`` is the current :class:`EntraToken` value
    (``aad#...``) for ``entra``, or any authorization token to send instead of a key.

    Raises:
        ConfigError: ``entra`` without a token, or the SDK refusing the combination.
    """
    import azure.cognitiveservices.speech as speechsdk  # native library: loaded on first use

    try:
        if settings.auth == "host":
            config = speechsdk.SpeechConfig(host=settings.host, subscription=settings.key)
            if token is not None:
                config.authorization_token = token
        elif settings.auth == "key":
            config = speechsdk.SpeechConfig(subscription=settings.key, region=settings.region)
        else:
            if token is None:
                raise ConfigError("azure speech: Entra ID needs a token (EntraToken.fetch) before connecting")
            config = speechsdk.SpeechConfig(auth_token=token, region=settings.region)
    except ValueError as exc:  # the SDK's own argument checks
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"azure speech: the SDK refused the settings: {exc}") from exc
    config.speech_recognition_language = settings.language
    return config


class EntraToken:
    """A Microsoft Entra ID token for Speech, in the ``aad#<resource id>#<token>`` form,
    refreshed ``margin_s`` before it expires.

    Entra tokens live 60-90 minutes; five minutes of margin leaves room for a slow identity
    endpoint without ever handing the SDK a token that expires mid-utterance.
    """

    def __init__(
        self,
        resource_id: str,
        credential: TokenCredential | None = None,
        *,
        margin_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._resource_id = resource_id
        self._credential = credential
        self._margin_s = margin_s
        self._clock = clock
        self._value: str | None = None
        self._expires_on = 0.0

    @property
    def expires_on(self) -> float:
        """Expiry of the current token, in seconds since the epoch (0 before the first fetch)."""
        return self._expires_on

    def stale(self) -> bool:
        """True when the token is missing or within the margin of its expiry."""
        return self._value is None or self._clock() >= self._expires_on - self._margin_s

    def fetch(self) -> str:
        """The current value, fetching a new token if stale. Blocks: call it off the loop."""
        if self.stale():
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            access = self._credential.get_token(ENTRA_SCOPE)
            self._value = f"aad#{self._resource_id}#{access.token}"
            self._expires_on = float(access.expires_on)
        assert self._value is not None
        return self._value

    async def get(self) -> str:
        """:meth:`fetch` in the default executor, so the event loop never waits on it."""
        if not self.stale():
            assert self._value is not None
            return self._value
        return await asyncio.get_running_loop().run_in_executor(None, self.fetch)
