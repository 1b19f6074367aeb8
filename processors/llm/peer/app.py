"""The local OpenAI-compatible server: chat completions as the real API serves them.

``voicegraph peer openai --port P`` serves :class:`OpenAIPeer`'s application, and tests
and ``perf/`` run it in-process on port 0; both are used through the official ``openai``
SDK (``AsyncOpenAI`` and ``AsyncAzureOpenAI``), never through a client of our own.

Routes:

- ``POST /v1/chat/completions``: the OpenAI shape, ``Authorization: Bearer <key>``.
- ``POST /openai/deployments/{deployment}/chat/completions?api-version=V``: the Azure
  OpenAI shape; the deployment names the model; ``api-key: <key>`` or an Entra ID
  ``Authorization: Bearer <token>``; a missing ``api-version`` is a 404, as on Azure.
- ``POST /peer/faults {"kind", "model"?, "times"?, "retry_after_s"?}``: inject a fault
  from another process (``times: null``: every request until ``DELETE /peer/faults``).
- ``GET /peer/requests``: what was asked and how each request ended.

Both chat routes answer ``stream: true`` with server-sent events (``data: {chunk}``
blocks, then ``data: [DONE]``; usage in a last chunk when
``stream_options.include_usage``), and plain requests with one ``chat.completion``.
What is answered comes from the :class:`~processors.llm.peer.script.PeerScript`.

Every well-formed, authorised chat request is recorded (:class:`PeerRequest`) with how it
ended: ``completed``, ``disconnected`` (the client closed the connection before the end:
a barge-in, a first-token timeout), or ``fault:<kind>``; a refused one (400, 401, 404)
is only answered, with the API's error body. A stream's disconnect is
seen while it waits (a hang, the pause before the first token), not only when a write
fails, because the response listens for ``http.disconnect`` all along.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .script import FAULT_KINDS, Fault, PeerScript, Reply, completion, prompt_tokens, stream_chunks

__all__ = ["OpenAIPeer", "PeerRequest"]

logger = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024  # a long conversation with tools is tens of kB


@dataclass(slots=True)
class PeerRequest:
    """One chat request as the peer saw it."""

    path: str
    model: str
    messages: list[dict[str, Any]]
    tools: list[str]  # names of the functions offered
    stream: bool
    auth: str  # "bearer" or "api-key"
    status: int = 200
    outcome: str = "pending"  # completed | disconnected | fault:<kind>
    chunks_sent: int = 0
    arrived: float = field(default_factory=time.monotonic)


class OpenAIPeer:
    """The server (``app``) and what it recorded (``requests``).

    Args:
        script: what it answers (default: echo the last message).
        api_key: the key clients must present (``Bearer`` on ``/v1``, ``api-key`` on the
            Azure path); None accepts any non-empty one.
        entra_tokens: bearer tokens accepted on the Azure path instead of a key (what
            an Entra ID token provider hands the SDK); None accepts any non-empty one.
    """

    def __init__(self, script: PeerScript | None = None, *, api_key: str | None = None,
                 entra_tokens: frozenset[str] | None = None) -> None:
        self.script = script or PeerScript()
        self.api_key = api_key
        self.entra_tokens = entra_tokens
        self.requests: list[PeerRequest] = []
        self._changed = asyncio.Condition()
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._openai, methods=["POST"]),
            Route("/openai/deployments/{deployment}/chat/completions", self._azure, methods=["POST"]),
            Route("/peer/faults", self._faults, methods=["POST", "DELETE"]),
            Route("/peer/requests", self._list, methods=["GET"]),
        ])

    async def wait_for(self, predicate: Callable[[OpenAIPeer], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate(self)`` holds (checked at every change of a request)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    def outcomes(self) -> list[str]:
        """How each request ended, in arrival order."""
        return [r.outcome for r in self.requests]

    async def _set(self, record: PeerRequest, outcome: str, status: int | None = None) -> None:
        async with self._changed:
            record.outcome = outcome
            if status is not None:
                record.status = status
            self._changed.notify_all()

    # --- routes ---------------------------------------------------------------------------

    async def _openai(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token or (self.api_key is not None and token != self.api_key):
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return await self._chat(request, None, "bearer")

    async def _azure(self, request: Request) -> Response:
        if not request.query_params.get("api-version"):
            return _error(404, "Resource not found", "invalid_request_error", "404")
        key = request.headers.get("api-key")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if key is not None:
            ok, auth = bool(key) and (self.api_key is None or key == self.api_key), "api-key"
        else:
            accepted = self.entra_tokens is None or token in self.entra_tokens
            ok = scheme.lower() == "bearer" and bool(token) and accepted
            auth = "bearer"
        if not ok:
            return _error(401, "Access denied due to invalid subscription key or wrong API endpoint.",
                          "invalid_request_error", "401")
        return await self._chat(request, request.path_params["deployment"], auth)

    async def _chat(self, request: Request, deployment: str | None, auth: str) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        problem = _check(body, need_model=deployment is None)
        if problem:
            return _error(400, problem[1], "invalid_request_error", None, param=problem[0])
        model = deployment or str(body["model"])
        stream = bool(body.get("stream"))
        tools = [str(t.get("function", {}).get("name", "")) for t in body.get("tools") or [] if isinstance(t, dict)]
        record = PeerRequest(request.url.path, model, list(body["messages"]), tools, stream, auth)
        async with self._changed:
            self.requests.append(record)
            self._changed.notify_all()
        fault = self.script.take_fault(model)
        if fault is not None and fault.kind == "rate_limit":
            await self._set(record, "fault:rate_limit", 429)
            return _error(429, f"Rate limit reached for {model}. Please retry after {fault.retry_after_s:g} seconds.",
                          "requests", "rate_limit_exceeded",
                          headers={"retry-after": f"{fault.retry_after_s:g}",
                                   "retry-after-ms": str(int(fault.retry_after_s * 1000))})
        if fault is not None and fault.kind == "server_error":
            await self._set(record, "fault:server_error", 500)
            return _error(500, "The server had an error while processing your request.", "server_error", None)
        if fault is not None and fault.kind == "empty":
            reply = Reply()
        else:
            reply = self.script.reply(model, record.messages, tools=tools)
        created = int(time.time())
        tokens = prompt_tokens(record.messages)
        if not stream:
            if fault is not None and fault.kind == "hang":
                return _Hang(self, record)  # type: ignore[return-value]
            await asyncio.sleep(self.script.first_token_delay_s(model))
            await self._set(record, f"fault:{fault.kind}" if fault else "completed")
            return JSONResponse(completion(reply, model=model, created=created, prompt_tokens=tokens))
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        chunks = stream_chunks(reply, model=model, created=created, prompt_tokens=tokens, include_usage=usage)
        return _EventStream(self, record, chunks, fault)  # type: ignore[return-value]

    async def _faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.script.clear_faults(model=request.query_params.get("model", ""))
            return Response(status_code=204)
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        kind, model, times = body.get("kind"), body.get("model", ""), body.get("times", 1)
        retry = body.get("retry_after_s", 1.0)
        if kind not in FAULT_KINDS:
            return _error(400, f"kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r:.40}",
                          "invalid_request_error", None, param="kind")
        if not isinstance(model, str) or not (times is None or (isinstance(times, int) and times >= 1)):
            return _error(400, "model must be a string and times a positive integer or null",
                          "invalid_request_error", None)
        if not isinstance(retry, (int, float)) or isinstance(retry, bool) or not 0 <= retry <= 3600:
            return _error(400, "retry_after_s must be a number of seconds 0..3600", "invalid_request_error", None)
        self.script.inject(Fault(kind=kind, retry_after_s=float(retry)), model=model, times=times)
        return JSONResponse({"injected": kind, "model": model, "times": times})

    async def _list(self, request: Request) -> Response:
        return JSONResponse([{"path": r.path, "model": r.model, "stream": r.stream, "status": r.status,
                              "outcome": r.outcome, "chunks_sent": r.chunks_sent, "messages": len(r.messages)}
                             for r in self.requests])


class _EventStream:
    """An SSE response that also listens for the client going away (see module docstring)."""

    def __init__(self, peer: OpenAIPeer, record: PeerRequest, chunks: list[dict[str, Any]],
                 fault: Fault | None) -> None:
        self.peer, self.record, self.chunks, self.fault = peer, record, chunks, fault

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8"),
                                (b"cache-control", b"no-cache"), (b"x-request-id", b"req_peer")]})
        producer = asyncio.ensure_future(self._produce(send))
        listener = asyncio.ensure_future(_disconnected(receive))
        await asyncio.wait((producer, listener), return_when=asyncio.FIRST_COMPLETED)
        if producer.done():
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            if producer.exception() is not None:  # the socket went away mid-write
                await self.peer._set(self.record, "disconnected")
            return
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        await self.peer._set(self.record, "disconnected")

    async def _produce(self, send: Send) -> None:
        script, record, fault = self.peer.script, self.record, self.fault
        if fault is not None and fault.kind == "hang":
            await self.peer._set(record, "fault:hang")
            await asyncio.Event().wait()  # until the client gives up
        first = script.first_token_delay_s(record.model)
        if first:
            await asyncio.sleep(first)
        pace = script.token_delay_s()
        for i, chunk in enumerate(self.chunks):
            if i > 1 and pace:
                await asyncio.sleep(pace)
            await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                        "more_body": True})
            record.chunks_sent += 1
            if i == 1 and fault is not None and fault.kind == "malformed":
                await send({"type": "http.response.body", "body": b'data: {"id": "chatcmpl-broken", "choices": [\n\n',
                            "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        await self.peer._set(record, f"fault:{fault.kind}" if fault else "completed")


class _Hang:
    """A plain (non-streaming) request that never gets its answer."""

    def __init__(self, peer: OpenAIPeer, record: PeerRequest) -> None:
        self.peer, self.record = peer, record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.peer._set(self.record, "fault:hang")
        await _disconnected(receive)
        await self.peer._set(self.record, "disconnected")


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _json_body(request: Request) -> dict[str, Any] | Response:
    raw = b""
    async for piece in request.stream():
        raw += piece
        if len(raw) > MAX_BODY:
            return _error(413, f"request body over {MAX_BODY} bytes", "invalid_request_error", None)
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return _error(400, f"We could not parse the JSON body of your request: {exc}", "invalid_request_error", None)
    if not isinstance(body, dict):
        return _error(400, "the request body must be a JSON object", "invalid_request_error", None)
    return body


def _check(body: Mapping[str, Any], *, need_model: bool) -> tuple[str, str] | None:
    """(param, message) of the first thing wrong with a chat request, or None."""
    if need_model and (not isinstance(body.get("model"), str) or not body["model"]):
        return "model", "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages", "'messages' must be a non-empty array"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            return f"messages[{i}]", f"messages[{i}] must be an object with a valid role"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream", "'stream' must be a boolean"
    if "tools" in body and not isinstance(body["tools"], list):
        return "tools", "'tools' must be an array"
    return None


def _error(status: int, message: str, kind: str, code: str | None, *, param: str | None = None,
           headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error in the API's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=dict(headers or {}))
