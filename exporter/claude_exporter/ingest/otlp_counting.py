"""Counting OTLP data that cannot inflate: sums turned into increments, re-sent records recognised.

- A delta point adds its value, once: the same writer's (start, time) interval is remembered, so a point
  re-sent after a lost response adds nothing.
- A cumulative point becomes an increment against the previous point of the same writer. A writer is the
  resource, the metric, the point's attributes **and its start time**: many processes writing "the same"
  series (twelve Claude Code sessions without a session id, say) stay apart, and a start-time change
  (a restarted process) begins a new writer whose first point counts in full, which is what a reset means.
  A point no newer than the last one seen adds nothing; a value below the previous one with the same
  start is a reset too.
- :class:`Recent` remembers ids (request ids, tool-use ids, event sequence numbers) for a while, so an
  event counted once is not counted again when it is sent again.

Memory is bounded: at most ``capacity`` entries each, oldest dropped first, and entries unseen for
``ttl`` seconds are forgotten. A forgotten cumulative writer would count its next point in full, so the
capacity is large and evictions are reported to the caller.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from claude_exporter.ingest.otlp_records import SumPoint

__all__ = ["Deltas", "Recent", "freeze"]


def freeze(attrs: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(attrs.items()))


class Recent:
    """A bounded, expiring set of keys: ``add`` says whether a key is new."""

    def __init__(
        self, capacity: int = 100_000, ttl: float = 6 * 3600.0, clock: Callable[[], float] = time.monotonic
    ):
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._seen: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._seen

    def add(self, key: Hashable) -> bool:
        now = self._clock()
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                self._seen[key] = now
                return False
            self._seen[key] = now
            self._trim(now)
            return True

    def _trim(self, now: float) -> None:
        seen = self._seen
        while seen:
            oldest_key, stamp = next(iter(seen.items()))
            if len(seen) <= self.capacity and now - stamp <= self.ttl:
                return
            del seen[oldest_key]


class Deltas:
    """Per-writer state for sum points; :meth:`increment` returns what a point adds."""

    def __init__(
        self,
        capacity: int = 100_000,
        ttl: float = 6 * 3600.0,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._on_evict = on_evict
        self._last: OrderedDict[Hashable, tuple[float, int, float]] = OrderedDict()  # stamp, time, value
        self._intervals = Recent(capacity, ttl, clock)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._last)

    def increment(self, point: SumPoint) -> float:
        writer = (point.metric, freeze(point.resource), freeze(point.attrs), point.start_ns)
        if not point.cumulative:
            return point.value if self._intervals.add((writer, point.time_ns)) else 0.0
        now = self._clock()
        with self._lock:
            last = self._last.get(writer)
            if last is not None and point.time_ns <= last[1]:
                return 0.0  # re-sent or out of order: the newer point already counted
            self._last[writer] = (now, point.time_ns, point.value)
            self._last.move_to_end(writer)
            self._trim(now)
        if last is None or point.value < last[2]:
            return point.value  # a new writer, or a reset with the same start
        return point.value - last[2]

    def _trim(self, now: float) -> None:
        last = self._last
        while last:
            oldest_key, (stamp, _, _) = next(iter(last.items()))
            expired = now - stamp > self.ttl
            if len(last) <= self.capacity and not expired:
                return
            del last[oldest_key]
            if not expired and self._on_evict is not None:
                self._on_evict()
