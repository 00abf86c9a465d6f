"""The ``claude-exporter`` command: demo, serve, run, rules, check-config, pricing, reconcile.

Errors go to standard error as one line, ``claude-exporter CMD: FILE: problem`` (a configuration's
problems follow it, one indented line each), never as a traceback for a user's mistake.

Exit status: 0 done; 1 a failure while running (a port taken, a file that cannot be read or written);
2 bad usage or a configuration that cannot be used, ``check-config`` included (nothing was started);
130 stopped by Ctrl-C (SIGINT), the shell's code for an interrupted command, so ``demo && next`` stops
there; 0 stopped by SIGTERM, which ``serve`` and ``demo`` take as a requested stop (``kill``, ``timeout``,
systemd and Kubernetes count exit 0 as a clean stop; 143 would read as a failure to them). ``run`` exits
with the program's own status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from claude_exporter._version import __version__

if TYPE_CHECKING:
    from claude_exporter.config import Config

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A command line that cannot be run as given (exit status 2)."""


def _demo(args: argparse.Namespace) -> int:
    from claude_exporter.cli.demo import run

    return run(port=args.port, addr=args.addr, duration=args.duration, config=args.config)


def _load(path: str | None) -> Config:
    """The configuration: ``path``, else ``$CLAUDE_EXPORTER_CONFIG``, else the defaults."""
    # Not settings.as_config: that imports the SDK, a second of start-up that `run` would pay twice.
    from claude_exporter.config import config_from_env, default_config, load_config

    return load_config(path) if path else config_from_env() or default_config()


def _serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    from claude_exporter.cli.serve import serve

    return serve(
        config, tails=args.tail, tail_from_start=args.tail_from_start, port=args.port, addr=args.addr
    )


def _run(args: argparse.Namespace) -> int:
    from claude_exporter.cli.run import run

    command = list(args.program)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError("no command; usage: claude-exporter run [options] -- python app.py")
    config = _load(args.config)
    pushgateway = args.pushgateway
    port = args.port
    if port is None:
        # A batch program that pushes its metrics needs no port; a long-lived one is scraped.
        port = 0 if pushgateway else config.server.port
    return run(
        command,
        config=args.config or os.environ.get("CLAUDE_EXPORTER_CONFIG") or None,
        port=port,
        addr=args.addr,
        pushgateway=pushgateway,
        job=args.job,
        instance=args.instance,
    )


def _check_config(args: argparse.Namespace) -> int:
    from claude_exporter.config import load_config

    config = load_config(args.file)
    agents = ", ".join(config.agents) or "none"
    print(f"{args.file}: valid ({len(config.agents)} agent(s): {agents})")
    return 0


def _rules(args: argparse.Namespace) -> int:
    from claude_exporter.config import default_config, load_config
    from claude_exporter.rules import render_rules

    config = load_config(args.config) if args.config else default_config()
    text = render_rules(config, runbook_url=args.runbook_url) if args.runbook_url else render_rules(config)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _pricing(args: argparse.Namespace) -> int:
    config = _load(args.config)
    import anthropic

    from claude_exporter.cli.pricing import missing_models, render, sdk_models
    from claude_exporter.recording.pricing import load_price_table, with_overrides

    table = load_price_table()
    try:
        if config.pricing_overrides:
            table = with_overrides(table, config.pricing_overrides)
    except ValueError as err:
        raise UsageError(str(err)) from None
    models = sdk_models()
    sys.stdout.write(render(table, models, anthropic.__version__, args.config))
    return 1 if args.strict and missing_models(table, models) else 0


def _reconcile(args: argparse.Namespace) -> int:
    from claude_exporter.cli.reconcile import run

    return run(args)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claude-exporter", description="Prometheus monitoring for Claude agents."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="a simulated fleet against a built-in fake API, exported on :9466")
    demo.add_argument("--port", type=int, default=9466)
    demo.add_argument("--addr", default="127.0.0.1")
    demo.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    demo.add_argument("--config", default=None, help="a configuration file for the fleet's thresholds")
    demo.set_defaults(run=_demo)

    check = sub.add_parser("check-config", help="validate a configuration file and print every problem")
    check.add_argument("file")
    check.set_defaults(run=_check_config)

    serve = sub.add_parser(
        "serve",
        help="standalone exporter: ingest events by POST /v1/events or from followed log files",
        description="Serve /metrics, /health/claude-agent and POST /v1/events for agents in any language, "
        "and follow JSON log files (--tail) like tail -F. Stops on SIGTERM or Ctrl-C.",
    )
    serve.add_argument(
        "--config",
        default=None,
        help="configuration file (default: $CLAUDE_EXPORTER_CONFIG, else built-in defaults)",
    )
    serve.add_argument(
        "--tail", action="append", default=[], metavar="FILE", help="follow this JSON log file (repeatable)"
    )
    serve.add_argument(
        "--tail-from-start", action="store_true", help="also ingest the lines already in the files"
    )
    serve.add_argument(
        "--port",
        type=int,
        default=None,
        help="listen port (default: exporter.server.port, 9466; 0: any free port)",
    )
    serve.add_argument(
        "--addr", default=None, help="listen address (default: exporter.server.address, 127.0.0.1)"
    )
    serve.set_defaults(run=_serve)

    run = sub.add_parser(
        "run",
        help="run a Python program instrumented, without changing its code",
        description="Run COMMAND (a Python program) with the anthropic SDK instrumented and the exporter "
        "started inside it, through a sitecustomize on PYTHONPATH. Exits with the program's status.",
        usage="%(prog)s [options] -- COMMAND [ARGS ...]",
    )
    run.add_argument("--config", default=None, help="configuration file (default: $CLAUDE_EXPORTER_CONFIG)")
    run.add_argument(
        "--port",
        type=int,
        default=_env_int("CLAUDE_EXPORTER_PORT"),
        help="serve the endpoints on this port while the program runs; 0: no server "
        "(default: exporter.server.port, or 0 with --pushgateway)",
    )
    run.add_argument(
        "--addr",
        default=os.environ.get("CLAUDE_EXPORTER_ADDR") or None,
        help="listen address (default: exporter.server.address)",
    )
    run.add_argument(
        "--pushgateway",
        default=os.environ.get("CLAUDE_EXPORTER_PUSHGATEWAY") or None,
        metavar="URL",
        help="push the final metrics to this Pushgateway when the program exits",
    )
    run.add_argument(
        "--job",
        default=os.environ.get("CLAUDE_EXPORTER_JOB") or None,
        help="Pushgateway job (default: claude-exporter)",
    )
    run.add_argument(
        "--instance",
        default=os.environ.get("CLAUDE_EXPORTER_INSTANCE") or None,
        help="Pushgateway instance (default: hostname:pid)",
    )
    run.add_argument(
        "program", nargs=argparse.REMAINDER, metavar="COMMAND", help="the program and its arguments, after --"
    )
    run.set_defaults(run=_run)

    rules = sub.add_parser("rules", help="render Prometheus recording and alert rules for a configuration")
    rules.add_argument("--config", default=None, help="configuration file (default: the built-in defaults)")
    rules.add_argument("-o", "--output", default=None, help="write here instead of standard output")
    rules.add_argument(
        "--runbook-url", default=None, help="your copy of RUNBOOK.md (each alert links an anchor in it)"
    )
    rules.set_defaults(run=_rules)

    pricing = sub.add_parser(
        "pricing",
        help="print the price table in use, its date, and the models the SDK knows that it lacks",
    )
    pricing.add_argument(
        "--config", default=None, help="configuration file whose pricing_overrides apply (default: none)"
    )
    pricing.add_argument(
        "--strict", action="store_true", help="exit 1 when the installed SDK knows a model the table lacks"
    )
    pricing.set_defaults(run=_pricing)

    reconcile = sub.add_parser(
        "reconcile",
        help="compare estimated cost (from Prometheus) with the Admin API cost report, per model and day",
        description="Per model, billing tier and complete UTC day: the cost the exporter estimated (increase "
        "of claude_cost_usd_total, read from Prometheus) against the Admin API's cost and usage reports "
        "(the analytics reports where they answer, else the legacy ones). Priority-tier spend and "
        "Bedrock/Vertex tokens are shown apart. Exits 1 when a compared row differs by more than "
        "--tolerance percent, or when a peer fails (one line on standard error).",
    )
    reconcile.add_argument(
        "--admin-key-env",
        required=True,
        metavar="VAR",
        help="the environment variable holding an Admin API key (sk-ant-admin...); the key is never printed",
    )
    reconcile.add_argument("--since", default="7d", help='how far back: "7d", "48h" (default: 7d)')
    reconcile.add_argument(
        "--prometheus",
        default=os.environ.get("PROMETHEUS_URL") or None,
        metavar="URL",
        help="the Prometheus that scrapes the exporter (default: $PROMETHEUS_URL)",
    )
    reconcile.add_argument(
        "--selector",
        default="",
        help='label matchers for the exporter\'s series, e.g. job="claude" (default: all)',
    )
    reconcile.add_argument(
        "--admin-url",
        default=os.environ.get("ANTHROPIC_ADMIN_URL") or "https://api.anthropic.com",
        metavar="URL",
        help="Admin API base URL (default: $ANTHROPIC_ADMIN_URL, else https://api.anthropic.com)",
    )
    reconcile.add_argument(
        "--tolerance", type=float, default=2.0, help="flag differences over this many percent (default: 2)"
    )
    reconcile.add_argument(
        "--analytics-key-env",
        default=None,
        metavar="VAR",
        help="the environment variable holding a key with the read:analytics scope for the analytics "
        "reports (default: the Admin key; the legacy reports answer when the analytics ones refuse it)",
    )
    reconcile.add_argument(
        "--deadline",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="the most the whole run may take, every request to the Admin API and Prometheus included "
        "(default: 120)",
    )
    reconcile.set_defaults(run=_reconcile)
    return parser


def _error(command: str, message: str) -> None:
    print(f"claude-exporter {command}: {message}", file=sys.stderr, flush=True)


def _os_problem(err: OSError) -> str:
    """``FILE: problem`` when the error names a file, else the problem alone."""
    what = err.strerror or str(err)
    return f"{err.filename}: {what}" if err.filename else what


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # bad usage: argparse prints it and exits 2
    command: Command = args.run
    from claude_exporter.config import ConfigError, format_problems

    try:
        return command(args)
    except ConfigError as err:
        _error(args.command, format_problems(err))
        return 2
    except UsageError as err:
        _error(args.command, str(err))
        return 2
    except OSError as err:  # a port taken, a file that cannot be read or written
        _error(args.command, _os_problem(err))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
