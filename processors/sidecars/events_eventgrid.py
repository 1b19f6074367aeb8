"""Events to an Azure Event Grid topic, through the official async SDK.

:class:`EventGridTransport` publishes each batch with ``azure.eventgrid.aio.EventGridPublisherClient.send``
to a topic whose input schema is CloudEvents 1.0: the SDK POSTs the batch to the topic
endpoint (``https://<topic>.<region>-1.eventgrid.azure.net/api/events``) as
``application/cloudevents-batch+json``, with the key in ``aeg-sas-key`` (an
``AzureKeyCredential``) or an Entra ID token (``DefaultAzureCredential``, when no key is
given). The events are handed over in the CloudEvents JSON structured format (dicts), which
the SDK sends as they are.

Errors: the SDK raises for any answer but 200 (``ClientAuthenticationError`` on 401,
``HttpResponseError`` otherwise, after its own retries of 408/429/5xx); the bus logs, counts
and sends the batch again later, so nothing accepted is lost while the queue has room.
Subscriptions to the topic are Event Grid's (declared in Azure), not ours.

Verified only against a local HTTP server that checks what the SDK sends (tests); no Azure
topic can be reached from here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from azure.core.credentials import AzureKeyCredential
from azure.eventgrid.aio import EventGridPublisherClient
from cloudevents.core.v1.event import CloudEvent

from .events import encode

__all__ = ["EventGridTransport"]


class EventGridTransport:
    """Publishes batches of events to one Event Grid topic (see module docstring)."""

    def __init__(self, endpoint: str, key: str | None = None, **client_options: Any) -> None:
        if not endpoint.startswith(("https://", "http://")):
            raise ValueError(f"event grid endpoint must be an http(s) URL, got {endpoint!r}")
        credential: Any
        if key:
            credential = AzureKeyCredential(key)
        else:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self._credential = credential
        self.endpoint = endpoint
        self.client = EventGridPublisherClient(endpoint, credential, **client_options)
        self.batches = 0

    async def send(self, events: Sequence[CloudEvent]) -> None:
        await self.client.send([json.loads(encode(event)) for event in events])
        self.batches += 1

    async def aclose(self) -> None:
        await self.client.close()
        close = getattr(self._credential, "close", None)
        if close is not None:
            await close()
