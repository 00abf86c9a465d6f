"""The one way a generated section of the README is written or checked (``make generate``, ``make
check-generated``): the README with the section rendered anew, written, or with ``--check`` compared and
the changed lines shown."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def main(rendered: Callable[[str], str], what: str, doc: str | None) -> int:
    """`rendered(readme_text)` is the README with the section made anew; `what` names the section."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = README.read_text(encoding="utf-8")
    new = rendered(text)
    if not args.check:
        README.write_text(new, encoding="utf-8")
        return 0
    if new == text:
        return 0
    print(f"README.md: the {what} is out of date: run make generate", file=sys.stderr)
    diff = difflib.unified_diff(text.splitlines(), new.splitlines(), lineterm="", n=0)
    print("\n".join(list(diff)[2:]), file=sys.stderr)  # the changed lines, without file names
    return 1
