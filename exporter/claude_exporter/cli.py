"""The ``claude-exporter`` command: demo and check-config (more subcommands join with their features)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from ._version import __version__

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]


def _demo(args: argparse.Namespace) -> int:
    from .demo import Fleet
    from .instrumentor import instrument, uninstrument
    from .server import start_http_server

    instrument(config=args.config)
    server = start_http_server(args.port, args.addr)
    fleet = Fleet().start()
    print(
        f"claude-exporter demo: {len(fleet.agents)} simulated agents, fake Anthropic API at {fleet.fake.url}"
    )
    print(f"  metrics:  {server.url}/metrics")
    print(f"  liveness: {server.url}/-/healthy")
    print("  agents:   " + ", ".join(fleet.agents))
    print(
        "Press Ctrl-C to stop." if args.duration is None else f"Running for {args.duration:g} s.", flush=True
    )
    try:
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        print()
    finally:
        fleet.stop()
        server.close()
        uninstrument()
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    try:
        config = load_config(args.file)
    except ConfigError as err:
        print(f"{args.file}: {len(err.problems)} problem(s)", file=sys.stderr)
        for problem in err.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    agents = ", ".join(config.agents) or "none"
    print(f"{args.file}: valid ({len(config.agents)} agent(s): {agents})")
    return 0


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

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command: Command = args.run
    return command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
