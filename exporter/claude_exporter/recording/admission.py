"""The one admission rule for label values, wherever they come from.

Those places are the SDK path, ``execution()``, ingestion, ``--tail`` and OTLP.

A label value is a string; the rule makes any string safe to store and to expose:

- not a string: ``__invalid__`` (``execution()`` refuses other types at the call, with ``TypeError``, so
  this only catches a bug upstream);
- a lone surrogate (from a JSON ``\\ud800`` escape, say), which no exposition can encode: replaced by
  U+FFFD;
- control characters (``\\n``, ``\\t``, NUL, DEL, C1): removed;
- longer than the length cap (default :data:`MAX_LENGTH`, ``exporter.label_caps.length``): cut to it;
- empty (as given, or once cleaned): ``__empty__``, since Prometheus reads an empty label as no label.

Every change is counted in ``claude_exporter_label_changes_total{label, change}``. The rule runs where a
value is first resolved (the slow path of the label caches), never per request for a known value.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

__all__ = ["CHANGES", "EMPTY", "INVALID", "MAX_LENGTH", "LabelGate", "clean"]

MAX_LENGTH = 128
INVALID = "__invalid__"
EMPTY = "__empty__"
# The ``change`` label's values, in the order the rule applies them.
CHANGES = ("not_a_string", "replaced", "control_stripped", "truncated", "empty")


def clean(value: object, max_length: int = MAX_LENGTH) -> tuple[str, list[str]]:
    """``value`` made admissible, and the changes that took (empty when it was admissible already)."""
    if not isinstance(value, str):
        return INVALID, ["not_a_string"]
    if len(value) <= max_length and value.isprintable() and value:
        return value, []  # the common case: nothing to look at character by character
    changes: list[str] = []
    if any(unicodedata.category(ch) == "Cs" for ch in value):
        value = "".join("\ufffd" if unicodedata.category(ch) == "Cs" else ch for ch in value)
        changes.append("replaced")
    kept = "".join(ch for ch in value if unicodedata.category(ch) != "Cc")
    if len(kept) != len(value):
        value = kept
        changes.append("control_stripped")
    if len(value) > max_length:
        value = value[:max_length]
        changes.append("truncated")
    if not value:
        value = EMPTY
        changes.append("empty")
    return value, changes


class LabelGate:
    """Applies :func:`clean` and counts each change with ``count(label, change)``."""

    __slots__ = ("_count", "max_length")

    def __init__(self, max_length: int, count: Callable[[str, str], None]) -> None:
        self.max_length = max_length
        self._count = count

    def admit(self, label: str, value: object) -> str:
        if type(value) is str and value and len(value) <= self.max_length and value.isprintable():
            return value
        cleaned, changes = clean(value, self.max_length)
        for change in changes:
            self._count(label, change)
        return cleaned
