"""Cardinality policy: per-label caps and per-family combination caps.

A label value never seen before is admitted while its label has room; past the cap it becomes
``__overflow__`` and the fold is counted in ``claude_exporter_label_overflow_total{label=...}``. Per-label
caps alone multiply (200 agents x 200 models), so every family also caps its label combinations: past
that cap a new combination is recorded with its capped labels (agent, task, model) set to ``__overflow__``.
The overflow counter counts observations recorded under a folded value (a family fold is counted with
``label`` set to the family's name), so a flood of new names shows as a rate.

Both caps are checked when a label value is first resolved, never per request: callers cache the result.
A value first passes the admission rule (:mod:`claude_exporter.recording.admission`), so the caps count
and store only admissible values.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Container, Mapping
from typing import Any

from claude_exporter.recording.admission import LabelGate

__all__ = ["FAMILY_NAMES", "OVERFLOW", "Admission", "Budget", "LabelCap"]

OVERFLOW = "__overflow__"


class LabelCap:
    """Admits at most ``cap`` distinct values of one label; later ones fold into ``__overflow__``."""

    __slots__ = ("_gate", "_lock", "_on_overflow", "_seen", "cap", "name")

    def __init__(
        self, name: str, cap: int, on_overflow: Callable[[str], None], gate: LabelGate | None = None
    ) -> None:
        self.name = name
        self.cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._on_overflow = on_overflow
        self._gate = gate

    def fold(self, value: str) -> str:
        # Only admitted values are ever in _seen, so a value found there needs no admission.
        if type(value) is str and value in self._seen:
            return value
        if self._gate is not None:
            value = self._gate.admit(self.name, value)
            if value in self._seen:
                return value
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.cap:
                self._seen.add(value)
                return value
        self._on_overflow(self.name)
        return OVERFLOW


# Budget key -> the family named in claude_exporter_label_overflow_total when it overflows.
FAMILY_NAMES = {
    "series": "claude_requests_total",
    "stop_reasons": "claude_stop_reasons_total",
    "errors": "claude_errors_total",
    "retries": "claude_retries_total",
    "code_blocks": "claude_code_blocks_executed_total",
    "executions": "claude_executions_total",
    "rate_limited": "claude_rate_limited_total",
    "cache_misses": "claude_cache_misses_total",
    "refusals": "claude_refusals_total",
}


class Budget:
    """How many more label combinations one family may take."""

    __slots__ = ("_lock", "left", "name")

    def __init__(self, name: str, cap: int) -> None:
        self.name = name
        self.left = cap
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


class Admission:
    """Fold, budget, overflow: the one way a label combination never seen before is admitted.

    Each value is folded by its label's cap; a combination its family has seen passes, a new one takes
    one from its family's budget, and past the budget it is refused and the fold counted. The caller
    records a refused combination under the overflow series (or drops it, where there is none).
    """

    __slots__ = ("_count", "_lock", "budgets", "cap", "caps")

    def __init__(self, caps: Mapping[str, LabelCap], cap: int, count_overflow: Callable[[str], None]) -> None:
        self.caps = caps
        self.cap = cap  # each family's budget of label combinations
        self.budgets: dict[str, Budget] = {}
        self._count = count_overflow
        self._lock = threading.Lock()

    def fold(self, label: str, value: Any) -> str:
        return self.caps[label].fold(value)

    def take(self, family: str) -> bool:
        """One more combination for ``family`` (a key of :data:`FAMILY_NAMES`, or a family's name);
        False, counted, when its budget is spent."""
        budget = self.budgets.get(family)
        if budget is None:
            with self._lock:
                budget = self.budgets.setdefault(family, Budget(family, self.cap))
        if budget.take():
            return True
        self._count(FAMILY_NAMES.get(family, family))
        return False

    def admit(self, family: str, labels: tuple[str, ...], key: Any, seen: Container[Any]) -> tuple[Any, bool]:
        """``key`` (one value, or a tuple of one per label in ``labels``) folded by the labels' caps, and
        whether it is admitted: ``seen`` has it, or the family's budget allows one more."""
        if len(labels) == 1:
            folded: Any = self.caps[labels[0]].fold(key)
        else:
            caps = self.caps  # a label without a cap (a code block's outcome) takes a fixed set of values
            folded = tuple(
                value if label not in caps else caps[label].fold(value)
                for label, value in zip(labels, key, strict=True)
            )
        return folded, folded in seen or self.take(family)
