"""Multiprocess mode, the read half: every worker's claude_* families merged from their mmap files.

The workers write through :mod:`claude_exporter.recording.storage.mmap`; whichever of them Prometheus
scrapes reads every process's files here and merges them with prometheus_client's accumulation
(``MultiProcessCollector._accumulate_metrics``): counters and histograms summed over the workers, dead
ones included, gauges combined by their family's declared ``multiprocess_mode``. The oldest running start
each process writes is turned into ``claude_execution_longest_running_seconds`` at scrape time.

The files are untrusted: each is read whole and checked (its header against its length, every entry's
bounds, key and, for a claude_* family, type, mode, sample name and labels against the family's
declaration) before any of it is merged. One that fails is skipped, counted as
``claude_exporter_internal_errors_total{stage="scrape_file"}`` and named once in a warning; the rest is
served. A live gauge file (``gauge_live*``) whose writer no longer holds its lock is a dead worker's
(killed before ``mark_process_dead``): its in-flight counts and running starts are left out.

The exporter's files end in ``-claude.db``, the application's own in ``<pid>.db``; both are read (the
application's for nothing but its keys, which are not claude_*), and so are files a previous release wrote
under prometheus_client's names (a rolling upgrade). :func:`mark_process_dead` removes a dead worker's
live gauge files under both names.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import json
import logging
import math
import os
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from claude_exporter.exposition.flags import family_flags
from claude_exporter.families import BY_NAME, FAMILIES, Family
from claude_exporter.recording.storage.mmap import OLDEST_START, SUFFIX, Unbacked, file_name

__all__ = ["MultiprocessCollector", "Unreadable", "mark_process_dead"]

log = logging.getLogger("claude_exporter")

_INT = struct.Struct("i").unpack_from
_PAIR = struct.Struct("dd").unpack_from
_TYPES = ("counter", "gauge", "histogram", "summary")  # prometheus_client's file prefixes
_WARNED_MAX = 1000  # file names warned about, at most (a directory of garbage stays one line a file)

# A parsed entry: (metric, sample name, sorted labels, value, timestamp).
Entry = tuple[str, str, tuple[tuple[str, str], ...], float, float]


class Unreadable(ValueError):
    """A file in the directory that cannot be read as prometheus_client's format; says why."""


class MultiprocessCollector(Collector):
    """Every worker's claude_* families from the files in ``path``, with the agents' ``metrics:`` lists
    applied as the in-memory collector applies them. Other families in the directory (an application's
    own multiprocess metrics) are left to the application's own collector.

    ``fault`` counts a skipped file (the recorder's); ``held`` gives the values this process keeps in
    memory for want of room in its files, added to what its own files hold."""

    def __init__(
        self,
        path: str,
        enabled: Callable[[str, str], bool] | None = None,
        local: Any = None,
        fault: Callable[[str], None] | None = None,
        held: Callable[[], list[Unbacked]] | None = None,
    ) -> None:
        self._path = path
        self._enabled = enabled or (lambda agent, group: True)
        self._local = local  # this process's RecorderCollector, for what only it records
        self._fault = fault
        self._held = held
        self._warned: set[str] = set()

    def describe(self) -> Iterable[Metric]:
        return []  # names vary with what the workers wrote; reading the files to list them is a scrape

    def collect(self) -> Iterable[Metric]:
        now = time.time()
        flags = family_flags(self._enabled)
        agents: set[str] = set()
        for metric in self._merge():
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

    def _merge(self) -> Iterable[Metric]:
        # This process's own files are read after the others' skips are counted, so the count written to
        # them shows in this very scrape.
        me = f"_{os.getpid()}{SUFFIX}"
        names = sorted(glob.glob(os.path.join(self._path, "*.db")), key=lambda name: name.endswith(me))
        metrics: dict[str, Metric] = {}
        keys: dict[Any, Any] = {}
        for name in names:
            try:
                entries = _read(name, name.endswith(me), keys)
            except FileNotFoundError:
                continue  # gone since the glob (mark_process_dead, a cleanup): nothing to serve
            except (OSError, Unreadable) as exc:
                self._skipped(name, exc)
                continue
            if entries is not None:
                _add(metrics, os.path.basename(name), entries)
        if self._held is not None:
            held: dict[str, list[tuple[str, float, float]]] = {}
            for prefix, key, value, timestamp in self._held():
                held.setdefault(file_name(prefix, os.getpid()), []).append((key, value, timestamp))
            for name, raw in held.items():
                with contextlib.suppress(Unreadable):  # written by this process: checked all the same
                    _add(metrics, name, _entries(name, raw, keys))
        merged: Iterable[Metric] = MultiProcessCollector._accumulate_metrics(metrics, True)  # type: ignore[no-untyped-call]
        return merged

    def _skipped(self, name: str, exc: Exception) -> None:
        if self._fault is not None:
            self._fault("scrape_file")
        base = os.path.basename(name)
        if base not in self._warned and len(self._warned) < _WARNED_MAX:
            self._warned.add(base)
            log.warning("claude-exporter: skipped %r in PROMETHEUS_MULTIPROC_DIR: %s", base, exc)


def _read(name: str, own: bool, keys: dict[Any, Any]) -> list[Entry] | None:
    """The claude_* entries of file ``name`` (``own``: this process's); None for a dead worker's live
    gauges. Raises :class:`Unreadable` (or ``OSError``) when the file cannot be read whole."""
    with open(name, "rb") as f:
        base = os.path.basename(name)
        # This process's own files need no probe (and where flock is emulated by per-process locks, as
        # on NFS, a probe would find them free).
        if base.startswith("gauge_live") and not own and _writer_gone(f.fileno()):
            return None
        head = f.read(8)
        if len(head) < 8:
            raise Unreadable(f"{len(head)} bytes, shorter than the 8-byte header")
        used = _INT(head, 0)[0]
        if used == 0:
            return []  # made, not yet written (prometheus_client's writer between truncate and header)
        if used < 8:
            raise Unreadable(f"the header says {used} bytes are used, fewer than the header itself")
        size = os.fstat(f.fileno()).st_size  # checked first: a read of what the header claims allocates it
        if used > size:
            raise Unreadable(f"the header says {used} bytes are used, the file has {size}")
        data = head + f.read(used - 8)
        if len(data) < used:  # cut while read
            raise Unreadable(f"the header says {used} bytes are used, {len(data)} could be read")
    return _entries(base, _raw(data, used), keys)


def _writer_gone(fd: int) -> bool:
    """Whether no living process holds this live gauge file's lock (its writer died). False when it
    cannot tell (a file system without ``flock``)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # held (BlockingIOError), or no locks here
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def _raw(data: bytes, used: int) -> list[tuple[str, float, float]]:
    """(key, value, timestamp) of every entry in prometheus_client's layout, each bound checked."""
    out = []
    pos = 8
    while pos < used:
        if pos + 4 > used:
            raise Unreadable(f"an entry at byte {pos} is cut off")
        length = _INT(data, pos)[0]
        end = pos + 4 + length + (8 - (length + 4) % 8) + 16
        if length <= 0 or end > used:
            raise Unreadable(f"the entry at byte {pos} has a bad length ({length})")
        try:
            key = data[pos + 4 : pos + 4 + length].decode("utf-8")
        except UnicodeDecodeError:
            raise Unreadable(f"the key at byte {pos} is not UTF-8") from None
        value, timestamp = _PAIR(data, end - 16)
        out.append((key, value, timestamp))
        pos = end
    return out


def _entries(base: str, raw: list[tuple[str, float, float]], keys: dict[Any, Any]) -> list[Entry]:
    """The claude_* entries among ``raw``, each checked against its family; the file's kind from its name
    ``base`` (``counter_<pid>-claude.db``, ``gauge_<mode>_<pid>.db`` ...). ``keys``: the scrape's verdicts on
    keys already seen (every worker's files hold the same keys: each is parsed once a scrape)."""
    parts = base.split("_")
    typ = parts[0]
    if typ not in _TYPES or (typ == "gauge" and len(parts) < 3):
        raise Unreadable("not a prometheus_client file name (counter_, gauge_<mode>_, histogram_ ...)")
    mode = parts[1] if typ == "gauge" else ""
    out: list[Entry] = []
    for n, (key, value, timestamp) in enumerate(raw, 1):
        verdict = keys.get((key, typ, mode))
        if verdict is None:
            verdict = keys[(key, typ, mode)] = _verdict(key, typ, mode)
        if isinstance(verdict, str):
            raise Unreadable(f"entry {n}{verdict}")
        if verdict:
            metric, sample, labels = verdict
            out.append((metric, sample, labels, value, timestamp))
    return out


def _verdict(key: str, typ: str, mode: str) -> tuple[str, str, tuple[tuple[str, str], ...]] | tuple[()] | str:
    """One key in a file of kind ``typ`` (``mode``): (metric, sample, sorted labels) for a claude_* family;
    () for another family's; why not, for a key no family may hold. The reasons name declared names only,
    never what a key holds (it may hold anything)."""
    try:
        metric, sample, labels, _help = json.loads(key)
    except (ValueError, TypeError):
        return ": not prometheus_client's [metric, sample, labels, help]"
    if not isinstance(metric, str):
        return ": names no metric"
    if metric not in _FAMILY_OF:
        return ()  # not a claude_* family: the application's own collector reads it
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        return f" ({metric}): label values that are not strings"
    expected = _expected(_FAMILY_OF[metric], typ, mode)
    names = expected.get(sample) if isinstance(sample, str) else None
    if names is None or set(labels) != names:
        kind = f"{typ} ({mode!r})" if mode else typ
        return f" ({metric}): not a {kind} sample of the family as declared"
    if "le" in labels:
        try:
            float(labels["le"])
        except ValueError:
            return f" ({metric}): a bucket bound that is not a number"
    return metric, sample, tuple(sorted(labels.items()))


@functools.lru_cache(maxsize=256)  # bounded: a mode comes from a file's name
def _expected(family: Family | None, typ: str, mode: str) -> dict[str, frozenset[str]]:
    """Sample name -> label names, for a claude_* metric found in a file of kind ``typ`` (``mode``)."""
    if family is None:  # OLDEST_START: written as a livemin gauge by agent
        want_typ, want_mode, base, labels = "gauge", "livemin", OLDEST_START, frozenset({"agent"})
    else:
        want_typ, want_mode, base, labels = (
            family.type,
            family.multiprocess_mode,
            family.base,
            frozenset(family.labels),
        )
    if typ != want_typ or (typ == "gauge" and mode != want_mode):
        return {}
    if typ == "counter":
        return {base + "_total": labels}
    if typ == "histogram":
        return {base + "_bucket": labels | {"le"}, base + "_sum": labels}
    return {base: labels}


def _add(metrics: dict[str, Metric], base: str, entries: list[Entry]) -> None:
    """Entries of one file into ``metrics``, as prometheus_client's ``_read_metrics`` adds them."""
    parts = base.split("_")
    typ = parts[0]
    for metric_name, sample, labels, value, timestamp in entries:
        metric = metrics.get(metric_name)
        if metric is None:
            family = _FAMILY_OF[metric_name]
            metric = metrics[metric_name] = Metric(metric_name, family.help if family else "", typ)
        if typ == "gauge":
            metric._multiprocess_mode = parts[1]  # type: ignore[attr-defined]
            pid = parts[2].removesuffix(SUFFIX).removesuffix(".db")
            metric.add_sample(sample, (*labels, ("pid", pid)), value, timestamp)  # type: ignore[arg-type]
        else:
            metric.add_sample(sample, labels, value)  # type: ignore[arg-type]


_BY_BASE = {family.base: family for family in FAMILIES}
# Every metric name a claude_* file may hold: the families' bases, and the oldest running start (None).
_FAMILY_OF: dict[str, Family | None] = {**_BY_BASE, OLDEST_START: None}
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


def mark_process_dead(pid: int, path: str | None = None) -> None:
    """prometheus_client's ``mark_process_dead`` (its call in a gunicorn ``child_exit`` hook), which also
    removes the exporter's live gauge files of the dead worker ``pid``: prometheus_client's matches only its
    own names. ``path``: ``PROMETHEUS_MULTIPROC_DIR`` when not given."""
    if path is None:
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not path:
            raise ValueError("mark_process_dead: no path given and PROMETHEUS_MULTIPROC_DIR is not set")
    prometheus_multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    ours = file_name("", pid)  # "_<pid>-claude.db"
    for name in glob.glob(os.path.join(glob.escape(path), f"gauge_live*{ours}")):
        if os.path.basename(name).count("_") == 2:  # gauge_<mode>_<pid>-claude.db, nothing else
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile (a second call)
                os.remove(name)
