"""``voicegraph sessions [CALL_ID]``: the live calls of every worker sharing ``REDIS_URL``.

Without an argument it prints one line per live session (oldest first): the call id, the
worker running it, the agent in charge, the latest turn, the caller, the pipeline and how
long ago it started; with a call id, that call's session fields and its live transcript,
and with ``--follow`` then the call's facts as they happen (a live view on Redis pub/sub:
the caller's and the bot's words, agent changes, slots, errors) until the call ends.
``--json`` prints the same as JSON (one fact per line when following). Live state is only shared through Redis: without
``REDIS_URL`` each worker keeps its calls to itself, and the command says so (exit 2).
Exit 1 when Redis cannot be reached or the call is unknown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from processors.sidecars.live import LiveState

__all__ = ["add_parser", "cmd_sessions"]


def add_parser(sub: Any) -> None:
    """Register ``sessions`` on the ``voicegraph`` subcommands."""
    p = sub.add_parser("sessions", help="list the live calls in Redis (REDIS_URL), or show one with its transcript")
    p.add_argument("call_id", nargs="?", metavar="CALL_ID", help="show this call's session and live transcript")
    p.add_argument("--follow", action="store_true", help="with CALL_ID: then print the call's facts as they happen, "
                                                        "until it ends (Ctrl-C to stop)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_sessions)


def cmd_sessions(args: argparse.Namespace) -> int:
    if not os.environ.get("REDIS_URL", "").strip():
        print("voicegraph sessions: REDIS_URL is not set; live sessions are shared between workers only through "
              "Redis (each worker without it keeps its calls in its own memory)", file=sys.stderr)
        return 2
    from processors.sidecars.live import live_state_from_env

    try:
        live = live_state_from_env()
    except ConfigError as exc:
        print(f"voicegraph sessions: {exc}", file=sys.stderr)
        return 2
    if args.follow and args.call_id is None:
        print("voicegraph sessions: --follow needs a CALL_ID", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(live, args.call_id, as_json=args.json, follow=args.follow))
    except KeyboardInterrupt:  # Ctrl-C while following: a normal way to stop
        return 0


async def _run(live: LiveState, call_id: str | None, *, as_json: bool, follow: bool = False) -> int:
    try:
        try:
            async with asyncio.timeout(5):
                await live.redis.ping()
        except Exception as exc:
            print(f"voicegraph sessions: cannot reach Redis at REDIS_URL ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
            return 1
        if call_id is None:
            sessions = await live.sessions()
            print(json.dumps(sessions, indent=2) if as_json else _table(sessions, time.time()))
            return 0
        async with contextlib.AsyncExitStack() as stack:
            # Subscribed before the snapshot is read: no fact falls between the two.
            view = await stack.enter_async_context(live.watch(call_id)) if follow else None
            session = await live.session(call_id)
            if not session:
                print(f"voicegraph sessions: no session for call {call_id!r} (unknown, or expired)", file=sys.stderr)
                return 1
            transcript = await live.transcript(call_id)
            if as_json:
                print(json.dumps({"session": session, "transcript": transcript}, indent=None if follow else 2))
            else:
                print(_detail(session, transcript))
            if view is None or session.get("state") != "live":
                return 0
            if not as_json:
                print(f"following call {call_id} (Ctrl-C to stop)", flush=True)
            shown = {int(line.get("seq", 0)) for line in transcript}
            async for fact in view:
                if fact.get("type") in ("TranscriptReceived", "AgentResponded") and fact.get("seq") in shown:
                    continue  # already in the transcript printed above
                print(json.dumps(fact) if as_json else _fact_line(fact), flush=True)
                if fact.get("type") == "CallEnded":
                    break
        return 0
    finally:
        await live.aclose()


def _fact_line(fact: dict[str, Any]) -> str:
    """One fact of a followed call, as a line for people."""
    kind = fact.get("type", "?")
    if kind == "TranscriptReceived":
        return f"  [{fact.get('turn', '?')}] caller: {fact.get('text', '')}"
    if kind == "AgentResponded":
        cut = " [interrupted]" if fact.get("interrupted") else ""
        return f"  [{fact.get('turn', '?')}] {fact.get('agent') or 'bot'}: {fact.get('heard_text', '')}{cut}"
    if kind == "AgentChanged":
        return f"-- agent: {fact.get('previous') or '(none)'} -> {fact.get('agent', '')} ({fact.get('reason', '')})"
    if kind == "StateChanged":
        slots = ", ".join(f"{k}={v}" for k, v in sorted(fact.get("slots", {}).items()))
        return f"-- {fact.get('agent', '')}: {slots or 'no slots'}"
    if kind == "ErrorOccurred":
        return f"-- error{' (fatal)' if fact.get('fatal') else ''}: {fact.get('source', '')}: {fact.get('message', '')}"
    if kind == "CallEnded":
        return f"-- call ended: {fact.get('reason', '')} after {float(fact.get('duration_ms', 0)) / 1000:.1f} s"
    return f"-- {kind}"


def _age(started: str, now: float) -> str:
    try:
        seconds = max(0, int(now - float(started)))
    except ValueError:
        return "-"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _table(sessions: list[dict[str, str]], now: float) -> str:
    if not sessions:
        return "no live sessions"
    header = ("CALL", "WORKER", "AGENT", "TURN", "CALLER", "PIPELINE", "AGE")
    rows = [header] + [(s.get("call_id", "?"), s.get("worker", ""), s.get("agent", ""), s.get("turn", "0"),
                        s.get("caller", ""), s.get("pipeline", ""), _age(s.get("started_at", ""), now))
                       for s in sessions]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _detail(session: dict[str, str], transcript: list[dict[str, str]]) -> str:
    lines = [f"{name}: {value}" for name, value in sorted(session.items())]
    lines.append("transcript:" if transcript else "transcript: (none in the last hour)")
    for line in transcript:
        who = "caller" if line.get("role") == "caller" else (line.get("agent") or "bot")
        cut = " [interrupted]" if line.get("interrupted") else ""
        lines.append(f"  [{line.get('turn', '?')}] {who}: {line.get('text', '')}{cut}")
    return "\n".join(lines)
