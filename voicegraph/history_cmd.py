"""``voicegraph history CALL_ID``: print a stored call record.

The store is the one the workers write to, chosen by the same environment
(:func:`processors.sidecars.history.history_from_env`: ``COSMOS_ENDPOINT`` +
``COSMOS_KEY``, else the SQLite file at ``VOICEGRAPH_HISTORY_PATH``, default
``./.voicegraph/history.db``). The record is the call's document with its transcript in
order: as text (default) or as JSON (``--json``). Exit codes: 0 printed; 1 no such call,
or the store cannot answer (the message says which); 2 a bad environment value.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from pipeline.errors import ConfigError

__all__ = ["add_history_parser", "cmd_history", "format_record"]


def add_history_parser(sub: Any) -> None:
    """Add ``history`` to the ``voicegraph`` subcommands."""
    p = sub.add_parser("history", help="print a stored call record (SQLite by default; Cosmos DB when "
                                       "COSMOS_ENDPOINT is set)")
    p.add_argument("call_id", metavar="CALL_ID", help="the call's id (as `voicegraph call` and the logs print it)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(func=cmd_history)


def cmd_history(args: argparse.Namespace) -> int:
    """Run ``voicegraph history``."""
    from processors.sidecars.history import HistoryUnavailable, history_from_env

    try:
        history = history_from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    path = getattr(history.backend, "path", None)
    if path is not None and not path.exists():  # reading must not create an empty database
        print(f"error: no history at {path} (VOICEGRAPH_HISTORY_PATH); no call has been stored there",
              file=sys.stderr)
        return 1

    async def read() -> dict[str, Any] | None:
        try:
            await history.backend.open()
            return await history.call_record(args.call_id)
        finally:
            await history.backend.aclose()

    where = _where(history.backend)
    try:
        record = asyncio.run(read())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except HistoryUnavailable as exc:
        print(f"error: the history store cannot answer: {exc}", file=sys.stderr)
        return 1
    if record is None:
        print(f"error: no call {args.call_id!r} in the history ({where})", file=sys.stderr)
        return 1
    print(json.dumps(record, indent=2, ensure_ascii=False) if args.json else format_record(record))
    return 0


def _where(backend: Any) -> str:
    path = getattr(backend, "path", None)
    if path is not None:
        return f"{backend.name} {path}"
    return f"{backend.name} {getattr(backend, 'endpoint', '')} database {getattr(backend, 'database', '')}"


def format_record(record: dict[str, Any]) -> str:
    """A call record as text: the call, then its transcript line by line."""
    lines = []
    duration = record.get("duration_ms")
    head = f"call {record['call_id']}  {record.get('status', '?')}"
    if record.get("reason"):
        head += f" ({record['reason']})"
    if duration is not None:
        head += f"  {duration / 1000:.1f} s, {record.get('turns', 0)} turns"
    lines.append(head)
    meta = "  ".join(f"{k} {record[k]}" for k in ("caller", "callee", "pipeline", "scenario", "transport", "worker")
                     if record.get(k))
    if meta:
        lines.append(f"  {meta}")
    if record.get("started"):
        lines.append(f"  started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(record['started']))}")
    if record.get("agents"):
        lines.append(f"  agents {' -> '.join(record['agents'])}")
    for line in record.get("transcript", []):
        stamp = f"[{line.get('at_ms', 0) / 1000:7.1f} s]"
        if line.get("role") == "caller":
            lines.append(f"  {stamp} caller: {line.get('text', '')}")
            continue
        about = [x for x in (line.get("agent"), line.get("model")) if x]
        first = (line.get("latency_ms") or {}).get("first_audio_out")
        if first is not None:
            about.append(f"{first:.0f} ms")
        who = f"bot ({', '.join(about)})" if about else "bot"
        text = line.get("text", "")
        if line.get("interrupted"):
            text += f"  [interrupted; heard: {line.get('heard_text', '')!r}]"
        lines.append(f"  {stamp} {who}: {text}")
        for call in line.get("tool_calls") or []:
            outcome = call.get("error", call.get("result"))
            lines.append(f"             tool {call.get('name')}({json.dumps(call.get('arguments'))}) -> "
                         f"{json.dumps(outcome, ensure_ascii=False)}")
    for error in record.get("errors") or []:
        lines.append(f"  error {error.get('source')}: {error.get('message')}{' (fatal)' if error.get('fatal') else ''}")
    return "\n".join(lines)
