"""What the local OpenAI-compatible peer answers, and how: replies, rules, faults, chunks.

Sans-I/O: :class:`PeerScript` decides the reply to a chat request (a scripted reply
queued for the model, else the first matching rule, else the fallback) and which fault
to inject; :func:`stream_chunks` and :func:`completion` turn a reply into the JSON the
real API sends (``chat.completion.chunk`` objects, or one ``chat.completion``). The
server in ``app.py`` only moves these over HTTP and waits where a fault or the token
rate says so.

Rules match the *last* message of the request: a user message against ``match``, a
tool result (role ``tool``) against ``after_tool``, so a rule that calls a tool and the
rule that reads its result never loop. A reply may use ``{text}`` (the matched message)
and the pattern's named groups, in the reply text and in tool-call arguments.

Token counts in ``usage`` are estimates (about four characters per prompt token, one
per streamed piece), enough to check that usage flows through; the peer has no
tokenizer.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FaultKind",
    "PeerScript",
    "Reply",
    "Rule",
    "ToolCallReply",
    "completion",
    "load_script",
    "prompt_tokens",
    "split_tokens",
    "stream_chunks",
]

#: What can go wrong on purpose:
#:
#: * ``rate_limit``: HTTP 429 with ``retry-after`` (seconds) and the API's error body;
#: * ``server_error``: HTTP 500;
#: * ``hang``: headers are sent (200, ``text/event-stream``), then nothing until the
#:   client gives up (a stream) or ever (a plain request): an endpoint that hangs
#:   before its first token;
#: * ``malformed``: the first content chunk is followed by a line that is not JSON;
#: * ``empty``: the reply has no content and no tool call (``finish_reason`` stop).
FaultKind = Literal["rate_limit", "server_error", "hang", "malformed", "empty"]
FAULT_KINDS: tuple[FaultKind, ...] = ("rate_limit", "server_error", "hang", "malformed", "empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One injected failure (see :data:`FaultKind`)."""

    kind: FaultKind
    retry_after_s: float = 1.0  # rate_limit only


@dataclass(frozen=True, slots=True)
class ToolCallReply:
    """A tool call the model makes: the function name and its JSON arguments text."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Reply:
    """A model reply: text, or tool calls (the real API sends one or the other)."""

    text: str = ""
    tool_calls: tuple[ToolCallReply, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """A regex on the last message (``match``: a user message; ``after_tool``: a tool
    result) and what it answers: ``reply`` text, or a ``tool`` call with ``arguments``."""

    pattern: re.Pattern[str]
    on: Literal["user", "tool"] = "user"
    reply: str = ""
    tool: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def answer(self, text: str, match: re.Match[str]) -> Reply:
        values = {k: v or "" for k, v in match.groupdict().items()}
        values["text"] = text
        if self.tool:
            args = {k: _fill(v, values) if isinstance(v, str) else v for k, v in self.arguments.items()}
            return Reply(tool_calls=(ToolCallReply(self.tool, json.dumps(args)),))
        return Reply(text=_fill(self.reply, values))


@dataclass(slots=True)
class _Model:
    replies: deque[Reply] = field(default_factory=deque)
    faults: deque[Fault] = field(default_factory=deque)
    sticky: Fault | None = None  # every request, until cleared


class PeerScript:
    """The peer's behaviour: rules, queued replies and faults (per model or for any).

    Args:
        rules: tried in order against the last message.
        fallback: the reply when nothing matches; ``{text}`` is the last message.
        ttft_ms: time to first token of every reply (a model may override it).
        tokens_per_s: pace of the tokens after the first (0: as fast as possible).
    """

    def __init__(self, rules: Sequence[Rule] = (), *, fallback: str = "You said: {text}", ttft_ms: float = 0.0,
                 tokens_per_s: float = 0.0) -> None:
        self.rules = list(rules)
        self.fallback = fallback
        self.ttft_ms = ttft_ms
        self.tokens_per_s = tokens_per_s
        self.model_ttft_ms: dict[str, float] = {}
        self._models: dict[str, _Model] = {}  # "" holds what applies to any model

    def add_rule(self, pattern: str, reply: str = "", *, tool: str = "", arguments: Mapping[str, Any] | None = None,
                 on: Literal["user", "tool"] = "user") -> None:
        """Append a rule (``pattern`` is a case-insensitive regex)."""
        self.rules.append(Rule(pattern=re.compile(pattern, re.IGNORECASE), on=on, reply=reply, tool=tool,
                               arguments=dict(arguments or {})))

    def queue_reply(self, reply: Reply | str, *, model: str = "") -> None:
        """The next request (to ``model``, or any) gets ``reply``, whatever the rules say."""
        self._model(model).replies.append(Reply(text=reply) if isinstance(reply, str) else reply)

    def inject(self, fault: Fault, *, model: str = "", times: int | None = 1) -> None:
        """The next ``times`` requests (to ``model``, or any) fail with ``fault``;
        ``times=None``: every request until :meth:`clear_faults`."""
        entry = self._model(model)
        if times is None:
            entry.sticky = fault
        else:
            entry.faults.extend([fault] * times)

    def clear_faults(self, *, model: str = "") -> None:
        """Forget the faults waiting for ``model`` (or for any model)."""
        entry = self._model(model)
        entry.faults.clear()
        entry.sticky = None

    def take_fault(self, model: str) -> Fault | None:
        """The fault this request to ``model`` gets, if any (a per-model one first)."""
        for key in (model, ""):
            entry = self._models.get(key)
            if entry is None:
                continue
            if entry.faults:
                return entry.faults.popleft()
            if entry.sticky is not None:
                return entry.sticky
        return None

    def first_token_delay_s(self, model: str) -> float:
        return self.model_ttft_ms.get(model, self.ttft_ms) / 1000.0

    def token_delay_s(self) -> float:
        return 1.0 / self.tokens_per_s if self.tokens_per_s > 0 else 0.0

    def reply(self, model: str, messages: Sequence[Mapping[str, Any]], *, tools: Sequence[str] = ()) -> Reply:
        """What the model answers to ``messages`` when offered ``tools`` (a rule calling a
        tool that was not offered is passed over, as a real model cannot call it)."""
        for key in (model, ""):
            entry = self._models.get(key)
            if entry is not None and entry.replies:
                return entry.replies.popleft()
        last = messages[-1] if messages else {}
        role = "tool" if last.get("role") == "tool" else "user"
        text = _content_text(last.get("content"))
        for rule in self.rules:
            if rule.on != role or (rule.tool and rule.tool not in tools):
                continue
            match = rule.pattern.search(text)
            if match:
                return rule.answer(text, match)
        return Reply(text=_fill(self.fallback, {"text": text}))

    def _model(self, model: str) -> _Model:
        entry = self._models.get(model)
        if entry is None:
            entry = self._models[model] = _Model()
        return entry


def split_tokens(text: str) -> list[str]:
    """Word pieces with their leading space, as chat streams deliver them."""
    return re.findall(r"\s*\S+", text)


_ids = itertools.count(1)


def _chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None,
           *, usage: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                           "system_fingerprint": None,
                           "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage:
        out["usage"] = None  # every chunk but the last, as the API does with include_usage
    return out


def stream_chunks(reply: Reply, *, model: str, created: int, prompt_tokens: int,
                  include_usage: bool) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of ``reply``, in order (without ``[DONE]``).

    Text: a role chunk with empty content, one chunk per word piece, then an empty delta
    with ``finish_reason`` ``stop``. Tool calls: per call, a chunk opening it (index, id,
    type, name, empty arguments), then its arguments in pieces of a few characters;
    ``finish_reason`` ``tool_calls``. With ``include_usage``, a last chunk with no
    choices carries the usage.
    """
    cid = f"chatcmpl-peer{next(_ids)}"
    out = [_chunk(cid, created, model, {"role": "assistant", "content": "", "refusal": None}, usage=include_usage)]
    completion_tokens = 0
    for piece in split_tokens(reply.text):
        out.append(_chunk(cid, created, model, {"content": piece}, usage=include_usage))
        completion_tokens += 1
    for index, call in enumerate(reply.tool_calls):
        opening: dict[str, Any] = {"index": index, "id": f"call_peer{next(_ids)}", "type": "function",
                                   "function": {"name": call.name, "arguments": ""}}
        out.append(_chunk(cid, created, model, {"tool_calls": [opening]}, usage=include_usage))
        for start in range(0, len(call.arguments), 8):  # arguments arrive in fragments
            fragment: dict[str, Any] = {"index": index, "function": {"arguments": call.arguments[start:start + 8]}}
            out.append(_chunk(cid, created, model, {"tool_calls": [fragment]}, usage=include_usage))
            completion_tokens += 1
    finish = "tool_calls" if reply.tool_calls else "stop"
    out.append(_chunk(cid, created, model, {}, finish, usage=include_usage))
    if include_usage:
        out.append({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": None, "choices": [],
                    "usage": _usage(prompt_tokens, completion_tokens)})
    return out


def completion(reply: Reply, *, model: str, created: int, prompt_tokens: int) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` object of ``reply``."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text if not reply.tool_calls else None,
                               "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [{"id": f"call_peer{next(_ids)}", "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}} for c in reply.tool_calls]
    completion_tokens = len(split_tokens(reply.text)) + sum(len(c.arguments) // 8 + 1 for c in reply.tool_calls)
    return {"id": f"chatcmpl-peer{next(_ids)}", "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
            "usage": _usage(prompt_tokens, completion_tokens)}


def prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """About four characters per token, plus a few per message (role and framing)."""
    return sum(4 + len(_content_text(m.get("content"))) // 4 for m in messages)


def _usage(prompt: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens}


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def _fill(template: str, values: Mapping[str, str]) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError):
        return template


def load_script(path: str) -> PeerScript:
    """A :class:`PeerScript` from a YAML file (``voicegraph peer openai --script``)::

        ttft_ms: 300              # time to first token
        tokens_per_s: 40          # pace of the rest
        fallback: "You said: {text}"
        rules:
          - match: "\\\\bpolicy (?P<id>\\\\w+)"          # on the last user message
            tool: lookup_policy
            arguments: {policy_id: "{id}"}
          - after_tool: "\\"status\\": \\"(?P<s>\\\\w+)\\""  # on a tool result
            reply: "Your policy is {s}."
          - match: "\\\\bhours\\\\b"
            reply: "We are open from eight to eight."

    Errors are ``ConfigError``s naming the file, line and key.
    """
    from pipeline.config import load_yaml
    from pipeline.errors import ConfigError

    data = load_yaml(path)
    if data is None:
        return PeerScript()
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mapping with rules, fallback, ttft_ms, tokens_per_s", file=path)

    def line(where: Any, key: str) -> int | None:
        return getattr(where, "line_of", lambda _k: None)(key)

    known = {"rules", "fallback", "ttft_ms", "tokens_per_s"}
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key '{key}' (keys: {', '.join(sorted(known))})", file=path,
                              line=line(data, key))
    numbers: dict[str, float] = {}
    for key in ("ttft_ms", "tokens_per_s"):
        value = data.get(key, 0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 600_000:
            raise ConfigError(f"'{key}' must be a number 0..600000, got {value!r}", file=path, line=line(data, key))
        numbers[key] = float(value)
    fallback = data.get("fallback", "You said: {text}")
    if not isinstance(fallback, str):
        raise ConfigError("'fallback' must be a string", file=path, line=line(data, "fallback"))
    script = PeerScript(fallback=fallback, ttft_ms=numbers["ttft_ms"], tokens_per_s=numbers["tokens_per_s"])
    rules = data.get("rules") or []
    if not isinstance(rules, list):
        raise ConfigError("'rules' must be a list", file=path, line=line(data, "rules"))
    for i, raw in enumerate(rules):
        where = f"rules[{i}]"
        at = getattr(rules, "item_lines", [None] * len(rules))[i]
        if not isinstance(raw, Mapping) or ("match" in raw) == ("after_tool" in raw):
            raise ConfigError(f"{where}: needs exactly one of 'match' or 'after_tool'", file=path, line=at)
        extra = set(raw) - {"match", "after_tool", "reply", "tool", "arguments"}
        if extra:
            raise ConfigError(f"{where}: unknown key '{sorted(extra)[0]}'", file=path, line=at)
        pattern = raw.get("match", raw.get("after_tool"))
        reply, tool, arguments = raw.get("reply", ""), raw.get("tool", ""), raw.get("arguments", {})
        if not isinstance(reply, str) or not isinstance(tool, str) or not isinstance(arguments, Mapping):
            raise ConfigError(f"{where}: reply and tool must be strings, arguments a mapping", file=path, line=at)
        if bool(reply) == bool(tool):
            raise ConfigError(f"{where}: needs exactly one of 'reply' or 'tool'", file=path, line=at)
        try:
            script.add_rule(str(pattern), reply, tool=tool, arguments=dict(arguments),
                            on="user" if "match" in raw else "tool")
        except re.error as exc:
            raise ConfigError(f"{where}: /{pattern}/ is not a valid regular expression: {exc}", file=path,
                              line=at) from None
    return script
