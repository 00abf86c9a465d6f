"""Multiprocess mode: every claude_* family written through prometheus_client's per-process mmap files.

With ``PROMETHEUS_MULTIPROC_DIR`` set when ``instrument()`` runs, the recorder is built on a
:class:`MultiprocessBackend` instead of the in-memory store: each update also goes to this process's
``*_<pid>.db`` files, and whichever worker is scraped merges every worker's files
(:mod:`claude_exporter.exposition.multiprocess`). Counters and histograms are summed over the workers,
dead ones included; the live gauges are per-process values in prometheus_client's ``live*`` modes, which
``mark_process_dead(pid)`` removes:

- ``claude_requests_in_flight``, ``claude_executions_in_flight``: ``livesum``;
- the oldest running execution's start time per agent: ``livemin``, turned into
  ``claude_execution_longest_running_seconds`` (now minus it) at scrape time, since an age cannot be
  written ahead of the scrape by a process that is not scraped;
- ``claude_ratelimit_*``: ``mostrecent``, the last response any worker saw, parsed when it arrives;
- ``claude_exporter_build_info``: ``max``.

The choice is made once, in ``instrument()``; a single process never runs this module.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.utils import floatToGoString
from prometheus_client.values import MultiProcessValue

from claude_exporter.recording.series import TOKEN_TYPES, ExecSeries, RequestSeries

__all__ = ["OLDEST_START", "MultiprocessBackend"]

# Written by each process, read by the scraping one and exposed as claude_execution_longest_running_seconds.
OLDEST_START = "claude_execution_oldest_start_timestamp_seconds"
OLDEST_HELP = "Start (Unix time) of the agent's oldest running execution in this process; +Inf when none."
_INF = math.inf


class _Values:
    """Makes mmap values (one per sample) with the family's help text, through one value class."""

    def __init__(self, docs: Mapping[str, str]) -> None:
        # Built here rather than taken from prometheus_client.values.ValueClass, which is fixed when
        # prometheus_client is first imported, possibly before the variable was set.
        self._cls = MultiProcessValue()  # type: ignore[no-untyped-call]
        self.docs = docs

    def close(self) -> None:
        self._cls.close_all_files()

    def counter(self, metric: str, labelnames: tuple[str, ...], labelvalues: tuple[str, ...]) -> Any:
        return self._cls("counter", metric, metric + "_total", labelnames, labelvalues, self.docs[metric])

    def gauge(self, metric: str, mode: str, labelnames: tuple[str, ...], labelvalues: tuple[str, ...]) -> Any:
        doc = self.docs[metric]
        return self._cls("gauge", metric, metric, labelnames, labelvalues, doc, multiprocess_mode=mode)

    def histogram(
        self, metric: str, names: tuple[str, ...], labelvalues: tuple[str, ...], bounds: tuple[float, ...]
    ) -> _Histogram:
        return _Histogram(self, metric, names, labelvalues, bounds)


class _Histogram:
    """Every bucket written from the start, as prometheus_client does, so the exposition has them all."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(
        self,
        values: _Values,
        metric: str,
        labelnames: tuple[str, ...],
        labelvalues: tuple[str, ...],
        bounds: tuple[float, ...],
    ) -> None:
        doc = values.docs[metric]
        make = values._cls
        self.bounds = bounds
        self.buckets = [
            make("histogram", metric, metric + "_bucket", (*labelnames, "le"), (*labelvalues, le), doc)
            for le in map(floatToGoString, (*bounds, _INF))
        ]
        self.sum = make("histogram", metric, metric + "_sum", labelnames, labelvalues, doc)

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)].inc(1)
        self.sum.inc(value)


class _Counter:
    """What the recorder's rarely-updated counters need: ``labels(...).inc(n)``."""

    def __init__(self, values: _Values, metric: str, labelnames: tuple[str, ...]) -> None:
        self._values, self._metric, self._labelnames = values, metric, labelnames
        self._children: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def labels(self, *labelvalues: str) -> _Child:
        with self._lock:
            child = self._children.get(labelvalues)
            if child is None:
                value = self._values.counter(self._metric, self._labelnames, labelvalues)
                child = self._children[labelvalues] = _Child(value)
            return child


class _Child:
    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def inc(self, amount: float = 1) -> None:
        self._value.inc(amount)


class MultiprocessMetrics:
    """The multiprocess twin of :class:`~claude_exporter.exposition.collectors.Metrics`."""

    def __init__(self, values: _Values) -> None:
        self.label_overflow = _Counter(values, "claude_exporter_label_overflow", ("label",))
        self.unpriced_tokens = _Counter(values, "claude_exporter_unpriced_tokens", ("model",))
        self.internal_errors = _Counter(values, "claude_exporter_internal_errors", ("stage",))
        self.events = _Counter(values, "claude_exporter_events", ("source", "result"))

    def collectors(self) -> list[Any]:
        return []  # nothing registered: the files are the exposition


class MultiprocessRequestSeries(RequestSeries):
    """A request series that also writes each update to this process's files.

    The in-memory part stays: it is what the label admission reads (which values this series has seen).
    """

    __slots__ = ("_code", "_core", "_errors", "_retries", "_stops", "_ttft", "_values")

    def __init__(
        self,
        agent: str,
        model: str,
        duration_bounds: tuple[float, ...],
        ttft_bounds: tuple[float, ...],
        values: _Values,
    ) -> None:
        super().__init__(agent, model, duration_bounds, ttft_bounds)
        self._values = values
        self._core: tuple[Any, ...] | None = None
        self._ttft: _Histogram | None = None
        self._stops: dict[str, Any] = {}
        self._errors: dict[str, Any] = {}
        self._retries: dict[str, Any] = {}
        self._code: dict[tuple[str, str], Any] = {}

    def _key(self) -> tuple[str, str]:
        return (self.agent, self.model)

    def _core_values(self) -> tuple[Any, ...]:
        # Made on the first counted request, not at creation: the overflow series that only holds folded
        # open labels never shows request totals, as in a single process.
        core = self._core
        if core is None:
            v, am, key = self._values, ("agent", "model"), self._key()
            core = self._core = (
                v.counter("claude_requests", (*am, "outcome"), (*key, "success")),
                v.counter("claude_requests", (*am, "outcome"), (*key, "error")),
                v.histogram("claude_request_duration_seconds", am, key, self.duration.bounds),
                tuple(v.counter("claude_tokens", (*am, "type"), (*key, t)) for t in TOKEN_TYPES),
                v.counter("claude_cost_usd", am, key),
                v.counter("claude_rate_limited", am, key),
            )
        return core

    def _child(self, store: dict[Any, Any], metric: str, label: tuple[str, ...], value: Any) -> Any:
        child = store.get(value)
        if child is None:
            values = value if isinstance(value, tuple) else (value,)
            names = ("agent", "model", *label)
            child = store[value] = self._values.counter(metric, names, (*self._key(), *values))
        return child

    def finish(
        self,
        ok: bool,
        seconds: float,
        tokens: tuple[int, int, int, int] | None,
        cost: float,
        stop_reason: str | None,
        error_type: str | None,
        blocks: Iterable[tuple[str, str]],
        count: bool = True,
    ) -> None:
        blocks = tuple(blocks)
        super().finish(ok, seconds, tokens, cost, stop_reason, error_type, blocks, count)
        with self.lock:
            if count or tokens is not None:
                success, error, duration, token_values, cost_value, _ = self._core_values()
                if count:
                    (success if ok else error).inc(1)
                    duration.observe(seconds)
                if tokens is not None:
                    for value, n in zip(token_values, tokens, strict=True):
                        if n:
                            value.inc(n)
                    if cost:
                        cost_value.inc(cost)
            if stop_reason is not None:
                self._child(self._stops, "claude_stop_reasons", ("stop_reason",), stop_reason).inc(1)
            if error_type is not None:
                self._child(self._errors, "claude_errors", ("error_type",), error_type).inc(1)
            for key in blocks:
                self._child(self._code, "claude_code_blocks_executed", ("tool", "outcome"), key).inc(1)

    def add_retry(self, reason: str) -> None:
        super().add_retry(reason)
        with self.lock:
            self._child(self._retries, "claude_retries", ("reason",), reason).inc(1)

    def add_rate_limited(self) -> None:
        super().add_rate_limited()
        with self.lock:
            self._core_values()[5].inc(1)

    def add_ttft(self, seconds: float) -> None:
        super().add_ttft(seconds)
        with self.lock:
            ttft = self._ttft
            if ttft is None:  # only streaming series have the family, as in a single process
                ttft = self._ttft = self._values.histogram(
                    "claude_time_to_first_token_seconds", ("agent", "model"), self._key(), self.ttft.bounds
                )
            ttft.observe(seconds)


class MultiprocessExecSeries(ExecSeries):
    """An execution series that also writes each execution to this process's files."""

    __slots__ = ("_mp",)

    def __init__(
        self,
        agent: str,
        task: str,
        duration_bounds: tuple[float, ...],
        token_bounds: tuple[float, ...],
        request_bounds: tuple[float, ...],
        values: _Values,
    ) -> None:
        super().__init__(agent, task, duration_bounds, token_bounds, request_bounds)
        at, key = ("agent", "task"), (agent, task)
        self._mp = (
            values.counter("claude_executions", (*at, "outcome"), (*key, "success")),
            values.counter("claude_executions", (*at, "outcome"), (*key, "error")),
            values.histogram("claude_execution_duration_seconds", at, key, duration_bounds),
            values.histogram("claude_execution_tokens", (*at, "type"), (*key, "input"), token_bounds),
            values.histogram("claude_execution_tokens", (*at, "type"), (*key, "output"), token_bounds),
            values.histogram("claude_execution_requests", at, key, request_bounds),
        )

    def record(self, ok: bool, seconds: float, input_tokens: int, output_tokens: int, requests: int) -> None:
        super().record(ok, seconds, input_tokens, output_tokens, requests)
        success, error, duration, tokens_in, tokens_out, turns = self._mp
        with self.lock:
            (success if ok else error).inc(1)
            duration.observe(seconds)
            tokens_in.observe(input_tokens)
            tokens_out.observe(output_tokens)
            turns.observe(requests)


class _Live:
    """This process's in-flight counts and oldest running start per agent, written as live gauges."""

    def __init__(self, values: _Values) -> None:
        self._values = values
        self._lock = threading.Lock()
        self._requests: dict[str, Any] = {}
        self._executions: dict[tuple[str, str], Any] = {}
        self._oldest: dict[str, Any] = {}
        self._starts: dict[str, dict[object, float]] = {}

    def _gauge(self, store: dict[Any, Any], metric: str, mode: str, names: tuple[str, ...], key: Any) -> Any:
        gauge = store.get(key)
        if gauge is None:
            values = key if isinstance(key, tuple) else (key,)
            gauge = store[key] = self._values.gauge(metric, mode, names, values)
        return gauge

    def request(self, agent: str, delta: int) -> None:
        with self._lock:
            self._gauge(self._requests, "claude_requests_in_flight", "livesum", ("agent",), agent).inc(delta)

    def execution(self, key: object, agent: str, task: str, start: float | None) -> None:
        """An execution started (``start``: its perf_counter start) or finished (``start`` None)."""
        with self._lock:
            gauge = self._gauge(
                self._executions, "claude_executions_in_flight", "livesum", ("agent", "task"), (agent, task)
            )
            gauge.inc(1 if start is not None else -1)
            starts = self._starts.setdefault(agent, {})
            before = min(starts.values(), default=_INF)
            if start is not None:
                starts[key] = time.time() - (time.perf_counter() - start)
            else:
                starts.pop(key, None)
            after = min(starts.values(), default=_INF)
            if after != before or agent not in self._oldest:
                self._gauge(self._oldest, OLDEST_START, "livemin", ("agent",), agent).set(after)


class _RunningCalls(dict[int, Any]):
    """``Recorder.running_calls`` that also keeps the live gauges (a request outside any execution is an
    execution of its own, task "default")."""

    def __init__(self, live: _Live) -> None:
        super().__init__()
        self._live = live

    def __setitem__(self, key: int, call: Any) -> None:
        super().__setitem__(key, call)
        agent = call.labels.agent
        self._live.request(agent, 1)
        if call.execution is None:
            self._live.execution(("call", key), agent, "default", call.start)

    def pop(self, key: int, *default: Any) -> Any:
        call = super().pop(key, *default)
        if call is not None:
            agent = call.labels.agent
            self._live.request(agent, -1)
            if call.execution is None:
                self._live.execution(("call", key), agent, "default", None)
        return call


class _RunningExecutions(dict[int, Any]):
    """``Recorder.running_executions`` that also keeps the live gauges."""

    def __init__(self, live: _Live) -> None:
        super().__init__()
        self._live = live

    def __setitem__(self, key: int, ex: Any) -> None:
        super().__setitem__(key, ex)
        if ex.labels is not None:
            self._live.execution(("execution", key), ex.labels.agent, ex.labels.task, ex.start)

    def pop(self, key: int, *default: Any) -> Any:
        ex = super().pop(key, *default)
        if ex is not None and ex.labels is not None:
            self._live.execution(("execution", key), ex.labels.agent, ex.labels.task, None)
        return ex


class _RateLimitSink:
    """``Recorder.recent_headers`` in multiprocess mode: each response's headers are parsed on arrival
    and written as ``mostrecent`` gauges, since the scraped worker cannot read another's queue."""

    def __init__(self, values: _Values, parse: Any, fault: Any) -> None:
        self._values, self._parse, self._fault = values, parse, fault
        self._gauges: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def append(self, headers: Any) -> None:
        now = time.time()
        for resource, field, value in self._parse(headers, self._fault):
            with self._lock:
                gauge = self._gauges.get((resource, field))
                if gauge is None:
                    metric = _RATELIMIT_METRICS[field]
                    gauge = self._gauges[(resource, field)] = self._values.gauge(
                        metric, "mostrecent", ("resource",), (resource,)
                    )
            gauge.set(value, now)

    def __bool__(self) -> bool:
        return False  # nothing queued: RateLimits.refresh, if anything calls it, finds nothing to do


_RATELIMIT_METRICS = {
    "limit": "claude_ratelimit_limit",
    "remaining": "claude_ratelimit_remaining",
    "reset": "claude_ratelimit_reset_timestamp_seconds",
}


class MultiprocessBackend:
    """What the recorder builds on in multiprocess mode: series classes, counters and the live state
    that write through the mmap files in ``path``."""

    def __init__(self, path: str, docs: Mapping[str, str]) -> None:
        self.path = path
        self._values = _Values({**docs, OLDEST_START: OLDEST_HELP})
        self.metrics = MultiprocessMetrics(self._values)
        live = _Live(self._values)
        self.running_calls: dict[int, Any] = _RunningCalls(live)
        self.running_executions: dict[int, Any] = _RunningExecutions(live)

    def request_series(
        self, agent: str, model: str, duration_bounds: tuple[float, ...], ttft_bounds: tuple[float, ...]
    ) -> RequestSeries:
        return MultiprocessRequestSeries(agent, model, duration_bounds, ttft_bounds, self._values)

    def exec_series(
        self,
        agent: str,
        task: str,
        duration_bounds: tuple[float, ...],
        token_bounds: tuple[float, ...],
        request_bounds: tuple[float, ...],
    ) -> ExecSeries:
        bounds = (duration_bounds, token_bounds, request_bounds)
        return MultiprocessExecSeries(agent, task, *bounds, self._values)

    def close(self) -> None:
        """Close this backend's files (``uninstrument()``); what they hold stays on disk for the scrape."""
        self._values.close()

    def rate_limit_sink(self, parse: Any, fault: Any) -> Any:
        return _RateLimitSink(self._values, parse, fault)

    def build_info(self, labelvalues: tuple[str, str]) -> None:
        names = ("version", "anthropic_version")
        self._values.gauge("claude_exporter_build_info", "max", names, labelvalues).set(1)
