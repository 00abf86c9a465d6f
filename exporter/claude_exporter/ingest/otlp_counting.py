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
``ttl`` seconds are forgotten; a writer is remembered as a 16-byte :func:`digest`, whatever the length of
its attributes. A forgotten cumulative writer would count its next point in full, so the capacity is large
and evictions are reported to the caller. The cumulative writers' state can be saved and restored
(:meth:`Deltas.dump`, :meth:`Deltas.restore`), so a restarted receiver does not count again what the
senders re-send in full.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from claude_exporter.ingest.otlp_records import SumPoint

__all__ = ["Deltas", "Recent", "digest", "freeze"]

_EXPIRE_EVERY = 1024  # adds between sweeps for expired entries: the sweep walks from the oldest


def freeze(attrs: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(attrs.items()))


def digest(*parts: object) -> bytes:
    """A 16-byte digest of ``parts``: what is remembered of an id or a writer, whatever its length."""
    return hashlib.blake2b(repr(parts).encode("utf-8", "replace"), digest_size=16).digest()


class Recent:
    """A bounded, expiring set of keys: ``add`` says whether a key is new."""

    def __init__(
        self, capacity: int = 100_000, ttl: float = 6 * 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._seen: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()
        self._adds = 0

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._seen

    def add(self, key: Hashable) -> bool:
        now = self._clock()
        with self._lock:
            seen = self._seen
            if key in seen:
                seen.move_to_end(key)
                seen[key] = now
                return False
            seen[key] = now
            if len(seen) > self.capacity:
                seen.popitem(last=False)
            self._adds += 1
            if not self._adds % _EXPIRE_EVERY:
                _expire(seen, now - self.ttl)
            return True


def _expire(entries: OrderedDict[Any, Any], before: float) -> int:
    """Drop the oldest entries stamped before ``before`` (the stamp is the value, or its first item)."""
    dropped = 0
    while entries:
        stamp = next(iter(entries.values()))
        if (stamp[0] if isinstance(stamp, tuple) else stamp) >= before:
            break
        entries.popitem(last=False)
        dropped += 1
    return dropped


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
        self._last: OrderedDict[bytes, tuple[float, int, float]] = OrderedDict()  # stamp, time, value
        self._intervals = Recent(capacity, ttl, clock)
        self._lock = threading.Lock()
        self._points = 0
        self.changed = False  # a cumulative writer moved since the last dump

    def __len__(self) -> int:
        return len(self._last)

    def dump(self) -> list[tuple[bytes, int, float]]:
        """Every cumulative writer's (digest, time of its last point, its value), oldest first."""
        with self._lock:
            self.changed = False
            return [(writer, at, value) for writer, (_, at, value) in self._last.items()]

    def restore(self, writers: list[tuple[bytes, int, float]]) -> None:
        """Take back what :meth:`dump` gave (a restarted receiver), as if each writer had just been seen."""
        now = self._clock()
        with self._lock:
            for writer, at, value in writers[-self.capacity :]:
                self._last[writer] = (now, at, value)
                self._last.move_to_end(writer)
            while len(self._last) > self.capacity:
                self._last.popitem(last=False)

    def increment(self, point: SumPoint) -> float:
        if not math.isfinite(point.value):
            # The readers refuse such points (.numbers); checked again where counters add, and before
            # the writer's state: one infinite or NaN value would stay in a counter until a restart.
            return 0.0
        writer = digest(point.metric, freeze(point.resource), freeze(point.attrs), point.start_ns)
        if not point.cumulative:
            return point.value if self._intervals.add((writer, point.time_ns)) else 0.0
        now = self._clock()
        with self._lock:
            last = self._last.get(writer)
            if last is not None and point.time_ns <= last[1]:
                return 0.0  # re-sent or out of order: the newer point already counted
            self._last[writer] = (now, point.time_ns, point.value)
            self._last.move_to_end(writer)
            self.changed = True
            if len(self._last) > self.capacity:
                self._last.popitem(last=False)
                if self._on_evict is not None:
                    self._on_evict()  # a writer still reporting may now count its next point in full
            self._points += 1
            if not self._points % _EXPIRE_EVERY:
                _expire(self._last, now - self.ttl)
        # A new writer, or a reset with the same start, counts in full.
        amount = point.value if last is None or point.value < last[2] else point.value - last[2]
        return amount if math.isfinite(amount) else 0.0  # 1e308 - (-1e308)
