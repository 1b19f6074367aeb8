"""The ``voicegraph`` command: validate, graph, nodes, call, replay, serve, dial, sessions, history,
peer acs|openai.

Exit codes: 0 success; 1 the work failed (invalid pipeline files, a call that ended with
errors); 2 the command line was wrong (a bad flag value, an unknown node type or
pipeline, options the pipeline cannot honour). Every flag is checked when it is parsed,
with a message naming it; no bad input ends in a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import build_graph, load_pipeline
from pipeline.errors import ConfigError, VoicegraphError

from . import sessions
from .history_cmd import add_history_parser
from .paths import pipeline_path, pipelines_dir

if TYPE_CHECKING:
    from .agent_checks import AgentFolders

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

DEFAULT_PIPELINE = "local"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_TIMEOUT_S = 86_400.0  # a day: longer is a typo, and the call clock counts in int ns
MAX_INTERRUPT_MS = 3_600_000.0
MODELS_FILES = ("models.yaml", "models.yml")  # checked as model routes, not as pipelines


# --- flag types: each refuses bad values with a message argparse prints (exit 2) -------------


def _number(what: str, *, low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """A finite float in [low, high] (or (low, high] when ``low_open``)."""
    bound = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"must be {what} {bound}, got {text!r}")
        return value

    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port 1..65535, got {value}")
    return value


def _line(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a line to say cannot be blank")
    return text


def _caller_id(text: str) -> str:
    if not text.strip() or len(text) > 256 or not text.isprintable():
        raise argparse.ArgumentTypeError("a caller id is 1-256 printable characters (a phone number, a name)")
    return text


def _wav(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: {'is a folder' if path.is_dir() else 'no such file'}")
    return path


# --- commands --------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from .agent_checks import AgentFolders, kind_of

    defaults = [pipelines_dir()]
    defaults += [folder for folder in (pipelines_dir().parent / "agents", pipelines_dir().parent / "scenarios")
                 if folder.is_dir()]
    files, failed = _yaml_files(args.paths or [str(p) for p in defaults])
    models = pipelines_dir().parent / "models.yaml"
    if not args.paths and models.is_file():
        files.append(models)
    folders = AgentFolders()
    for path in files:
        if path.name in MODELS_FILES:
            failed += _validate_models(path)
            continue
        if kind_of(path) != "pipeline":
            failed += _validate_agent_file(path, folders)
            continue
        warnings: list[str] = []
        try:
            graph = build_graph(load_pipeline(path, warn=warnings.append))
        except ConfigError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # a bug in a node or plugin: report it, check the other files
            failed += 1
            logger.debug("validating %s", path, exc_info=True)
            print(f"error: {path}: unexpected {type(exc).__name__} while checking it: {exc}", file=sys.stderr)
            continue
        finally:
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr)
        print(f"ok: {path} ({len(graph.nodes)} nodes, {len(graph.edges)} edges)")
    return 1 if failed else 0


def _validate_agent_file(path: Path, folders: AgentFolders) -> int:
    """Check an agent or scenario file (:mod:`voicegraph.agent_checks`); 1 if it is invalid."""
    from .agent_checks import check_agent, check_scenario, kind_of

    check = check_agent if kind_of(path) == "agent" else check_scenario
    try:
        print(check(path, folders))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _validate_models(path: Path) -> int:
    """Check a models file (routes, deployments, rules); 1 if it is invalid."""
    from processors.llm.router import load_models

    try:
        config = load_models(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"ok: {path} ({len(config.routes)} routes, {len(config.deployments)} deployments, "
          f"{len(config.rules)} rules)")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    try:
        path = pipeline_path(args.pipeline)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        graph = build_graph(load_pipeline(path))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = graph.to_mermaid()
    for budget in graph.latency_budget():
        out += f"%% latency {' -> '.join(budget.path)}: {budget.min_ms:.0f}..{budget.max_ms:.0f} ms\n"
    print(out, end="")
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    from pipeline.registry import default_registry

    from .nodes import node_reference

    try:
        text, errors = node_reference(default_registry, args.types)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


def cmd_call(args: argparse.Namespace) -> int:
    from .call import CallOptionError, CallOptions, run_cli_call

    problem = _call_conflict(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        path = pipeline_path(_call_pipeline(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = CallOptions(
        pipeline=path,
        say=tuple(args.text or args.say or ()),
        wav=args.wav,
        interrupt_after_ms=args.interrupt_after,
        timeout_s=args.timeout,
        via=args.via,
        scenario=args.scenario,
        typed=bool(args.text),
        caller=args.caller or "",
    )
    try:
        report = run_cli_call(options)
    except CallOptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except VoicegraphError as exc:  # bad config, a node that cannot start (missing WAV, model)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_report(report, as_json=args.json)
    _print_wire(report, as_json=args.json)
    for error in report["errors"]:
        print(f"error: {error}", file=sys.stderr)
    return 1 if report["errors"] else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import run_replay

    try:
        report = run_replay(args.recording, pipeline_path(args.pipeline), timeout_s=args.timeout)
    except ConfigError as exc:  # not a recording, not a speech pipeline, a pipeline that does not load
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except VoicegraphError as exc:  # a node that cannot start
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_report(report, as_json=args.json)
    for error in report["errors"]:
        print(f"error: {error}", file=sys.stderr)
    return 1 if report["errors"] else 0


def _call_conflict(args: argparse.Namespace) -> str:
    """Why the flags of ``call`` cannot go together, or ""."""
    if args.text and args.say:
        return "--text (typed lines) and --say (spoken lines) cannot be combined"
    if args.text and (args.wav is not None or args.interrupt_after is not None):
        return "--text lines are typed: --wav and --interrupt-after need a spoken call (--say)"
    if args.scenario is not None and args.via == "acs" and args.text:
        return "--via acs places a spoken call: give the caller's lines with --say (or none: the scenario's demo)"
    return ""


def _call_pipeline(args: argparse.Namespace) -> str:
    """The pipeline of ``call``: as given, else (module :mod:`voicegraph.call`'s docstring)
    ``scenario``/``scenario_text`` for a scenario, ``local``/``text`` without one."""
    typed = bool(args.text)
    if args.scenario is not None:
        if args.pipeline is None:
            return "scenario_text" if typed else "scenario"
        return "scenario_text" if args.pipeline == "text" else str(args.pipeline)
    if args.pipeline is None:
        return "text" if typed else DEFAULT_PIPELINE
    return str(args.pipeline)


def _print_report(report: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    from .report import format_report

    out = format_report(report)
    if report["errors"]:
        out += f"\nerrors (the call ended: {report['ended']})\n" + "".join(f"  {e}\n" for e in report["errors"])
    print(out, end="")


def _print_wire(report: dict[str, Any], *, as_json: bool) -> None:
    """The caller's side of a call placed over ACS (``--via acs``), after the report."""
    if report.get("via") == "acs" and not as_json:
        from .acs_call import format_wire

        print(format_wire(report), end="")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app

    try:
        app = create_app()
    except ConfigError as exc:  # a bad environment value (REDIS_URL, ...): one line, before serving
        print(f"voicegraph serve: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, loop="auto", log_level=args.log_level.lower())
    return 0


def _server(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"expected an http(s) base URL like http://127.0.0.1:8000, got {text!r}")
    return text.rstrip("/")


def cmd_dial(args: argparse.Namespace) -> int:
    """POST /acs/calls on a running server; prints the call connection id."""
    from transports.acs.control import API_KEY_ENV, ControlError, parse_phone_number, parse_target

    try:  # checked here too, so a typo never costs a round trip
        parse_target(args.target)
        if args.source is not None:
            parse_phone_number(args.source)
    except ControlError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    key = os.environ.get(API_KEY_ENV, "")
    if not key:
        print(f"error: {API_KEY_ENV} is not set (the server's API key for call actions)", file=sys.stderr)
        return 2
    body = {"target": args.target, "pipeline": args.pipeline}
    if args.source is not None:
        body["source"] = args.source
    request = urllib.request.Request(f"{args.server}/acs/calls", data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            call_id = json.loads(response.read()).get("callConnectionId")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        print(f"error: the server refused the call: HTTP {exc.code}: {message}", file=sys.stderr)
        return 2 if exc.code == 400 else 1
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        print(f"error: cannot reach the server at {args.server}: {reason}", file=sys.stderr)
        return 1
    except ValueError:
        print(f"error: the server at {args.server} did not answer with JSON", file=sys.stderr)
        return 1
    if not isinstance(call_id, str) or not call_id:
        print(f"error: the server at {args.server} answered without a call connection id", file=sys.stderr)
        return 1
    print(call_id)
    return 0


def _access_key(text: str) -> str:
    import base64
    import binascii

    try:
        if base64.b64decode(text, validate=True):
            return text
    except binascii.Error:
        pass
    raise argparse.ArgumentTypeError("must be a base64 access key, as in an ACS connection string")


def _resource_id(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"must be a resource id without spaces, got {text!r}")
    return text


def _speech_key(text: str) -> str:
    if len(text) < 8 or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError("must be at least 8 characters without spaces")
    return text


def cmd_peer_acs(args: argparse.Namespace) -> int:
    """Serve the local ACS (Call Automation REST, OpenID/JWKS, /peer control routes)."""
    import base64
    import secrets

    import uvicorn

    from transports.acs.peer.app import create_peer, env_lines

    key = args.key or base64.b64encode(secrets.token_bytes(32)).decode()
    peer = create_peer(key, resource_id=args.resource_id)
    base = f"http://{args.host}:{args.port}"
    print(f"# the local ACS, at {base}; point `voicegraph serve` at it with:")
    print("\n".join(env_lines(base, peer, key)))
    print(f"# then validate and ring (VOICEGRAPH_PUBLIC_URL must be the server's URL):\n"
          f"#   curl -X POST {base}/peer/subscribe -d '{{\"events_url\": \"http://127.0.0.1:8000/acs/events\"}}'\n"
          f"#   curl -X POST {base}/peer/ring -d '{{\"events_url\": \"http://127.0.0.1:8000/acs/events\"}}'",
          flush=True)
    uvicorn.run(peer.app, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0


def cmd_peer_openai(args: argparse.Namespace) -> int:
    """Serve the local OpenAI-compatible chat completions server."""
    import uvicorn

    from processors.llm.peer import OpenAIPeer, PeerScript, load_script

    try:
        script = load_script(args.script) if args.script else PeerScript()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.ttft_ms is not None:
        script.ttft_ms = args.ttft_ms
    if args.tokens_per_s is not None:
        script.tokens_per_s = args.tokens_per_s
    peer = OpenAIPeer(script, api_key=args.api_key)
    base = f"http://{args.host}:{args.port}"
    print(f"# the local OpenAI-compatible server, at {base}; point the LLM brain at it with:\n"
          f"export OPENAI_BASE_URL={base}/v1\nexport OPENAI_API_KEY={args.api_key or 'any'}\n"
          f"# Azure OpenAI shape: AZURE_OPENAI_ENDPOINT={base} with any api-key; faults: POST {base}/peer/faults",
          flush=True)
    uvicorn.run(peer.app, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0


def cmd_peer_speech(args: argparse.Namespace) -> int:
    """Serve the local Azure AI Speech service (recognition and synthesis over the SDK's WebSocket)."""
    import uvicorn

    from processors.azure_speech.peer.app import PeerSettings, SpeechPeer

    settings = PeerSettings(stt_engine=args.stt_engine, first_hypothesis_ms=round(args.first_hypothesis_ms),
                            final_ms=round(args.final_ms), first_audio_ms=round(args.first_audio_ms))
    peer = SpeechPeer(key=args.key, settings=settings)
    host = f"ws://{args.host}:{args.port}"
    print(f"# the local Azure AI Speech service, at {host}; point the azure engines at it with:\n"
          f"export AZURE_SPEECH_HOST={host}\n" + (f"export AZURE_SPEECH_KEY={args.key}\n" if args.key else "")
          + f"# faults: POST http://{args.host}:{args.port}/peer/faults; state: GET .../peer/state", flush=True)
    uvicorn.run(peer.app, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0


def _yaml_files(paths: Sequence[str]) -> tuple[list[Path], int]:
    """(files to check, number of arguments that gave none): folders are searched recursively."""
    out: list[Path] = []
    empty = 0
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                empty += 1
                print(f"error: {path}: no .yaml or .yml files in this folder", file=sys.stderr)
            out += found
        else:
            out.append(path)  # a missing or unreadable file is reported by the loader
    return out, empty


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``voicegraph`` (every flag type-checked)."""
    parser = argparse.ArgumentParser(prog="voicegraph", description="Real-time voice-agent engine.")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                        help="DEBUG, INFO, WARNING (default), ERROR or CRITICAL")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check pipeline, agent (agents/), scenario (scenarios/) and models files "
                                           "(default: config/pipelines, agents, scenarios and models.yaml)")
    p.add_argument("paths", nargs="*", help="files or folders")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("graph", help="print a pipeline as a Mermaid flowchart with its latency budget")
    p.add_argument("pipeline", help="a pipeline name under config/pipelines or a path")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("nodes", help="the settings reference: node types, their settings, defaults and ranges")
    p.add_argument("types", nargs="*", metavar="TYPE", help="only these node types (default: all)")
    p.set_defaults(func=cmd_nodes)

    p = sub.add_parser("call", help="run one call through a pipeline and print the conversation")
    p.add_argument("--pipeline", help=f"name or path (default: {DEFAULT_PIPELINE}; with --scenario: scenario, and "
                                      "'text' means scenario_text; with --text: text or scenario_text)")
    p.add_argument("--scenario", metavar="NAME", help="run this scenario's agents (config/scenarios) on the "
                                                      "pipeline's orchestrator; the caller says its demo lines "
                                                      "unless --say or --text gives others")
    p.add_argument("--say", action="append", type=_line, metavar="TEXT", help="what the caller says (repeatable)")
    p.add_argument("--text", action="append", type=_line, metavar="TEXT",
                   help="what the caller types: a text-only call (repeatable)")
    p.add_argument("--wav", type=_wav, help="a WAV file the caller plays (speech pipelines)")
    p.add_argument("--caller", type=_caller_id, metavar="ID",
                   help="who calls (a phone number, a name): the caller's id in the call's events and history")
    p.add_argument("--interrupt-after", type=_number("a number of milliseconds", low=0, high=MAX_INTERRUPT_MS),
                   metavar="MS", help="the caller talks over the bot's answer with its next line, this many ms "
                                      "after the bot starts speaking (needs two or more lines, or a greeting)")
    p.add_argument("--timeout", type=_number("a number of seconds", low=0, high=MAX_TIMEOUT_S, low_open=True),
                   default=120.0, metavar="S", help="give up after this many seconds (default: 120)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--via", choices=("local", "acs"), default="local",
                   help="local: the pipeline's own caller (default); acs: placed the ACS way through the server "
                        "and the local ACS (Event Grid, the SDK's answer, signed callbacks, the media WebSocket)")
    p.set_defaults(func=cmd_call)

    p = sub.add_parser("replay", help="play a recorded call's caller (the left channel of a recording) through a "
                                      "pipeline and print the report, as call does")
    p.add_argument("recording", type=Path, help="a call recording (stereo WAV: caller left, bot right)")
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE, help=f"name or path (default: {DEFAULT_PIPELINE})")
    p.add_argument("--timeout", type=_number("a number of seconds", low=0, high=MAX_TIMEOUT_S, low_open=True),
                   default=None, help="give up after this many seconds (default: the recording's length plus a minute)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("serve", help="serve the ASGI app (health, readiness; transports later)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000, help="TCP port 1..65535 (default: 8000)")
    p.set_defaults(func=cmd_serve)

    _add_dial(sub)
    sessions.add_parser(sub)
    add_history_parser(sub)

    p = sub.add_parser("peer", help="run a local stand-in for a cloud service, for development")
    peers = p.add_subparsers(dest="service", required=True)
    p = peers.add_parser("acs", help="the local ACS: Call Automation REST, signed callbacks, Event Grid ringing")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, required=True, help="TCP port 1..65535")
    p.add_argument("--key", type=_access_key, help="the base64 access key the SDK signs with (default: a new one)")
    p.add_argument("--resource-id", type=_resource_id, help="the resource's immutable id, the audience of its "
                                                            "tokens (default: a new uuid)")
    p.set_defaults(func=cmd_peer_acs)
    p = peers.add_parser("openai", help="a local OpenAI-compatible chat completions server (streaming, tool "
                                        "calls, scripted replies, injectable faults)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, required=True, help="TCP port 1..65535")
    p.add_argument("--script", help="a YAML file of rules and pacing (see processors/llm/peer/script.py)")
    p.add_argument("--api-key", help="the key clients must present (default: any)")
    p.add_argument("--ttft-ms", type=_number("a number of milliseconds", low=0, high=600_000), metavar="MS",
                   help="time to first token (overrides the script)")
    p.add_argument("--tokens-per-s", type=_number("a rate", low=0, high=100_000), metavar="N",
                   help="tokens per second after the first, 0: as fast as possible (overrides the script)")
    p.set_defaults(func=cmd_peer_openai)
    p = peers.add_parser("speech", help="a local Azure AI Speech service: the Speech SDK's WebSocket protocol, "
                                        "backed by the embedded STT/TTS, with injectable faults")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, required=True, help="TCP port 1..65535")
    p.add_argument("--key", type=_speech_key, help="the subscription key clients must present (default: any)")
    p.add_argument("--stt-engine", choices=("pocketsphinx", "whisper"), default="pocketsphinx",
                   help="the embedded recogniser behind recognition")
    ms = _number("a number of milliseconds", low=0, high=60_000)
    p.add_argument("--first-hypothesis-ms", type=ms, default=0, metavar="MS",
                   help="pause before a phrase's first partial")
    p.add_argument("--final-ms", type=ms, default=0, metavar="MS", help="pause before each final")
    p.add_argument("--first-audio-ms", type=ms, default=0, metavar="MS", help="pause before synthesis's first audio")
    p.set_defaults(func=cmd_peer_speech)
    return parser


def _add_dial(sub: Any) -> None:
    p = sub.add_parser("dial", help="place an outbound ACS call through a running server (POST /acs/calls)")
    p.add_argument("target", help="an E.164 phone number (+15551234567) or an ACS user id (8:acs:...)")
    p.add_argument("--source", help="the caller id to show, an E.164 number (default: the server's)")
    p.add_argument("--server", type=_server, default="http://127.0.0.1:8000",
                   help="the voicegraph server (default: http://127.0.0.1:8000); key from $VOICEGRAPH_API_KEY")
    p.add_argument("--pipeline", default="acs", help="the pipeline the call runs (default: acs)")
    p.add_argument("--timeout", type=_number("a number of seconds", low=0, high=MAX_TIMEOUT_S, low_open=True),
                   default=30.0, metavar="S", help="give up waiting for the server after S seconds (default: 30)")
    p.set_defaults(func=cmd_dial)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
