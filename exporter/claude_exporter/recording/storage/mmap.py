"""Storage in per-process mmap files, for multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``).

Every value is written through this process's files, named and keyed as prometheus_client names them
(``counter_<pid>.db``, ``gauge_livesum_<pid>.db``, ...), so its ``MultiProcessCollector`` and
``mark_process_dead`` work on them; the scraping process merges every worker's files
(:mod:`claude_exporter.exposition.multiprocess`). Gauges are written in their family's declared
``multiprocess_mode``:

- ``claude_requests_in_flight``, ``claude_executions_in_flight``: ``livesum``;
- the oldest running execution per agent: its start time (``livemin``), turned into an age at scrape
  time, since a process that is not scraped cannot keep an age current;
- ``claude_ratelimit_*``: ``mostrecent``, parsed from each response when it arrives;
- ``claude_exporter_build_info``: ``max``.

The series here keep no counts in memory, only a handle per value written (whose keys are the label
values seen, which is what the admission reads). The file format (``MmapedDict``, ``mmap_key``) is
prometheus_client's, so this is the one module of the recording layer that imports it.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.utils import floatToGoString

from claude_exporter.families import BY_NAME, FAMILIES
from claude_exporter.recording.ratelimit import GAUGES, parse_ratelimit, present
from claude_exporter.recording.storage.layout import EXEC_FIELDS, MISSES, REQUEST_FIELDS, TOKEN_TYPES

if TYPE_CHECKING:
    from claude_exporter.recording.usage import Usage

__all__ = ["OLDEST_START", "MmapStorage"]

# Written by each process, read by the scraping one and exposed as claude_execution_longest_running_seconds.
OLDEST_START = "claude_execution_oldest_start_timestamp_seconds"
_HELP = {
    **{family.base: family.help for family in FAMILIES},
    OLDEST_START: "Start (Unix time) of the agent's oldest running execution in a process; +Inf: none.",
}
_INF = math.inf
_DOUBLES = struct.Struct("dd").pack


def _base(family: str) -> str:
    return BY_NAME[family].base


class _Files:
    """This process's mmap files in ``path``, written under one lock taken once per update of a series
    rather than once per value (``with files:``).

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

    def counter(self, family: str, names: Sequence[str], values: Sequence[str]) -> _Value:
        base = _base(family)
        return self.value("counter", base, base + "_total", names, values)

    def gauge(self, metric: str, names: tuple[str, ...], values: tuple[str, ...], mode: str = "") -> _Value:
        """A gauge written in its family's declared ``multiprocess_mode`` (``mode`` for internal ones)."""
        mode = mode or BY_NAME[metric].multiprocess_mode
        return self.value("gauge_" + mode, metric, metric, names, values)

    def histogram(
        self, family: str, names: tuple[str, ...], values: tuple[str, ...], bounds: tuple[float, ...]
    ) -> _Histogram:
        return _Histogram(self, _base(family), names, values, bounds)

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
    """One sample's float in this process's file; written only under the files' lock.

    Its position in the file is looked up once; a write is one slice assignment into the mapping (read
    afresh, since the file remaps as it grows), as ``MmapedDict.write_value`` writes it.
    """

    __slots__ = ("_file", "_files", "_key", "_pos", "_prefix", "value")

    def __init__(self, files: _Files, prefix: str, key: str) -> None:
        self._files, self._prefix, self._key = files, prefix, key
        self.reopen()

    def reopen(self) -> None:
        self._file = self._files.file(self._prefix)
        self.value = self._file.read_value(self._key)[0]  # type: ignore[no-untyped-call]  # adds the key
        self._pos = self._file._positions[self._key]

    def add(self, amount: float) -> None:
        self.value = value = self.value + amount
        pos = self._pos
        self._file._m[pos : pos + 16] = _DOUBLES(value, 0.0)

    def set(self, value: float, timestamp: float = 0.0) -> None:
        self.value = value
        pos = self._pos
        self._file._m[pos : pos + 16] = _DOUBLES(value, timestamp)


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

    def observe(self, value: float, bucket: int = -1) -> None:
        self.buckets[bisect_left(self.bounds, value) if bucket < 0 else bucket].add(1)
        self.sum.add(value)

    def snapshot(self) -> tuple[list[int], float]:
        return [int(value.value) for value in self.buckets], self.sum.value


class _Counter:
    """One of the recorder's own counters (overflow, unpriced tokens, faults, events)."""

    __slots__ = ("_family", "_files", "_names", "values")

    def __init__(self, files: _Files, family: str) -> None:
        self._files, self._family, self._names = files, family, BY_NAME[family].labels
        self.values: dict[tuple[str, ...], _Value] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        with self._files:
            value = self.values.get(key)
            if value is None:
                value = self.values[key] = self._files.counter(self._family, self._names, key)
            value.add(amount)


class _RequestSeries:
    """A request series whose values live in this process's files."""

    __slots__ = (
        "_core",
        "_files",
        "agent",
        "code",
        "duration_bounds",
        "errors",
        "lone",
        "misses",
        "model",
        "rate_limited",
        "refusals",
        "retries",
        "stops",
        "tiers",
        "ttft",
        "ttft_bounds",
    )

    def __init__(
        self,
        agent: str,
        model: str,
        duration_bounds: tuple[float, ...],
        ttft_bounds: tuple[float, ...],
        files: _Files,
    ) -> None:
        self.agent, self.model = agent, model
        self.duration_bounds, self.ttft_bounds = duration_bounds, ttft_bounds
        self._files = files
        self._core: tuple[Any, ...] | None = None
        self.ttft: _Histogram | None = None
        # Keyed by label values, as in memory: the admission reads which values were seen.
        self.stops: dict[Any, _Value] = {}
        self.errors: dict[Any, _Value] = {}
        self.retries: dict[Any, _Value] = {}
        self.code: dict[Any, _Value] = {}
        self.rate_limited: dict[Any, _Value] = {}
        self.refusals: dict[Any, _Value] = {}
        self.tiers: dict[Any, _Value] = {}
        self.misses: dict[str, tuple[_Value, _Value]] = {}
        self.lone: _ExecSeries | None = None  # set by its agent's default execution series (lone_from)

    def _core_values(self) -> tuple[Any, ...]:
        # Made on the first counted request, not at creation: the overflow series that only holds folded
        # open labels never shows request totals, as in a single process.
        core = self._core
        if core is None:
            v, am, key = self._files, ("agent", "model"), (self.agent, self.model)
            outcomes, tokens = REQUEST_FIELDS["outcomes"], REQUEST_FIELDS["tokens"]
            core = self._core = (
                v.counter(outcomes, (*am, "outcome"), (*key, "success")),
                v.counter(outcomes, (*am, "outcome"), (*key, "error")),
                v.histogram(REQUEST_FIELDS["duration"], am, key, self.duration_bounds),
                tuple(v.counter(tokens, (*am, "type"), (*key, t)) for t in TOKEN_TYPES),
                v.counter(REQUEST_FIELDS["cost"], am, key),
                v.counter(REQUEST_FIELDS["savings"], am, key),
            )
            # A zero series per (agent, model) whatever the codes seen, so rate() reads a 0.
            if "none" not in self.rate_limited:
                self._child("rate_limited", "none")
        return core

    def _child(self, field: str, key: Any) -> _Value:
        store = getattr(self, field)
        child: _Value | None = store.get(key)
        if child is None:
            family = REQUEST_FIELDS[field]
            values = key if isinstance(key, tuple) else (key,)
            child = store[key] = self._files.counter(
                family, BY_NAME[family].labels, (self.agent, self.model, *values)
            )
        return child

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
        with self._files:
            success, failed, duration, token_values, cost_value, savings_value = (
                self._core or self._core_values()
            )
            (success if ok else failed).add(1)
            bucket = bisect_left(duration.bounds, seconds)
            duration.observe(seconds, bucket)
            if usage is not None:
                self._add_usage(token_values, usage)
                if cost:
                    cost_value.add(cost)
                if savings:
                    savings_value.add(savings)
                if tier is not None:
                    self._child("tiers", tier).add(cost)
            if stop_reason is not None:
                self._child("stops", stop_reason).add(1)
            if error is not None:
                self._child("errors", error).add(1)
            for key in blocks:
                self._child("code", key).add(1)
            if lone:  # the execution of its own that a lone request is, under the same lock
                executions = self.lone
                if executions is None:
                    raise RuntimeError("a lone request on a series no execution series reads")
                if usage is None:
                    executions.write(ok, seconds, 0, 0, 1, bucket)
                else:
                    executions.write(ok, seconds, usage.all_input, usage.output, 1, bucket)
        return bucket

    @staticmethod
    def _add_usage(token_values: tuple[_Value, ...], usage: Usage) -> None:
        for value, n in zip(
            token_values, (usage.input, usage.output, usage.cache_creation, usage.cache_read), strict=True
        ):
            if n:
                value.add(n)

    def add_usage(self, usage: Usage, cost: float, savings: float, tier: str | None = None) -> None:
        with self._files:
            _, _, _, token_values, cost_value, savings_value = self._core or self._core_values()
            self._add_usage(token_values, usage)
            if cost:
                cost_value.add(cost)
            if savings:
                savings_value.add(savings)
            if tier is not None:
                self._child("tiers", tier).add(cost)

    def add(self, field: str, key: Any, amount: int = 1) -> None:
        with self._files:
            self._child(field, key).add(amount)

    def add_cache_miss(self, reason: str, missed_tokens: int) -> None:
        with self._files:
            found = self.misses.get(reason)
            if found is None:
                values = (self.agent, self.model, reason)
                found = self.misses[reason] = (
                    self._files.counter(MISSES[0], BY_NAME[MISSES[0]].labels, values),
                    self._files.counter(MISSES[1], BY_NAME[MISSES[1]].labels, values),
                )
            found[0].add(1)
            if missed_tokens:
                found[1].add(missed_tokens)

    def add_ttft(self, seconds: float) -> None:
        with self._files:
            ttft = self.ttft
            if ttft is None:  # only streaming series have the family, as in a single process
                ttft = self.ttft = self._files.histogram(
                    REQUEST_FIELDS["ttft"], ("agent", "model"), (self.agent, self.model), self.ttft_bounds
                )
            ttft.observe(seconds)


class _ExecSeries:
    """An execution series whose values live in this process's files."""

    __slots__ = ("_files", "agent", "duration", "outcomes", "requests", "task", "tokens_in", "tokens_out")

    def __init__(
        self,
        agent: str,
        task: str,
        duration_bounds: tuple[float, ...],
        token_bounds: tuple[int, ...],
        request_bounds: tuple[int, ...],
        files: _Files,
    ) -> None:
        self.agent, self.task = agent, task
        self._files = files
        at, key = ("agent", "task"), (agent, task)
        bounds: dict[str, tuple[float, ...]] = {
            "duration": duration_bounds,
            "tokens_in": token_bounds,  # ints: compared with int counts, faster than floats
            "tokens_out": token_bounds,
            "requests": request_bounds,
        }
        outcomes = EXEC_FIELDS["outcomes"][0]
        with files:
            self.outcomes = (
                files.counter(outcomes, (*at, "outcome"), (*key, "success")),
                files.counter(outcomes, (*at, "outcome"), (*key, "error")),
            )
            made = {}
            for field, field_bounds in bounds.items():
                family, kind = EXEC_FIELDS[field]
                names, labels = (at, key) if kind is None else ((*at, "type"), (*key, kind))
                made[field] = files.histogram(family, names, labels, field_bounds)
        self.duration, self.tokens_in = made["duration"], made["tokens_in"]
        self.tokens_out, self.requests = made["tokens_out"], made["requests"]

    def record(
        self,
        ok: bool,
        seconds: float,
        input_tokens: int,
        output_tokens: int,
        requests: int,
        bucket: int = -1,
    ) -> None:
        with self._files:
            self.write(ok, seconds, input_tokens, output_tokens, requests, bucket)

    def write(
        self, ok: bool, seconds: float, input_tokens: int, output_tokens: int, requests: int, bucket: int
    ) -> None:
        """:meth:`record` for a caller that holds the files' lock."""
        self.outcomes[0 if ok else 1].add(1)
        self.duration.observe(seconds, bucket)
        self.tokens_in.observe(input_tokens)
        self.tokens_out.observe(output_tokens)
        self.requests.observe(requests, 0 if requests == 1 else -1)

    def lone_from(self, series: _RequestSeries) -> None:
        """Let ``series`` write its lone requests as executions of this series, in its lock section."""
        series.lone = self

    def snapshot(self) -> dict[str, Any]:
        """This process's own values (the health window's view), shaped as in memory."""
        with self._files:
            return {
                "outcomes": [int(value.value) for value in self.outcomes],
                **{
                    field: getattr(self, field).snapshot()
                    for field in ("duration", "tokens_in", "tokens_out", "requests")
                },
            }


class _Live:
    """This process's in-flight counts and oldest running start per agent, written as live gauges."""

    def __init__(self, files: _Files) -> None:
        self._files = files
        self._requests: dict[str, _Value] = {}
        self._executions: dict[tuple[str, str], _Value] = {}
        self._oldest: dict[str, _Value] = {}
        self._starts: dict[str, dict[object, float]] = {}

    def _gauge(self, store: dict[Any, Any], metric: str, mode: str, names: tuple[str, ...], key: Any) -> Any:
        gauge = store.get(key)
        if gauge is None:
            values = key if isinstance(key, tuple) else (key,)
            gauge = store[key] = self._files.gauge(metric, names, values, mode)
        return gauge

    def request(self, agent: str, delta: int, key: object, start: float | None, lone: bool) -> None:
        """A request started (``delta`` 1, ``start`` its perf_counter start) or finished (-1, None); a
        ``lone`` one (outside any execution) is also an execution of its own. One lock section."""
        with self._files:
            gauge = self._requests.get(agent)
            if gauge is None:
                gauge = self._gauge(self._requests, "claude_requests_in_flight", "livesum", ("agent",), agent)
            gauge.add(delta)
            if lone:
                self._execution(key, agent, "default", start)

    def execution(self, key: object, agent: str, task: str, start: float | None) -> None:
        """An execution started (``start``: its perf_counter start) or finished (``start`` None)."""
        with self._files:
            self._execution(key, agent, task, start)

    def _execution(self, key: object, agent: str, task: str, start: float | None) -> None:
        """(The caller holds the files' lock.)"""
        gauge = self._gauge(
            self._executions, "claude_executions_in_flight", "livesum", ("agent", "task"), (agent, task)
        )
        gauge.add(1 if start is not None else -1)
        starts = self._starts.get(agent)
        if starts is None:
            starts = self._starts[agent] = {}
        # The oldest start changes only when the oldest starts or ends: no scan otherwise.
        if start is not None:
            begun = time.time() - (time.perf_counter() - start)
            starts[key] = begun
            if len(starts) > 1 and begun >= self._oldest[agent].value:
                return
            after = begun
        else:
            begun = starts.pop(key, _INF)
            oldest = self._oldest.get(agent)
            if oldest is not None and begun > oldest.value:
                return
            after = min(starts.values(), default=_INF)
        self._gauge(self._oldest, OLDEST_START, "livemin", ("agent",), agent).set(after)


class _RunningCalls(dict[int, Any]):
    """``Recorder.running_calls`` that also keeps the live gauges (a request outside any execution is an
    execution of its own, task "default")."""

    def __init__(self, live: _Live) -> None:
        super().__init__()
        self._live = live

    def __setitem__(self, key: int, call: Any) -> None:
        super().__setitem__(key, call)
        self._live.request(call.labels.agent, 1, key, call.start, call.execution is None)

    def pop(self, key: int, *default: Any) -> Any:
        call = super().pop(key, *default)
        if call is not None:
            self._live.request(call.labels.agent, -1, key, None, call.execution is None)
        return call


class _RunningExecutions(dict[int, Any]):
    """``Recorder.running_executions`` that also keeps the live gauges."""

    def __init__(self, live: _Live) -> None:
        super().__init__()
        self._live = live

    def __setitem__(self, key: int, ex: Any) -> None:
        super().__setitem__(key, ex)
        if ex.series is not None:
            self._live.execution(key, ex.series.agent, ex.series.task, ex.start)

    def pop(self, key: int, *default: Any) -> Any:
        ex = super().pop(key, *default)
        if ex is not None and ex.series is not None:
            self._live.execution(key, ex.series.agent, ex.series.task, None)
        return ex


class _RateLimitSink:
    """``Recorder.recent_headers`` in multiprocess mode: each response's headers are parsed on arrival
    and written as ``mostrecent`` gauges, since the scraped worker cannot read another's queue."""

    def __init__(self, files: _Files, fault: Callable[[str], None]) -> None:
        self._files, self._fault = files, fault
        self._gauges: dict[tuple[str, str, str], _Value] = {}

    def append(self, item: tuple[str, Any]) -> None:
        model, headers = item
        if not present(headers):
            return
        found = list(parse_ratelimit(headers, self._fault))
        if not found:
            return
        now = time.time()
        with self._files:
            for resource, field, value in found:
                gauge = self._gauges.get((model, resource, field))
                if gauge is None:
                    gauge = self._gauges[(model, resource, field)] = self._files.gauge(
                        GAUGES[field], ("model", "resource"), (model, resource)
                    )
                gauge.set(value, now)

    def __bool__(self) -> bool:
        return False  # nothing queued: the scrape finds nothing to parse in this process


class MmapStorage:
    """Series classes, counters, running-work maps and a rate-limit sink that write through the mmap
    files in ``path``."""

    def __init__(self, path: str) -> None:
        self.path: str | None = path
        self._files = files = _Files(path)
        live = _Live(files)
        self.running_calls: dict[int, Any] = _RunningCalls(live)
        self.running_executions: dict[int, Any] = _RunningExecutions(live)

    def counter(self, family: str) -> _Counter:
        return _Counter(self._files, family)

    def request_series(
        self, agent: str, model: str, duration_bounds: tuple[float, ...], ttft_bounds: tuple[float, ...]
    ) -> _RequestSeries:
        return _RequestSeries(agent, model, duration_bounds, ttft_bounds, self._files)

    def exec_series(
        self,
        agent: str,
        task: str,
        duration_bounds: tuple[float, ...],
        token_bounds: tuple[int, ...],
        request_bounds: tuple[int, ...],
    ) -> _ExecSeries:
        return _ExecSeries(agent, task, duration_bounds, token_bounds, request_bounds, self._files)

    def rate_limit_sink(self, fault: Callable[[str], None]) -> Any:
        return _RateLimitSink(self._files, fault)

    def build_info(self, labelvalues: tuple[str, str]) -> None:
        with self._files:
            self._files.gauge(
                "claude_exporter_build_info", ("version", "anthropic_version"), labelvalues
            ).set(1)

    def close(self) -> None:
        """Close the files (``uninstrument()``); what they hold stays on disk for the scrape."""
        self._files.close()
