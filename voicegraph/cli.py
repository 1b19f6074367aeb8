"""The ``voicegraph`` command: validate, graph, call, serve."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import build_graph, load_pipeline
from pipeline.errors import ConfigError, VoicegraphError

from .paths import config_dir, pipeline_path

__all__ = ["main"]

DEFAULT_PIPELINE = "local"


def _yaml_files(paths: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        else:
            out.append(path)
    return out


def cmd_validate(args: argparse.Namespace) -> int:
    files = _yaml_files(args.paths or [str(config_dir() / "pipelines")])
    if not files:
        print("no YAML files found", file=sys.stderr)
        return 1
    failed = 0
    for path in files:
        try:
            spec = load_pipeline(path)
            graph = build_graph(spec)
        except ConfigError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        print(f"ok: {path} ({len(graph.nodes)} nodes, {len(graph.edges)} edges)")
    return 1 if failed else 0


def cmd_graph(args: argparse.Namespace) -> int:
    try:
        graph = build_graph(load_pipeline(pipeline_path(args.pipeline)))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = graph.to_mermaid()
    for path in graph.latency_budget():
        out += f"%% latency {' -> '.join(path.path)}: {path.min_ms:.0f}..{path.max_ms:.0f} ms\n"
    print(out, end="")
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    from .call import CallOptions, run_cli_call

    options = CallOptions(
        pipeline=pipeline_path(args.pipeline),
        say=tuple(args.say or ()),
        wav=args.wav,
        interrupt_after_ms=args.interrupt_after,
        timeout_s=args.timeout,
    )
    try:
        report = run_cli_call(options)
    except VoicegraphError as exc:  # bad config, a node that cannot start (missing WAV, model)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from .report import format_report

        print(format_report(report), end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app

    uvicorn.run(create_app(), host=args.host, port=args.port, loop="auto", log_level=args.log_level.lower())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicegraph", description="Real-time voice-agent engine.")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check pipeline YAML files (default: config/pipelines)")
    p.add_argument("paths", nargs="*", help="files or folders")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("graph", help="print a pipeline as a Mermaid flowchart with its latency budget")
    p.add_argument("pipeline", help="a pipeline name under config/pipelines or a path")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("call", help="run one call through a pipeline and print the conversation")
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE, help=f"name or path (default: {DEFAULT_PIPELINE})")
    p.add_argument("--say", action="append", metavar="TEXT", help="what the caller says (repeatable)")
    p.add_argument("--wav", type=Path, help="a WAV file the caller plays (speech pipelines)")
    p.add_argument("--interrupt-after", type=float, metavar="MS",
                   help="the caller talks over the bot this many ms after it starts speaking")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_call)

    p = sub.add_parser("serve", help="serve the ASGI app (health, readiness; transports later)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
