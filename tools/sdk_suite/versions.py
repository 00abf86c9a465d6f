"""Which anthropic releases a run means: ``floor``, ``locked`` and ``newest``, resolved at run time.

- ``floor``: the oldest release that pyproject.toml's ``anthropic`` requirement allows;
- ``locked``: the one requirements-dev.lock pins (what `make test` and `make demo` install);
- ``newest``: the newest release on the index that the requirement allows, asked for at run time, so a
  release published yesterday is what today's run proves.

A plain version number stands for itself. Final releases only: pre-releases are not what a user's
``pip install claude-exporter`` picks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

__all__ = ["KEYWORDS", "REPO", "allowed", "locked_version", "requirement", "resolve", "resolve_all"]

REPO = Path(__file__).resolve().parent.parent.parent
KEYWORDS = ("floor", "locked", "newest")


def requirement(pyproject: Path = REPO / "pyproject.toml") -> Requirement:
    """The ``anthropic`` requirement of ``[project] dependencies`` (read without tomllib: Python 3.10)."""
    for match in re.finditer(r'"(anthropic[^"]*)"', pyproject.read_text(encoding="utf-8")):
        found = Requirement(match.group(1))
        if found.name == "anthropic":
            return found
    raise SystemExit(f"no `anthropic` requirement found in {pyproject}")


def locked_version(lock: Path = REPO / "requirements-dev.lock") -> str:
    match = re.search(r"(?m)^anthropic==([^\s;\\]+)", lock.read_text(encoding="utf-8"))
    if match is None:
        raise SystemExit(f"{lock} pins no anthropic")
    return match.group(1)


def released() -> list[str]:
    """Every release of anthropic on the index, as pip sees it (the project venv's pip)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "--disable-pip-version-check", "anthropic"],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in result.stdout.splitlines():
        if line.startswith("Available versions:"):
            return [v.strip() for v in line.split(":", 1)[1].split(",") if v.strip()]
    raise SystemExit(
        f"`pip index versions anthropic` listed nothing (exit {result.returncode}):\n"
        f"{result.stdout}{result.stderr}"
    )


def allowed(versions: Iterable[str], wanted: Requirement) -> list[str]:
    """The final releases that `wanted` admits, oldest first."""
    parsed: list[Version] = []
    for text in versions:
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if not (version.is_prerelease or version.is_devrelease) and version in wanted.specifier:
            parsed.append(version)
    return [str(v) for v in sorted(parsed)]


def resolve(name: str, index: list[str] | None = None) -> str:
    """A keyword or a version number as a version number (`index` saves asking the index twice)."""
    if name not in KEYWORDS:
        return name
    if name == "locked":
        return locked_version()
    candidates = allowed(released() if index is None else index, requirement())
    if not candidates:
        raise SystemExit(f"no released anthropic satisfies pyproject.toml's `{requirement()}`")
    return candidates[0] if name == "floor" else candidates[-1]


def resolve_all(names: Iterable[str]) -> list[str]:
    """Each name resolved, duplicates dropped in order (on a day when the lock is the newest, once)."""
    names = list(names)
    index = released() if {"floor", "newest"} & set(names) else None
    return list(dict.fromkeys(resolve(name, index) for name in names))


if __name__ == "__main__":  # `python versions.py newest` prints the version (for .ci/run)
    print(" ".join(resolve_all(sys.argv[1:] or KEYWORDS)))
