"""Writes the Grafana dashboards (JSON) from their sources in this directory.

    python dashboards/src/generate.py            # writes dashboards/claude-*.json
    python dashboards/src/generate.py --out DIR  # writes them into DIR instead
    python dashboards/src/generate.py --check    # exits 1 when a committed file is out of date

Needs the dev extra (grafana-foundation-sdk, pinned to its Grafana 11.6 build); the output is
deterministic, so CI can compare it byte for byte with the committed files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import agent
import cost
import fleet
from common import render
from grafana_foundation_sdk.builders.dashboard import Dashboard

DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "claude-fleet.json": fleet.build,
    "claude-agent.json": agent.build,
    "claude-cost.json": cost.build,
}
DEFAULT_OUT = Path(__file__).resolve().parent.parent


def rendered() -> dict[str, str]:
    """Every dashboard's file name and JSON text."""
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Writes (or with ``--check`` compares) the dashboards; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument("--check", action="store_true", help="compare with the files in --out, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
    for path in stale:
        print(f"out of date: {path} (run python dashboards/src/generate.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
