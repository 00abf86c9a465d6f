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

The choice is made once, in ``instrument()``, and so is the directory; a single process never runs this
module.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.utils import floatToGoString

from claude_exporter.recording.series import TOKEN_TYPES, ExecSeries, RequestSeries

__all__ = ["OLDEST_START", "MultiprocessBackend"]

# Written by each process, read by the scraping one and exposed as claude_execution_longest_running_seconds.
OLDEST_START = "claude_execution_oldest_start_timestamp_seconds"
OLDEST_HELP = "Start (Unix time) of the agent's oldest running execution in this process; +Inf when none."
_INF = math.inf


class _Files:
    """This process's mmap files in ``path``, named as prometheus_client names them (``counter_<pid>.db``,
    ``gauge_livesum_<pid>.db``, ...), so its ``MultiProcessCollector`` and ``mark_process_dead`` read them.

    Written under one lock, taken once per update of a series rather than once per value (``with files:``).
    A forked child starts its own files at zero, as prometheus_client's values do; the fork is noticed
    through ``os.register_at_fork``, not by a ``getpid()`` system call on every write.
    """

    def __init__(self, path: str, docs: Mapping[str, str]) -> None:
        self.path = path
        self.docs = docs
        self.lock = threading.Lock()
        self._files: dict[str, MmapedDict] = {}
        self._values: list[_Value] = []
        self._forked = False
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forked(me))

    def _after_fork(self) -> None:
        self.lock = threading.Lock()  # a lock held by a thread that did not survive the fork
        self._forked = True

    def __enter__(self) -> _Files:
        self.lock.acquire()
        if self._forked:
            self._forked = False
            self._files.clear()  # the parent's mappings: left to the parent
            for value in self._values:
                value.reopen()
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def file(self, prefix: str) -> MmapedDict:
        found = self._files.get(prefix)
        if found is None:
            name = os.path.join(self.path, f"{prefix}_{os.getpid()}.db")
            found = self._files[prefix] = MmapedDict(name)  # type: ignore[no-untyped-call]
        return found

    def value(
        self, prefix: str, metric: str, sample: str, names: Iterable[str], values: Iterable[str]
    ) -> _Value:
        """A new value (caller holds the lock): its key written at 0 now, so the series shows at once."""
        key = mmap_key(metric, sample, list(names), list(values), self.docs[metric])
        value = _Value(self, prefix, key)
        self._values.append(value)
        return value

    def counter(self, metric: str, names: tuple[str, ...], values: tuple[str, ...]) -> _Value:
        return self.value("counter", metric, metric + "_total", names, values)

    def gauge(self, metric: str, mode: str, names: tuple[str, ...], values: tuple[str, ...]) -> _Value:
        return self.value("gauge_" + mode, metric, metric, names, values)

    def histogram(
        self, metric: str, names: tuple[str, ...], values: tuple[str, ...], bounds: tuple[float, ...]
    ) -> _Histogram:
        return _Histogram(self, metric, names, values, bounds)

    def close(self) -> None:
        with self.lock:
            for mapped in self._files.values():
                mapped.close()  # type: ignore[no-untyped-call]
            self._files.clear()


def _forked(ref: weakref.ref[_Files]) -> None:
    files = ref()
    if files is not None:
        files._after_fork()


class _Value:
    """One sample's float in this process's file; written only under the files' lock."""

    __slots__ = ("_file", "_files", "_key", "_prefix", "value")

    def __init__(self, files: _Files, prefix: str, key: str) -> None:
        self._files, self._prefix, self._key = files, prefix, key
        self.reopen()

    def reopen(self) -> None:
        self._file = self._files.file(self._prefix)
        self.value = self._file.read_value(self._key)[0]  # type: ignore[no-untyped-call]

    def add(self, amount: float) -> None:
        self.value += amount
        self._file.write_value(self._key, self.value, 0.0)  # type: ignore[no-untyped-call]

    def set(self, value: float, timestamp: float = 0.0) -> None:
        self.value = value
        self._file.write_value(self._key, value, timestamp)  # type: ignore[no-untyped-call]


class _Histogram:
    """Every bucket written from the start, as prometheus_client does, so the exposition has them all."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(
        self,
        files: _Files,
        metric: str,
        names: tuple[str, ...],
        values: tuple[str, ...],
        bounds: tuple[float, ...],
    ) -> None:
        self.bounds = bounds
        self.buckets = [
            files.value("histogram", metric, metric + "_bucket", (*names, "le"), (*values, le))
            for le in map(floatToGoString, (*bounds, _INF))
        ]
        self.sum = files.value("histogram", metric, metric + "_sum", names, values)

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)].add(1)
        self.sum.add(value)


class _Counter:
    """What the recorder's rarely-updated counters need: ``labels(...).inc(n)``."""

    def __init__(self, files: _Files, metric: str, names: tuple[str, ...]) -> None:
        self._files, self._metric, self._names = files, metric, names
        self._children: dict[tuple[str, ...], _Child] = {}

    def labels(self, *values: str) -> _Child:
        with self._files:
            child = self._children.get(values)
            if child is None:
                child = self._children[values] = _Child(
                    self._files, self._files.counter(self._metric, self._names, values)
                )
            return child


class _Child:
    __slots__ = ("_files", "_value")

    def __init__(self, files: _Files, value: _Value) -> None:
        self._files, self._value = files, value

    def inc(self, amount: float = 1) -> None:
        with self._files:
            self._value.add(amount)


class MultiprocessMetrics:
    """The multiprocess twin of :class:`~claude_exporter.exposition.collectors.Metrics`."""

    def __init__(self, files: _Files) -> None:
        self.label_overflow = _Counter(files, "claude_exporter_label_overflow", ("label",))
        self.unpriced_tokens = _Counter(files, "claude_exporter_unpriced_tokens", ("model",))
        self.internal_errors = _Counter(files, "claude_exporter_internal_errors", ("stage",))
        self.events = _Counter(files, "claude_exporter_events", ("source", "result"))

    def collectors(self) -> list[Any]:
        return []  # nothing registered: the files are the exposition


class MultiprocessRequestSeries(RequestSeries):
    """A request series that also writes each update to this process's files.

    The in-memory part stays: it is what the label admission reads (which values this series has seen).
    """

    __slots__ = ("_code", "_core", "_errors", "_files", "_retries", "_stops", "_ttft")

    def __init__(
        self,
        agent: str,
        model: str,
        duration_bounds: tuple[float, ...],
        ttft_bounds: tuple[float, ...],
        files: _Files,
    ) -> None:
        super().__init__(agent, model, duration_bounds, ttft_bounds)
        self._files = files
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
            v, am, key = self._files, ("agent", "model"), self._key()
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
            child = store[value] = self._files.counter(metric, names, (*self._key(), *values))
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
        with self._files:
            if count or tokens is not None:
                success, error, duration, token_values, cost_value, _ = self._core_values()
                if count:
                    (success if ok else error).add(1)
                    duration.observe(seconds)
                if tokens is not None:
                    for value, n in zip(token_values, tokens, strict=True):
                        if n:
                            value.add(n)
                    if cost:
                        cost_value.add(cost)
            if stop_reason is not None:
                self._child(self._stops, "claude_stop_reasons", ("stop_reason",), stop_reason).add(1)
            if error_type is not None:
                self._child(self._errors, "claude_errors", ("error_type",), error_type).add(1)
            for key in blocks:
                self._child(self._code, "claude_code_blocks_executed", ("tool", "outcome"), key).add(1)

    def add_retry(self, reason: str) -> None:
        super().add_retry(reason)
        with self._files:
            self._child(self._retries, "claude_retries", ("reason",), reason).add(1)

    def add_rate_limited(self) -> None:
        super().add_rate_limited()
        with self._files:
            self._core_values()[5].add(1)

    def add_ttft(self, seconds: float) -> None:
        super().add_ttft(seconds)
        with self._files:
            ttft = self._ttft
            if ttft is None:  # only streaming series have the family, as in a single process
                ttft = self._ttft = self._files.histogram(
                    "claude_time_to_first_token_seconds", ("agent", "model"), self._key(), self.ttft.bounds
                )
            ttft.observe(seconds)


class MultiprocessExecSeries(ExecSeries):
    """An execution series that also writes each execution to this process's files."""

    __slots__ = ("_files", "_mp")

    def __init__(
        self,
        agent: str,
        task: str,
        duration_bounds: tuple[float, ...],
        token_bounds: tuple[float, ...],
        request_bounds: tuple[float, ...],
        files: _Files,
    ) -> None:
        super().__init__(agent, task, duration_bounds, token_bounds, request_bounds)
        at, key = ("agent", "task"), (agent, task)
        self._files = files
        with files:
            self._mp = (
                files.counter("claude_executions", (*at, "outcome"), (*key, "success")),
                files.counter("claude_executions", (*at, "outcome"), (*key, "error")),
                files.histogram("claude_execution_duration_seconds", at, key, duration_bounds),
                files.histogram("claude_execution_tokens", (*at, "type"), (*key, "input"), token_bounds),
                files.histogram("claude_execution_tokens", (*at, "type"), (*key, "output"), token_bounds),
                files.histogram("claude_execution_requests", at, key, request_bounds),
            )

    def record(self, ok: bool, seconds: float, input_tokens: int, output_tokens: int, requests: int) -> None:
        super().record(ok, seconds, input_tokens, output_tokens, requests)
        success, error, duration, tokens_in, tokens_out, turns = self._mp
        with self._files:
            (success if ok else error).add(1)
            duration.observe(seconds)
            tokens_in.observe(input_tokens)
            tokens_out.observe(output_tokens)
            turns.observe(requests)


class _Live:
    """This process's in-flight counts and oldest running start per agent, written as live gauges."""

    def __init__(self, files: _Files) -> None:
        self._files = files
        self._requests: dict[str, Any] = {}
        self._executions: dict[tuple[str, str], Any] = {}
        self._oldest: dict[str, Any] = {}
        self._starts: dict[str, dict[object, float]] = {}

    def _gauge(self, store: dict[Any, Any], metric: str, mode: str, names: tuple[str, ...], key: Any) -> Any:
        gauge = store.get(key)
        if gauge is None:
            values = key if isinstance(key, tuple) else (key,)
            gauge = store[key] = self._files.gauge(metric, mode, names, values)
        return gauge

    def request(self, agent: str, delta: int) -> None:
        with self._files:
            self._gauge(self._requests, "claude_requests_in_flight", "livesum", ("agent",), agent).add(delta)

    def execution(self, key: object, agent: str, task: str, start: float | None) -> None:
        """An execution started (``start``: its perf_counter start) or finished (``start`` None)."""
        with self._files:
            gauge = self._gauge(
                self._executions, "claude_executions_in_flight", "livesum", ("agent", "task"), (agent, task)
            )
            gauge.add(1 if start is not None else -1)
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

    def __init__(self, files: _Files, parse: Any, fault: Any) -> None:
        self._files, self._parse, self._fault = files, parse, fault
        self._gauges: dict[tuple[str, str], _Value] = {}

    def append(self, headers: Any) -> None:
        now = time.time()
        found = list(self._parse(headers, self._fault))
        if not found:
            return
        with self._files:
            for resource, field, value in found:
                gauge = self._gauges.get((resource, field))
                if gauge is None:
                    gauge = self._gauges[(resource, field)] = self._files.gauge(
                        _RATELIMIT_METRICS[field], "mostrecent", ("resource",), (resource,)
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
        self._files = _Files(path, {**docs, OLDEST_START: OLDEST_HELP})
        self.metrics = MultiprocessMetrics(self._files)
        live = _Live(self._files)
        self.running_calls: dict[int, Any] = _RunningCalls(live)
        self.running_executions: dict[int, Any] = _RunningExecutions(live)

    def request_series(
        self, agent: str, model: str, duration_bounds: tuple[float, ...], ttft_bounds: tuple[float, ...]
    ) -> RequestSeries:
        return MultiprocessRequestSeries(agent, model, duration_bounds, ttft_bounds, self._files)

    def exec_series(
        self,
        agent: str,
        task: str,
        duration_bounds: tuple[float, ...],
        token_bounds: tuple[float, ...],
        request_bounds: tuple[float, ...],
    ) -> ExecSeries:
        bounds = (duration_bounds, token_bounds, request_bounds)
        return MultiprocessExecSeries(agent, task, *bounds, self._files)

    def close(self) -> None:
        """Close this backend's files (``uninstrument()``); what they hold stays on disk for the scrape."""
        self._files.close()

    def rate_limit_sink(self, parse: Any, fault: Any) -> Any:
        return _RateLimitSink(self._files, parse, fault)

    def build_info(self, labelvalues: tuple[str, str]) -> None:
        with self._files:
            names = ("version", "anthropic_version")
            self._files.gauge("claude_exporter_build_info", "max", names, labelvalues).set(1)
