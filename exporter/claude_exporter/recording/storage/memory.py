"""Storage in this process's memory: one series object per (agent, model) and per (agent, task).

A finished request updates every family it touches (requests, duration, tokens, cost, savings, stop
reason, error, code blocks) under the one lock of its series: plain integer and float adds and a bisect,
where prometheus_client would take a lock per value. The exposition copies each series under that lock
when Prometheus scrapes, so a scrape sees every request whole or not at all.

The label-keyed fields (``stops``, ``errors``, ...) are dicts keyed by label values; the admission reads
them to know which values a series has seen (:mod:`claude_exporter.recording.labels`). The mmap storage
keeps fields of the same names, so the admission reads either alike.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from claude_exporter.recording.usage import Usage

__all__ = ["Counter", "ExecSeries", "Histogram", "MemoryStorage", "RequestSeries"]


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
    """Every request-level family for one (agent, model); which field is which family is
    :mod:`claude_exporter.recording.storage.layout`'s table."""

    __slots__ = (
        "agent",
        "code",
        "cost",
        "duration",
        "errors",
        "lock",
        "lone",
        "misses",
        "model",
        "outcomes",
        "rate_limited",
        "refusals",
        "retries",
        "savings",
        "stops",
        "tiers",
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
        self.tokens = [0, 0, 0, 0]  # layout.TOKEN_TYPES
        self.cost = 0.0
        self.savings = 0.0  # USD the cache reads saved
        self.rate_limited: dict[str, int] = {}  # by error_code
        self.stops: dict[str, int] = {}
        self.errors: dict[tuple[str, str], int] = {}  # (error_type, error_code)
        self.retries: dict[tuple[str, str], int] = {}  # (reason, error_code)
        self.code: dict[tuple[str, str], int] = {}  # (tool, outcome)
        self.misses: dict[str, list[int]] = {}  # cache-miss reason -> [responses, missed input tokens]
        self.refusals: dict[str, int] = {}  # refusal category
        self.tiers: dict[str, float] = {}  # service tier -> USD (cost split by tier)
        self.lone: _Lone | None = None  # set by lone_from(): the executions its lone requests are

    def finish(
        self,
        ok: bool,
        seconds: float,
        usage: Usage | None,
        cost: float,
        savings: float,
        stop_reason: str | None,
        error: tuple[str, str] | None,
        blocks: Sequence[tuple[str, str]],
        lone: bool = False,
        tier: str | None = None,
    ) -> int:
        """Record one finished request; returns its duration bucket (an implicit execution reuses it).
        ``lone``: a request outside any execution, recorded here too as the execution of its own that it
        is, under the same lock (see :meth:`ExecSeries.lone_from`). ``tier``: the service tier its cost
        is also counted under (with its usage)."""
        duration = self.duration
        bucket = bisect_left(duration.bounds, seconds)
        executions: Any = self.lone
        if lone:
            if executions is None:
                raise RuntimeError("a lone request on a series no execution series reads")
            if usage is None:
                at_in = at_out = tokens_in = tokens_out = 0
            else:
                tokens_in, tokens_out = usage.input + usage.cache_creation + usage.cache_read, usage.output
                at_in = bisect_left(executions.tokens_in.bounds, tokens_in)
                at_out = bisect_left(executions.tokens_out.bounds, tokens_out)
        with self.lock:
            if lone:
                executions.outcomes[0 if ok else 1] += 1  # the execution series' requests histogram: 1 each
                executions.duration.counts[bucket] += 1
                executions.duration.sum += seconds
                executions.tokens_in.counts[at_in] += 1
                executions.tokens_in.sum += tokens_in
                executions.tokens_out.counts[at_out] += 1
                executions.tokens_out.sum += tokens_out
            self.outcomes[0 if ok else 1] += 1
            duration.counts[bucket] += 1
            duration.sum += seconds
            if usage is not None:
                counts = self.tokens
                counts[0] += usage.input
                counts[1] += usage.output
                counts[2] += usage.cache_creation
                counts[3] += usage.cache_read
                self.cost += cost
                if savings:
                    self.savings += savings
                if tier is not None:
                    self.tiers[tier] = self.tiers.get(tier, 0.0) + cost
            if stop_reason is not None:
                self.stops[stop_reason] = self.stops.get(stop_reason, 0) + 1
            if error is not None:
                self.errors[error] = self.errors.get(error, 0) + 1
            for key in blocks:
                self.code[key] = self.code.get(key, 0) + 1
        return bucket

    def add_usage(self, usage: Usage, cost: float, savings: float, tier: str | None = None) -> None:
        """Tokens and cost reported apart from any request (Claude Code's usage metrics, batch results);
        ``tier``: the service tier the cost is also counted under."""
        with self.lock:
            counts = self.tokens
            counts[0] += usage.input
            counts[1] += usage.output
            counts[2] += usage.cache_creation
            counts[3] += usage.cache_read
            self.cost += cost
            self.savings += savings
            if tier is not None:
                self.tiers[tier] = self.tiers.get(tier, 0.0) + cost

    def add(self, field: str, key: Any, amount: int = 1) -> None:
        """One more of a label-keyed field (``stops``, ``errors``, ``retries``, ``code``, ``refusals``,
        ``rate_limited``), apart from a finished request."""  # tiers are added with the usage they price
        with self.lock:
            values = getattr(self, field)
            values[key] = values.get(key, 0) + amount

    def add_cache_miss(self, reason: str, missed_tokens: int) -> None:
        with self.lock:
            found = self.misses.get(reason)
            if found is None:
                self.misses[reason] = [1, missed_tokens]
            else:
                found[0] += 1
                found[1] += missed_tokens

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
                "savings": self.savings,
                "rate_limited": dict(self.rate_limited),
                "stops": dict(self.stops),
                "errors": dict(self.errors),
                "retries": dict(self.retries),
                "code": dict(self.code),
                "misses": {reason: tuple(v) for reason, v in self.misses.items()},
                "refusals": dict(self.refusals),
                "tiers": dict(self.tiers),
            }


class _Lone:
    """The executions a request series' lone requests were (each an execution of one request), kept
    under the request series' lock and added to its agent's (agent, "default") series when read."""

    __slots__ = ("duration", "outcomes", "tokens_in", "tokens_out")

    def __init__(self, duration_bounds: tuple[float, ...], token_bounds: tuple[int, ...]) -> None:
        self.outcomes = [0, 0]
        self.duration = Histogram(duration_bounds)
        self.tokens_in = Histogram(token_bounds)
        self.tokens_out = Histogram(token_bounds)


class ExecSeries:
    """Every execution-level family for one (agent, task)."""

    __slots__ = (
        "agent",
        "duration",
        "lock",
        "lone",
        "outcomes",
        "requests",
        "task",
        "tokens_in",
        "tokens_out",
    )

    def __init__(
        self,
        agent: str,
        task: str,
        duration_bounds: tuple[float, ...],
        token_bounds: tuple[int, ...],
        request_bounds: tuple[int, ...],
    ) -> None:
        self.agent = agent
        self.task = task
        self.lock = threading.Lock()
        self.outcomes = [0, 0]
        self.duration = Histogram(duration_bounds)
        self.tokens_in = Histogram(token_bounds)  # ints: compared with int counts, faster than floats
        self.tokens_out = Histogram(token_bounds)
        self.requests = Histogram(request_bounds)
        self.lone: list[RequestSeries] = []  # request series whose lone requests are executions here

    def lone_from(self, series: RequestSeries) -> None:
        """Let ``series`` record its lone requests as executions of this series (its agent's default
        task), under its own lock: a lone request then costs no second lock and no second bisect of its
        duration. :meth:`snapshot` adds them in."""
        if series.lone is None:
            series.lone = _Lone(self.duration.bounds, self.tokens_in.bounds)  # type: ignore[arg-type]
            self.lone.append(series)

    def record(
        self,
        ok: bool,
        seconds: float,
        input_tokens: int,
        output_tokens: int,
        requests: int,
        bucket: int = -1,
    ) -> None:
        """One finished execution; ``bucket``: its duration bucket when already known (a lone request's)."""
        duration, tokens_in, tokens_out, turns = self.duration, self.tokens_in, self.tokens_out, self.requests
        if bucket < 0:
            bucket = bisect_left(duration.bounds, seconds)
        at_in = bisect_left(tokens_in.bounds, input_tokens)
        at_out = bisect_left(tokens_out.bounds, output_tokens)
        at_turns = 0 if requests == 1 else bisect_left(turns.bounds, requests)  # 1 is the first bound
        with self.lock:  # observe() unrolled: this runs once per execution
            self.outcomes[0 if ok else 1] += 1
            duration.counts[bucket] += 1
            duration.sum += seconds
            tokens_in.counts[at_in] += 1
            tokens_in.sum += input_tokens
            tokens_out.counts[at_out] += 1
            tokens_out.sum += output_tokens
            turns.counts[at_turns] += 1
            turns.sum += requests

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any]
        with self.lock:
            snap = {
                "outcomes": list(self.outcomes),
                "duration": self.duration.snapshot(),
                "tokens_in": self.tokens_in.snapshot(),
                "tokens_out": self.tokens_out.snapshot(),
                "requests": self.requests.snapshot(),
            }
        for series in list(self.lone):
            with series.lock:
                part = series.lone
                if part is None:
                    continue
                n = part.outcomes[0] + part.outcomes[1]
                _add(snap["outcomes"], part.outcomes)
                for field in ("duration", "tokens_in", "tokens_out"):
                    counts, total = snap[field]
                    histogram = getattr(part, field)
                    _add(counts, histogram.counts)
                    snap[field] = (counts, total + histogram.sum)
            counts, total = snap["requests"]
            counts[0] += n  # every lone execution is one request: the first bucket (1)
            snap["requests"] = (counts, total + n)
        return snap


def _add(into: list[int], values: list[int]) -> None:
    for i, value in enumerate(values):
        into[i] += value


class Counter:
    """A rarely updated counter family (overflow, unpriced tokens, faults, ingested events): values by
    label values under one lock."""

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


class MemoryStorage:
    """The storage of a single process: series and counters in memory, read by the scraping thread."""

    path: str | None = None  # no files

    def __init__(self) -> None:
        self.running_calls: dict[int, Any] = {}
        self.running_executions: dict[int, Any] = {}

    request_series = RequestSeries
    exec_series = ExecSeries

    def counter(self, family: str) -> Counter:
        return Counter()

    def rate_limit_sink(self, fault: Callable[[str], None]) -> deque[tuple[str, Any]]:
        """(model, response headers) not parsed yet, oldest first; bounded, since only the newest matter.
        The exposition parses them when Prometheus scrapes."""
        return deque(maxlen=64)

    def build_info(self, labelvalues: tuple[str, str]) -> None:
        pass  # computed at scrape time

    def close(self) -> None:
        pass
