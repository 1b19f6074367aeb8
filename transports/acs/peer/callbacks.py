"""The local ACS's webhook sender: signed callback CloudEvents, in order per call, with retries.

ACS posts each mid-call event to the call's callback URI as a JSON array of CloudEvents 1.0
(structured mode, ``application/json``), with ``Authorization: Bearer <JWT>``: an RS256
token signed by Call Automation for the resource's id, minted fresh for every request
(a retry gets a new one). :class:`CallbackPoster` does that with the peer's
:class:`~transports.acs.peer.signer.TokenSigner`:

- one event per request (ACS batches rarely; a receiver must take arrays of any length);
- the events of one call are delivered in the order they were queued: a call's next event
  waits until the previous one was delivered or given up (different calls do not wait on
  each other);
- a 5xx, 408 or 429 answer, a connection error or a timeout is retried after each of
  ``retry_delays`` seconds in turn, then given up (logged); any other answer (2xx, or a
  4xx: the receiver refused it) is final;
- every request is recorded in :attr:`CallbackPoster.deliveries` (the event, the status of
  each attempt, the token of the last attempt) for tests to assert on.

The aiohttp session is made on the first post (inside the running loop) and closed by
:meth:`CallbackPoster.aclose`, which also ends the senders still running.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from transports.acs.peer.signer import TokenSigner

__all__ = ["CALLBACK_TOKEN_LIFETIME_S", "CallbackPoster", "Delivery"]

logger = logging.getLogger(__name__)

#: A callback token lives five minutes, as ACS's do.
CALLBACK_TOKEN_LIFETIME_S = 300.0
#: Retried answers: the receiver is down or overloaded, not refusing.
RETRIED_STATUSES = frozenset({408, 429})


@dataclass(slots=True)
class Delivery:
    """One event's delivery: ``attempts`` holds an HTTP status or an error name per attempt."""

    call_connection_id: str
    url: str
    event: dict[str, Any]
    attempts: list[int | str] = field(default_factory=list)
    #: The ``Authorization`` header of the last attempt.
    authorization: str = ""

    @property
    def type(self) -> str:
        """The CloudEvent type without the ``Microsoft.Communication.`` prefix."""
        return str(self.event["type"]).rpartition(".")[2]

    @property
    def delivered(self) -> bool:
        """The last attempt got a 2xx."""
        return bool(self.attempts) and isinstance(self.attempts[-1], int) and 200 <= self.attempts[-1] < 300


class CallbackPoster:
    """Posts callback events (see module docstring); ``audience`` is the tokens' ``aud``."""

    def __init__(self, signer: TokenSigner, audience: str, *, retry_delays: tuple[float, ...] = (0.5, 2.0, 8.0),
                 timeout_s: float = 10.0) -> None:
        self.signer = signer
        self.audience = audience
        self.retry_delays = retry_delays
        self.timeout_s = timeout_s
        #: Every event queued, in the order queued; attempts fill in as they happen.
        self.deliveries: list[Delivery] = []
        self._queues: dict[str, deque[Delivery]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def post(self, call_connection_id: str, url: str, event: dict[str, Any]) -> Delivery:
        """Queue ``event`` for ``url`` behind the call's earlier events; returns its record."""
        delivery = Delivery(call_connection_id, url, event)
        self.deliveries.append(delivery)
        self._queues.setdefault(call_connection_id, deque()).append(delivery)
        if call_connection_id not in self._senders:
            self._senders[call_connection_id] = asyncio.create_task(
                self._send_all(call_connection_id), name=f"acs-peer-callbacks-{call_connection_id}")
        return delivery

    async def drain(self, call_connection_id: str | None = None) -> None:
        """Wait until the queued events (of one call, or all) were delivered or given up."""
        while True:
            senders = [task for cid, task in self._senders.items()
                       if call_connection_id is None or cid == call_connection_id]
            if not senders:
                return
            await asyncio.gather(*senders, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop sending (undelivered events stay recorded as they are) and close the session."""
        for task in self._senders.values():
            task.cancel()
        await asyncio.gather(*self._senders.values(), return_exceptions=True)
        self._senders.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _send_all(self, call_connection_id: str) -> None:
        queue = self._queues[call_connection_id]
        try:
            while queue:
                await self._deliver(queue[0])
                queue.popleft()
        finally:
            del self._senders[call_connection_id]
            if not queue:
                del self._queues[call_connection_id]

    async def _deliver(self, delivery: Delivery) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        body = json.dumps([delivery.event]).encode()
        for attempt, delay in enumerate((*self.retry_delays, None)):
            delivery.authorization = "Bearer " + self.signer.mint(self.audience, lifetime_s=CALLBACK_TOKEN_LIFETIME_S)
            headers = {"Authorization": delivery.authorization, "Content-Type": "application/json"}
            try:
                async with self._session.post(delivery.url, data=body, headers=headers) as response:
                    await response.read()
                    outcome: int | str = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = type(exc).__name__
            delivery.attempts.append(outcome)
            retry = isinstance(outcome, str) or outcome >= 500 or outcome in RETRIED_STATUSES
            if not retry:
                if isinstance(outcome, int) and outcome >= 300:
                    logger.warning("callback %s of call %s refused by %s: HTTP %s", delivery.type,
                                   delivery.call_connection_id, delivery.url, outcome)
                return
            if delay is None:
                logger.warning("callback %s of call %s given up after %d attempts (last: %s)", delivery.type,
                               delivery.call_connection_id, attempt + 1, outcome)
                return
            logger.info("callback %s of call %s: %s, retrying in %g s", delivery.type, delivery.call_connection_id,
                        outcome, delay)
            await asyncio.sleep(delay)
