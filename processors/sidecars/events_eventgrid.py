"""Events to an Azure Event Grid topic, through the official async SDK.

:class:`EventGridTransport` publishes each batch with ``azure.eventgrid.aio.EventGridPublisherClient.send``
to a topic whose input schema is CloudEvents 1.0: the SDK POSTs the batch to the topic
endpoint (``https://<topic>.<region>-1.eventgrid.azure.net/api/events``) as
``application/cloudevents-batch+json``, with the key in ``aeg-sas-key`` (an
``AzureKeyCredential``) or an Entra ID token (``DefaultAzureCredential``, when no key is
given). The events are handed over in the CloudEvents JSON structured format (dicts), which
the SDK sends as they are.

Limits (Event Grid's): an event of more than 1 MB is refused, and so is a request of more
than 1 MB. A batch is split into requests under 1 MB; an event over 1 MB on its own (a huge
transcript or report) is dropped before sending, counted (``oversize``) and logged.

Errors: the SDK raises for any answer but 200 (``ClientAuthenticationError`` on 401,
``HttpResponseError`` otherwise, after its own retries of 408/429/5xx). A 400 or 413 (the
request itself is wrong: sending it again fails again) becomes
:class:`~processors.sidecars.events.RejectedEvents` and the bus drops the batch, counted;
anything else (auth refused, timeouts, 5xx) makes the bus send the batch again later, so
nothing accepted is lost while its queue has room.
Subscriptions to the topic are Event Grid's (declared in Azure), not ours.

Verified only against a local HTTP server that checks what the SDK sends (tests); no Azure
topic can be reached from here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.eventgrid.aio import EventGridPublisherClient
from cloudevents.core.v1.event import CloudEvent

from .events import RejectedEvents, encode

logger = logging.getLogger(__name__)

#: Event Grid's limit for one event and for one request's body, in bytes.
MAX_BYTES = 1_048_576

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
        self.batches = 0  # requests sent
        self.oversize = 0  # events over MAX_BYTES, dropped

    async def send(self, events: Sequence[CloudEvent]) -> None:
        request: list[dict[str, Any]] = []
        size = 2  # the brackets of the JSON array
        for event in events:
            body = encode(event)
            if len(body) + 2 > MAX_BYTES:
                self.oversize += 1
                logger.error("event %s (%s) is %d bytes, over Event Grid's 1 MB: dropped", event.get_id(),
                             event.get_type(), len(body))
                continue
            if request and size + len(body) + 1 > MAX_BYTES:
                await self._post(request)
                request, size = [], 2
            request.append(json.loads(body))
            size += len(body) + 1
        if request:
            await self._post(request)

    async def _post(self, request: list[dict[str, Any]]) -> None:
        try:
            await self.client.send(request)
        except HttpResponseError as exc:
            if exc.status_code in (400, 413):
                raise RejectedEvents(f"HTTP {exc.status_code}: {exc.message}") from exc
            raise
        self.batches += 1

    async def aclose(self) -> None:
        await self.client.close()
        close = getattr(self._credential, "close", None)
        if close is not None:
            await close()
