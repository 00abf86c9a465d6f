"""Multiprocess mode: the claude_* families across worker processes, as prometheus_client does it.

Every family is written through prometheus_client's per-process mmap files, and read back, merged over
the workers, when any of them is scraped.

With ``PROMETHEUS_MULTIPROC_DIR`` set when the recorder is opened (``instrument()``, ``serve``), the
recorder is built on a :class:`MultiprocessBackend` instead of the in-memory store alone: each update
also goes to this process's files (named and keyed as prometheus_client names them, so its
``MultiProcessCollector`` and ``mark_process_dead`` work on them), and the registry gets
:class:`MultiprocessCollector` instead of the in-memory collector. Counters and histograms are summed
over the workers, dead ones included; gauges combine by their family's declared ``multiprocess_mode``:

- ``claude_requests_in_flight``, ``claude_executions_in_flight``: ``livesum``;
- ``claude_execution_longest_running_seconds`` (declared ``livemax``: the oldest over live workers): each
  process writes the start time of its oldest running execution per agent (``livemin``), turned into an
  age at scrape time, since a process that is not scraped cannot keep an age current;
- ``claude_ratelimit_*``: ``mostrecent``, parsed from each response when it arrives;
- ``claude_exporter_build_info``: ``max``.

The choice, and the directory, are fixed once; a single process never runs this module.
"""

from __future__ import annotations

import glob
import math
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from claude_exporter.exposition.collectors import RATELIMIT_GAUGES, family_flags, parse_ratelimit
from claude_exporter.families import BY_NAME, FAMILIES
from claude_exporter.recording.series import TOKEN_TYPES, ExecSeries, LabelledCounter, RequestSeries

if TYPE_CHECKING:
    from claude_exporter.recording.usage import Usage

__all__ = ["OLDEST_START", "MultiprocessBackend", "MultiprocessCollector"]

# Written by each process, read by the scraping one and exposed as claude_execution_longest_running_seconds.
OLDEST_START = "claude_execution_oldest_start_timestamp_seconds"
_HELP = {
    **{family.base: family.help for family in FAMILIES},
    OLDEST_START: "Start (Unix time) of the agent's oldest running execution in a process; +Inf: none.",
}
_INF = math.inf


class _Files:
    """This process's mmap files in ``path``, named as prometheus_client names them (``counter_<pid>.db``,
    ``gauge_livesum_<pid>.db``, ...), so its ``MultiProcessCollector`` and ``mark_process_dead`` read them.

    Written under one lock, taken once per update of a series rather than once per value (``with files:``).
    A forked child starts its own files at zero, as prometheus_client's values do; the fork is noticed
    through ``os.register_at_fork``, not by a ``getpid()`` system call on every write.
    """

    def __init__(self, path: str) -> None:
        self.path = path
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
        key = mmap_key(metric, sample, list(names), list(values), _HELP[metric])
        value = _Value(self, prefix, key)
        self._values.append(value)
        return value

    def counter(self, metric: str, names: tuple[str, ...], values: tuple[str, ...]) -> _Value:
        return self.value("counter", metric, metric + "_total", names, values)

    def gauge(self, metric: str, names: tuple[str, ...], values: tuple[str, ...], mode: str = "") -> _Value:
        """A gauge written in its family's declared ``multiprocess_mode`` (``mode`` for internal ones)."""
        mode = mode or BY_NAME[metric].multiprocess_mode
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


class MultiprocessCounter(LabelledCounter):
    """One of the recorder's own counters (overflow, unpriced tokens, faults, events), also written to
    this process's files."""

    __slots__ = ("_files", "_metric", "_names", "_values")

    def __init__(self, files: _Files, family: str) -> None:
        super().__init__()
        self._files, self._metric, self._names = files, BY_NAME[family].base, BY_NAME[family].labels
        self._values: dict[tuple[str, ...], _Value] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        super().inc(key, amount)
        with self._files:
            value = self._values.get(key)
            if value is None:
                value = self._values[key] = self._files.counter(self._metric, self._names, key)
            value.add(amount)


class MultiprocessRequestSeries(RequestSeries):
    """A request series that also writes each update to this process's files.

    The in-memory part stays: it is what the label admission reads (which values this series has seen).
    """

    __slots__ = (
        "_code",
        "_core",
        "_errors",
        "_files",
        "_limited",
        "_misses",
        "_refusals",
        "_retries",
        "_stops",
        "_ttft",
    )

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
        self._errors: dict[tuple[str, str], Any] = {}
        self._retries: dict[tuple[str, str], Any] = {}
        self._code: dict[tuple[str, str], Any] = {}
        self._limited: dict[str, Any] = {}
        self._misses: dict[str, tuple[Any, Any]] = {}
        self._refusals: dict[str, Any] = {}

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
                v.counter("claude_rate_limited", (*am, "error_code"), (*key, "none")),
                v.counter("claude_cache_savings_usd", am, key),
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
        usage: Usage | None,
        cost: float,
        stop_reason: str | None,
        error: tuple[str, str] | None,
        blocks: Iterable[tuple[str, str]],
        count: bool = True,
    ) -> None:
        blocks = tuple(blocks)
        super().finish(ok, seconds, usage, cost, stop_reason, error, blocks, count)
        with self._files:
            if count or usage is not None:
                success, failed, duration, token_values, cost_value, _, _ = self._core_values()
                if count:
                    (success if ok else failed).add(1)
                    duration.observe(seconds)
                if usage is not None:
                    tokens = (usage.input, usage.output, usage.cache_creation, usage.cache_read)
                    for value, n in zip(token_values, tokens, strict=True):
                        if n:
                            value.add(n)
                    if cost:
                        cost_value.add(cost)
            if stop_reason is not None:
                self._child(self._stops, "claude_stop_reasons", ("stop_reason",), stop_reason).add(1)
            if error is not None:
                self._child(self._errors, "claude_errors", ("error_type", "error_code"), error).add(1)
            for key in blocks:
                self._child(self._code, "claude_code_blocks_executed", ("tool", "outcome"), key).add(1)

    def add_retry(self, key: tuple[str, str]) -> None:
        super().add_retry(key)
        with self._files:
            self._child(self._retries, "claude_retries", ("reason", "error_code"), key).add(1)

    def add_rate_limited(self, code: str) -> None:
        super().add_rate_limited(code)
        with self._files:
            if code == "none":
                self._core_values()[5].add(1)
            else:
                self._child(self._limited, "claude_rate_limited", ("error_code",), code).add(1)

    def add_cache_miss(self, reason: str, missed_tokens: int) -> None:
        super().add_cache_miss(reason, missed_tokens)
        with self._files:
            found = self._misses.get(reason)
            if found is None:
                names, values = ("agent", "model", "reason"), (*self._key(), reason)
                found = self._misses[reason] = (
                    self._files.counter("claude_cache_misses", names, values),
                    self._files.counter("claude_cache_missed_input_tokens", names, values),
                )
            found[0].add(1)
            if missed_tokens:
                found[1].add(missed_tokens)

    def add_refusal(self, category: str) -> None:
        super().add_refusal(category)
        with self._files:
            self._child(self._refusals, "claude_refusals", ("category",), category).add(1)

    def add_savings(self, usd: float) -> None:
        super().add_savings(usd)
        with self._files:
            self._core_values()[6].add(usd)

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
            gauge = store[key] = self._files.gauge(metric, names, values, mode)
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
        if ex.series is not None:
            self._live.execution(("execution", key), ex.series.agent, ex.series.task, ex.start)

    def pop(self, key: int, *default: Any) -> Any:
        ex = super().pop(key, *default)
        if ex is not None and ex.series is not None:
            self._live.execution(("execution", key), ex.series.agent, ex.series.task, None)
        return ex


class _RateLimitSink:
    """``Recorder.recent_headers`` in multiprocess mode: each response's headers are parsed on arrival
    and written as ``mostrecent`` gauges, since the scraped worker cannot read another's queue."""

    def __init__(self, files: _Files, fault: Callable[[str], None]) -> None:
        self._files, self._fault = files, fault
        self._gauges: dict[tuple[str, str, str], _Value] = {}

    def append(self, item: tuple[str, Any]) -> None:
        model, headers = item
        found = list(parse_ratelimit(headers, self._fault))
        if not found:
            return
        now = time.time()
        with self._files:
            for resource, field, value in found:
                gauge = self._gauges.get((model, resource, field))
                if gauge is None:
                    gauge = self._gauges[(model, resource, field)] = self._files.gauge(
                        RATELIMIT_GAUGES[field], ("model", "resource"), (model, resource)
                    )
                gauge.set(value, now)

    def __bool__(self) -> bool:
        return False  # nothing queued: the in-memory RateLimits finds nothing to parse


class MultiprocessBackend:
    """What the recorder builds on in multiprocess mode: series classes, counters, running-work maps
    and a rate-limit sink that write through the mmap files in ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._files = files = _Files(path)
        live = _Live(files)
        self.running_calls: dict[int, Any] = _RunningCalls(live)
        self.running_executions: dict[int, Any] = _RunningExecutions(live)
        self.overflow = MultiprocessCounter(files, "claude_exporter_label_overflow_total")
        self.changes = MultiprocessCounter(files, "claude_exporter_label_changes_total")
        self.unpriced = MultiprocessCounter(files, "claude_exporter_unpriced_tokens_total")
        self.internal_errors = MultiprocessCounter(files, "claude_exporter_internal_errors_total")
        self.events = MultiprocessCounter(files, "claude_exporter_events_total")

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

    def rate_limit_sink(self, fault: Callable[[str], None]) -> Any:
        return _RateLimitSink(self._files, fault)

    def build_info(self, labelvalues: tuple[str, str]) -> None:
        with self._files:
            self._files.gauge(
                "claude_exporter_build_info", ("version", "anthropic_version"), labelvalues
            ).set(1)

    def close(self) -> None:
        """Close this backend's files (``uninstrument()``); what they hold stays on disk for the scrape."""
        self._files.close()


class MultiprocessCollector(Collector):
    """Every worker's claude_* families from the files in ``path``, with the agents' ``metrics:`` lists
    applied as the in-memory collector applies them. Other families in the directory (an application's
    own multiprocess metrics) are left to the application's own collector."""

    def __init__(
        self, path: str, enabled: Callable[[str, str], bool] | None = None, local: Any = None
    ) -> None:
        self._path = path
        self._enabled = enabled or (lambda agent, group: True)
        self._local = local  # this process's RecorderCollector, for what only it records

    def describe(self) -> Iterable[Metric]:
        return []  # names vary with what the workers wrote; reading the files to list them is a scrape

    def collect(self) -> Iterable[Metric]:
        files = glob.glob(os.path.join(self._path, "*.db"))
        now = time.time()
        flags = family_flags(self._enabled)
        agents: set[str] = set()
        for metric in MultiProcessCollector.merge(files, accumulate=True):  # type: ignore[no-untyped-call]
            if metric.name == OLDEST_START:
                yield _longest_running(metric, now)
                continue
            family = _BY_BASE.get(metric.name)
            if family is None:
                continue
            if metric.name in ("claude_requests", "claude_executions"):
                agents.update(s.labels["agent"] for s in metric.samples if "agent" in s.labels)
            if family.enabled_by:
                metric.samples = [s for s in metric.samples if _on(flags, family.name, s.labels)]
            yield metric
        if self._local is not None:
            yield from self._local.claude_code_families(frozenset(agents))


_BY_BASE = {family.base: family for family in FAMILIES}
_TOKEN_FAMILIES = ("claude_tokens_total", "claude_execution_tokens")


def _on(flags: Callable[[str], dict[str, bool]], family: str, labels: dict[str, str]) -> bool:
    agent = labels.get("agent")
    if agent is None:
        return True
    on = flags(agent)
    if family in _TOKEN_FAMILIES:
        return on.get(labels.get("type", ""), True)
    return on[family]


def _longest_running(oldest: Metric, now: float) -> Metric:
    family = BY_NAME["claude_execution_longest_running_seconds"]
    out = GaugeMetricFamily(family.name, family.help, labels=family.labels)
    for sample in sorted(oldest.samples, key=lambda s: s.labels.get("agent", "")):
        start = sample.value
        out.add_metric((sample.labels["agent"],), max(0.0, now - start) if math.isfinite(start) else 0.0)
    return out
