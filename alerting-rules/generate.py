"""Regenerates the committed rule files from the rules generator (``make generate``); ``--check`` fails
naming every file that is out of date. Repository tooling: it lives beside its outputs, not in the wheel.

    python alerting-rules/generate.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from claude_exporter.config import default_config, load_config
from claude_exporter.rules import render_rules

ROOT = Path(__file__).resolve().parent.parent

# Committed outputs, relative to the repository root: output path -> config path (None: the defaults).
BUNDLED: dict[str, str | None] = {
    "alerting-rules/claude-exporter.rules.yml": None,
    "alerting-rules/seed/claude-exporter.rules.yml": "tests/data/seed.yaml",
    # Fixture of the promtool tests: named agents with their own thresholds, and a cost budget.
    "alerting-rules/tests/fleet.rules.yml": "alerting-rules/tests/fleet.yaml",
    # Fixtures of the promtool tests that walk days: the defaults evaluated every 5 and 15 minutes.
    "alerting-rules/tests/bands.rules.yml": "alerting-rules/tests/bands.yaml",
    "alerting-rules/tests/weekly.rules.yml": "alerting-rules/tests/weekly.yaml",
}


def bundled_outputs(root: Path) -> dict[Path, str]:
    """What the committed rule files under ``root`` must contain: path -> rendered text."""
    out: dict[Path, str] = {}
    for rel, config_path in BUNDLED.items():
        config = default_config() if config_path is None else load_config(root / config_path)
        out[root / rel] = render_rules(config)
    return out


def write_bundled(root: Path) -> list[Path]:
    """Regenerates the committed rule files under ``root``; returns the paths written."""
    written = []
    for path, text in bundled_outputs(Path(root)).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        stale = [
            str(p.relative_to(ROOT))
            for p, text in bundled_outputs(ROOT).items()
            if not p.exists() or p.read_text() != text
        ]
        for path in stale:
            print(f"{path}: out of date: run make generate", file=sys.stderr)
        return 1 if stale else 0
    write_bundled(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
