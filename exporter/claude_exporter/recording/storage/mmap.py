"""Storage in per-process mmap files, for multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``).

Every value is written through this process's files, keyed as prometheus_client keys them and named as
it names them with a suffix of their own (``counter_<pid>-claude.db``, ``gauge_livesum_<pid>-claude.db``,
...: :func:`file_name`). The suffix keeps them apart from the application's own multiprocess metrics in
the same directory: two ``MmapedDict`` on one file in one process each keep their own idea of how much of
it is used and write over the other's entries. prometheus_client's ``MultiProcessCollector`` still reads
them (it takes the type and a gauge's mode from the name's first ``_``-separated parts); its
``mark_process_dead`` matches the unsuffixed name only, so the exporter has its own
(:func:`claude_exporter.exposition.multiprocess.mark_process_dead`). The scraping process merges every
worker's files (:mod:`claude_exporter.exposition.multiprocess`). Gauges are written in their family's declared
``multiprocess_mode``:

- ``claude_requests_in_flight``, ``claude_executions_in_flight``: ``livesum``;
- the oldest running execution per agent: its start time (``livemin``), turned into an age at scrape
  time, since a process that is not scraped cannot keep an age current;
- ``claude_ratelimit_*``: ``mostrecent``, parsed from each response when it arrives;
- ``claude_exporter_build_info``: ``max``.

The series here keep no counts in memory, only a handle per value written (whose keys are the label
values seen, which is what the admission reads). The file format (``MmapedDict``, ``mmap_key``) is
prometheus_client's, so this is the one module of the recording layer that imports it.

A write into a mapped page the file system cannot back kills the process with SIGBUS (a full disk, a
full tmpfs), so every page is reserved (``posix_fallocate``) before it is mapped, when a file is made
and each time it grows. A value that finds no room is kept in memory instead (the host's request goes on,
with its own result), counted as ``claude_exporter_internal_errors_total{stage="storage"}``, shown when
this process is scraped, and written to its file as soon as a later attempt finds room.

Each live gauge file (``gauge_live*``) is held under an exclusive ``flock`` while its process lives, so a
reader can tell a killed worker's in-flight counts from a running one's (the kernel drops the lock with
the process, however it died). A process that takes a live gauge file with values in it (a dead worker's
whose pid it reuses) replaces it with an empty one rather than carry them on.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import mmap
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

__all__ = ["OLDEST_START", "SUFFIX", "MmapStorage", "Unbacked", "file_name"]

# Written by each process, read by the scraping one and exposed as claude_execution_longest_running_seconds.
OLDEST_START = "claude_execution_oldest_start_timestamp_seconds"
_HELP = {
    **{family.base: family.help for family in FAMILIES},
    OLDEST_START: "Start (Unix time) of the agent's oldest running execution in a process; +Inf: none.",
}
_INF = math.inf
_DOUBLES = struct.Struct("dd").pack
_PAIR = struct.Struct("dd").unpack_from
_SUMMED = ("counter", "histogram")  # file prefixes whose values a reused pid's file adds to
_LOST = ("claude_exporter_internal_errors", "storage")  # a value kept in memory for want of room
_INITIAL = 1 << 16  # prometheus_client's first size of a file
# A value without room in its file tries again at most this often (seconds): a full disk stays cheap.
RETRY_SECONDS = 1.0

#: A value this process holds in memory only: (file prefix, key, value, timestamp).
Unbacked = tuple[str, str, float, float]

#: How the exporter's file names end: never one of prometheus_client's own (``<pid>.db``).
SUFFIX = "-claude.db"


def file_name(prefix: str, pid: int) -> str:
    """The exporter's file of kind ``prefix`` (``counter``, ``gauge_livesum`` ...) for process ``pid``."""
    return f"{prefix}_{pid}{SUFFIX}"


def _base(family: str) -> str:
    return BY_NAME[family].base


def _reserve(name: str, replace: bool = False) -> None:
    """Make file ``name`` exist with every block reserved (``OSError`` when the file system has no room).

    A new file is made under another name (not ``*.db``, so no scrape reads it) and renamed into place
    once reserved and given its header: a reader never sees it empty. A file already there (a reused pid)
    is reserved over its whole size, which an older writer may have left sparse; or, with ``replace``, a
    new empty one takes its place.
    """
    try:
        fd = -1 if replace else os.open(name, os.O_RDWR)
    except FileNotFoundError:
        fd = -1
    if fd >= 0:
        try:
            os.posix_fallocate(fd, 0, max(os.fstat(fd).st_size, _INITIAL))
        finally:
            os.close(fd)
        return
    new = f"{name}.{threading.get_ident()}.new"
    fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.posix_fallocate(fd, 0, _INITIAL)
        os.pwrite(fd, struct.pack("i", 8), 0)  # used: the 8 header bytes
        os.rename(new, name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(new)
        raise
    finally:
        os.close(fd)


class _Reserved(MmapedDict):
    """prometheus_client's file, its blocks reserved before they are mapped: growing it raises
    ``OSError`` when the file system has no room, where ``MmapedDict`` maps a hole and dies of SIGBUS at
    the first write into it."""

    def __init__(self, name: str, live: bool) -> None:
        _reserve(name)
        super().__init__(name)  # type: ignore[no-untyped-call]
        if live and self._lock() and self._used > 8:
            # A dead process's live values (a reused pid; or this one's before instrument() again): its
            # in-flight counts are not this process's, so a new empty file takes the place of its file.
            stale_f, stale_m = self._f, self._m
            try:
                _reserve(name, replace=True)
                super().__init__(name)  # type: ignore[no-untyped-call]
                self._lock()
            finally:
                stale_m.close()
                stale_f.close()  # its lock with it (no room: the values wait in memory, as for any file)

    def _lock(self) -> bool:
        """Hold the file's lock for this process's life (the reader's sign that it is alive); False when
        another holds it or the file system has no locks."""
        for _ in range(100):  # a reader's probe holds it for microseconds; never wait long
            try:
                fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:  # no locks on this file system: readers cannot tell either
                return False
        return False

    def _init_value(self, key: str) -> None:
        size = len(key.encode("utf-8")) + 4
        size += 8 - size % 8 + 16  # as MmapedDict pads it
        capacity = self._capacity
        while self._used + size > capacity:
            capacity *= 2
        if capacity != self._capacity:
            fd = self._f.fileno()
            os.posix_fallocate(fd, 0, capacity)  # the file is unchanged when this fails
            self._m = mmap.mmap(fd, capacity)
            self._capacity = capacity
        super()._init_value(key)  # type: ignore[no-untyped-call]  # fits now: no growth there


class _Memory:
    """Where a value without room in its file is written: 16 bytes of memory, in the file's layout."""

    __slots__ = ("_m",)

    def __init__(self) -> None:
        self._m = bytearray(16)


class _Files:
    """This process's mmap files in ``path``, written under one lock taken once per update of a series
    rather than once per value (``with files:``).

    A forked child starts its own files at zero, as prometheus_client's values do; the fork is noticed
    through ``os.register_at_fork``, not by a ``getpid()`` system call on every write.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        self._files: dict[str, _Reserved] = {}
        self._values: list[_Value] = []
        self._forked = False
        # Values without room in their file, kept in memory; when they last tried for room.
        self.unbacked: list[_Value] = []
        self._tried = 0.0
        self._lost: _Value | None = None  # claude_exporter_internal_errors_total{stage="storage"}
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
            self.unbacked.clear()
            for value in self._values:  # every one to memory first: none writes the parent's files
                value.forget()
            for value in list(self._values):
                if not value.slot():
                    self.no_room(value)
        elif self.unbacked and time.monotonic() - self._tried >= RETRY_SECONDS:
            self._place()
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def file(self, prefix: str) -> _Reserved | None:
        """This process's file for ``prefix``; None when it cannot be made (no room)."""
        found = self._files.get(prefix)
        if found is None:
            name = os.path.join(self.path, file_name(prefix, os.getpid()))
            try:
                found = _Reserved(name, prefix.startswith("gauge_live"))
            except OSError:
                return None
            self._files[prefix] = found
        return found

    def no_room(self, value: _Value) -> None:
        """``value`` found no room in its file (caller holds the lock): kept in memory, and counted once."""
        self.unbacked.append(value)
        self._tried = time.monotonic()
        lost = self._lost
        if lost is None:
            key = mmap_key(_LOST[0], _LOST[0] + "_total", ["stage"], [_LOST[1]], _HELP[_LOST[0]])
            lost = self._lost = _Value(self, "counter", key)
            self._values.append(lost)
            if not lost.slot(fresh=True):  # the count itself waits in memory, counted with the rest
                self.unbacked.append(lost)
                lost.add(1)
        lost.add(1)

    def _place(self) -> None:
        """Another try at room for the values kept in memory (caller holds the lock)."""
        self._tried = time.monotonic()
        waiting, self.unbacked = self.unbacked, []
        for value in waiting:
            if not value.slot():
                self.unbacked.append(value)

    def held(self) -> list[Unbacked]:
        """The values this process holds in memory only, for its own scrape to add."""
        with self:
            return [value.held() for value in self.unbacked]

    def value(
        self, prefix: str, metric: str, sample: str, names: Iterable[str], values: Iterable[str]
    ) -> _Value:
        """A new value (caller holds the lock): its key written at 0 now, so the series shows at once."""
        key = mmap_key(metric, sample, list(names), list(values), _HELP[metric])
        value = _Value(self, prefix, key)
        self._values.append(value)
        if not value.slot(fresh=True):
            self.no_room(value)
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
    afresh, since the file remaps as it grows), as ``MmapedDict.write_value`` writes it. Without room in
    the file, the same write goes to 16 bytes of memory (:class:`_Memory`) until :meth:`slot` finds room.
    """

    __slots__ = ("_file", "_files", "_key", "_pos", "_prefix", "value")

    def __init__(self, files: _Files, prefix: str, key: str) -> None:
        self._files, self._prefix, self._key = files, prefix, key
        self.forget()

    def forget(self) -> None:
        """Zero, in memory: a new value before it has its place, or a forked child's."""
        self.value = 0.0
        self._file: _Reserved | _Memory = _Memory()
        self._pos = 0

    def slot(self, fresh: bool = False) -> bool:
        """Take its place in the file (caller holds the lock); False when there is no room. A value the
        file already holds (a reused pid's) is carried on, as prometheus_client's values do; what a
        waiting value held in memory is added to it (counts) or replaces it (gauges)."""
        file = self._files.file(self._prefix)
        if file is None:
            return False
        try:
            value, timestamp = file.read_value(self._key)  # type: ignore[no-untyped-call]  # adds the key
        except OSError:
            return False
        pos = file._positions[self._key]
        if not fresh:
            held, timestamp = _PAIR(self._file._m, self._pos)
            value = value + held if self._prefix in _SUMMED else held
            file._m[pos : pos + 16] = _DOUBLES(value, timestamp)
        self.value, self._file, self._pos = value, file, pos
        return True

    def held(self) -> Unbacked:
        value, timestamp = _PAIR(self._file._m, self._pos)
        return self._prefix, self._key, value, timestamp

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

    def held(self) -> list[Unbacked]:
        """The values this process holds in memory for want of room in its files (its scrape adds them)."""
        return self._files.held()

    def close(self) -> None:
        """Close the files (``uninstrument()``); what they hold stays on disk for the scrape."""
        self._files.close()
