"""The local ACS's Event Grid: the subscription handshake and ``IncomingCall`` deliveries.

ACS tells an application about a ringing call through an Event Grid subscription with a
webhook endpoint. :class:`EventGridSender` delivers to such an endpoint as Event Grid does:

- :meth:`EventGridSender.validate`: the handshake Event Grid makes when the subscription is
  created: a ``Microsoft.EventGrid.SubscriptionValidationEvent`` (header
  ``aeg-event-type: SubscriptionValidation``) whose ``data.validationCode`` the endpoint
  must echo as ``{"validationResponse": code}`` with a 200. Anything else raises
  :class:`SubscriptionRefused`. (The ``validationUrl`` it carries, for the manual
  handshake, is not served: the endpoint must echo the code.)
- :meth:`EventGridSender.incoming_call`: a ``Microsoft.Communication.IncomingCall`` event
  (``aeg-event-type: Notification``) for a call the switchboard rang (``Switchboard.ring``),
  so its ``incomingCallContext`` is one the peer's answer endpoint accepts, once.

Both are Event Grid schema arrays of one event (id, topic, subject, data, eventType,
eventTime, metadataVersion, dataVersion), the shape of the public examples in
"Azure Communication Services - Voice and video calling events" (subject
``/caller/<rawId>/recipient/<rawId>``; data ``to``, ``from``, ``callerDisplayName``,
``incomingCallContext``, ``correlationId``, ``serverCallId``, checked against the
``AcsIncomingCallEventData`` reference). One attempt each: Event Grid's own retries run
over minutes, longer than a call rings; the status is returned for the caller to judge.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from transports.acs.peer.switchboard import Ringing

__all__ = ["DEFAULT_TOPIC", "EventGridSender", "SubscriptionRefused", "Sent"]

DEFAULT_TOPIC = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/voicegraph-local/providers/"
                 "Microsoft.Communication/CommunicationServices/voicegraph-peer")
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
INCOMING_CALL_EVENT = "Microsoft.Communication.IncomingCall"


class SubscriptionRefused(Exception):
    """The endpoint did not complete the validation handshake; the message says how."""


@dataclass(frozen=True, slots=True)
class Sent:
    """One delivery: the events posted and what came back."""

    url: str
    events: list[dict[str, Any]]
    status: int
    body: Any


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class EventGridSender:
    """Delivers Event Grid events to a webhook (see module docstring); ``sent`` records them."""

    def __init__(self, *, topic: str = DEFAULT_TOPIC, subscription: str = "voicegraph-local",
                 timeout_s: float = 10.0) -> None:
        self.topic = topic
        self.subscription = subscription
        self.timeout_s = timeout_s
        self.sent: list[Sent] = []

    def validation_event(self, code: str) -> dict[str, Any]:
        """The ``SubscriptionValidationEvent`` carrying ``code``."""
        return {"id": str(uuid.uuid4()), "topic": self.topic, "subject": "",
                "data": {"validationCode": code,
                         "validationUrl": f"https://rp-local.eventgrid.azure.net/eventsubscriptions/"
                                          f"{self.subscription}/validate?id={code}"},
                "eventType": VALIDATION_EVENT, "eventTime": _now(), "metadataVersion": "1", "dataVersion": "2"}

    def incoming_call_event(self, ringing: Ringing) -> dict[str, Any]:
        """The ``IncomingCall`` event of a rung call."""
        return {"id": str(uuid.uuid4()), "topic": self.topic,
                "subject": f"/caller/{ringing.caller}/recipient/{ringing.callee}",
                "data": ringing.event_data(), "eventType": INCOMING_CALL_EVENT, "eventTime": _now(),
                "metadataVersion": "1", "dataVersion": "1.0"}

    async def validate(self, url: str) -> str:
        """Make the handshake with the endpoint at ``url``; returns the code it echoed."""
        code = str(uuid.uuid4())
        sent = await self._deliver(url, self.validation_event(code), "SubscriptionValidation")
        if sent.status != 200:
            raise SubscriptionRefused(f"{url} answered the validation event with HTTP {sent.status}")
        echoed = sent.body.get("validationResponse") if isinstance(sent.body, dict) else None
        if echoed != code:
            raise SubscriptionRefused(f"{url} did not echo the validation code: expected "
                                      f'{{"validationResponse": "{code}"}}, got {json.dumps(sent.body)[:200]}')
        return code

    async def incoming_call(self, url: str, ringing: Ringing) -> Sent:
        """Deliver the ``IncomingCall`` of ``ringing`` to ``url``; what came back."""
        return await self._deliver(url, self.incoming_call_event(ringing), "Notification")

    async def _deliver(self, url: str, event: dict[str, Any], kind: str) -> Sent:
        headers = {"Content-Type": "application/json", "aeg-event-type": kind,
                   "aeg-subscription-name": self.subscription.upper(), "aeg-delivery-count": "0",
                   "aeg-data-version": str(event["dataVersion"]), "aeg-metadata-version": "1"}
        events = [event]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session, \
                session.post(url, data=json.dumps(events).encode(), headers=headers) as response:
            text = await response.text()
            try:
                body: Any = json.loads(text) if text else None
            except json.JSONDecodeError:
                body = text
            sent = Sent(url, events, response.status, body)
        self.sent.append(sent)
        return sent
