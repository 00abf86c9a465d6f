"""The hot-path storage: one series object per (agent, model) and per (agent, task).

A finished request updates every family it touches (requests, duration, tokens, cost, stop reason, code
blocks) under the one lock of its series: plain integer and float adds and a bisect, where
prometheus_client would take a lock per value. :mod:`claude_exporter.exposition` turns the series into
metric families when Prometheus scrapes.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from claude_exporter.recording.usage import Usage

__all__ = ["TOKEN_TYPES", "ExecSeries", "Histogram", "LabelledCounter", "RequestSeries"]

TOKEN_TYPES = ("input", "output", "cache_creation", "cache_read")


class Histogram:
    """Non-cumulative bucket counts and a sum; callers hold the owning series' lock."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # ascending, without +Inf; the last count is the +Inf bucket
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> tuple[list[int], float]:
        return list(self.counts), self.sum


class RequestSeries:
    """Every request-level family for one (agent, model)."""

    __slots__ = (
        "agent",
        "code",
        "cost",
        "duration",
        "errors",
        "lock",
        "model",
        "outcomes",
        "rate_limited",
        "retries",
        "stops",
        "tokens",
        "ttft",
    )

    def __init__(
        self, agent: str, model: str, duration_bounds: tuple[float, ...], ttft_bounds: tuple[float, ...]
    ):
        self.agent = agent
        self.model = model
        self.lock = threading.Lock()
        self.outcomes = [0, 0]  # success, error
        self.duration = Histogram(duration_bounds)
        self.ttft = Histogram(ttft_bounds)
        self.tokens = [0, 0, 0, 0]
        self.cost = 0.0
        self.rate_limited = 0
        self.stops: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.retries: dict[str, int] = {}
        self.code: dict[tuple[str, str], int] = {}

    def finish(
        self,
        ok: bool,
        seconds: float,
        usage: Usage | None,
        cost: float,
        stop_reason: str | None,
        error_type: str | None,
        blocks: Iterable[tuple[str, str]],
        count: bool = True,
    ) -> None:
        """Record one finished request; ``count=False`` records only its open-ended labels (an overflow)."""
        with self.lock:
            if count:
                self.outcomes[0 if ok else 1] += 1
                duration = self.duration  # observe() inlined: this runs once per request
                duration.counts[bisect_left(duration.bounds, seconds)] += 1
                duration.sum += seconds
            if usage is not None:
                counts = self.tokens
                counts[0] += usage.input
                counts[1] += usage.output
                counts[2] += usage.cache_creation
                counts[3] += usage.cache_read
                self.cost += cost
            if stop_reason is not None:
                self.stops[stop_reason] = self.stops.get(stop_reason, 0) + 1
            if error_type is not None:
                self.errors[error_type] = self.errors.get(error_type, 0) + 1
            for key in blocks:
                self.code[key] = self.code.get(key, 0) + 1

    def add_retry(self, reason: str) -> None:
        with self.lock:
            self.retries[reason] = self.retries.get(reason, 0) + 1

    def add_rate_limited(self) -> None:
        with self.lock:
            self.rate_limited += 1

    def add_ttft(self, seconds: float) -> None:
        with self.lock:
            self.ttft.observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "outcomes": list(self.outcomes),
                "duration": self.duration.snapshot(),
                "ttft": self.ttft.snapshot(),
                "tokens": list(self.tokens),
                "cost": self.cost,
                "rate_limited": self.rate_limited,
                "stops": dict(self.stops),
                "errors": dict(self.errors),
                "retries": dict(self.retries),
                "code": dict(self.code),
            }


class ExecSeries:
    """Every execution-level family for one (agent, task)."""

    __slots__ = ("agent", "duration", "lock", "outcomes", "requests", "task", "tokens_in", "tokens_out")

    def __init__(
        self,
        agent: str,
        task: str,
        duration_bounds: tuple[float, ...],
        token_bounds: tuple[float, ...],
        request_bounds: tuple[float, ...],
    ) -> None:
        self.agent = agent
        self.task = task
        self.lock = threading.Lock()
        self.outcomes = [0, 0]
        self.duration = Histogram(duration_bounds)
        self.tokens_in = Histogram(token_bounds)
        self.tokens_out = Histogram(token_bounds)
        self.requests = Histogram(request_bounds)

    def record(self, ok: bool, seconds: float, input_tokens: int, output_tokens: int, requests: int) -> None:
        duration, tokens_in, tokens_out, turns = self.duration, self.tokens_in, self.tokens_out, self.requests
        with self.lock:  # observe() unrolled: this runs once per execution
            self.outcomes[0 if ok else 1] += 1
            duration.counts[bisect_left(duration.bounds, seconds)] += 1
            duration.sum += seconds
            tokens_in.counts[bisect_left(tokens_in.bounds, input_tokens)] += 1
            tokens_in.sum += input_tokens
            tokens_out.counts[bisect_left(tokens_out.bounds, output_tokens)] += 1
            tokens_out.sum += output_tokens
            turns.counts[bisect_left(turns.bounds, requests)] += 1
            turns.sum += requests

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "outcomes": list(self.outcomes),
                "duration": self.duration.snapshot(),
                "tokens_in": self.tokens_in.snapshot(),
                "tokens_out": self.tokens_out.snapshot(),
                "requests": self.requests.snapshot(),
            }


class LabelledCounter:
    """A rarely updated counter family (overflow, unpriced tokens, faults, ingested events): values by
    label values under one lock, exposed at scrape time like the series above."""

    __slots__ = ("lock", "values")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        with self.lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def snapshot(self) -> dict[tuple[str, ...], float]:
        with self.lock:
            return dict(self.values)
