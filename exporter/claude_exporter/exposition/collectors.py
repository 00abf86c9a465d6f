"""The recorder's series as Prometheus metric families, built when Prometheus scrapes.

Every family comes from its declaration in :mod:`claude_exporter.families`: name, type, help and labels
are read from there, never restated. Each series is copied under its own lock, so a scrape sees every
request either whole or not at all. Histogram bucket bounds are written the way prometheus_client writes
them (``le="30.0"``), so rules and dashboards see one format whichever family they read. Live gauges (in
flight, longest running, rate-limit headroom, build info) are computed here from the recorder's state, so
the request path never touches them.

One traversal of the series fills either prometheus_client families (``collect()``, for any registry
user) or the text writer's (:meth:`RecorderCollector.exposition`, which ``/metrics`` serves): while
:func:`capturing` is on, ``collect()`` yields nothing and hands the collector to the caller instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable, Iterator
from contextvars import ContextVar
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from claude_exporter._version import __version__
from claude_exporter.exposition.flags import family_flags
from claude_exporter.exposition.writer import Writer, checked
from claude_exporter.families import BY_NAME, DURATION_BUCKETS, FAMILIES, Family
from claude_exporter.recording.cardinality import OVERFLOW
from claude_exporter.recording.claude_code_series import AGENT_INFO, COUNTERS, TOOL_DURATION
from claude_exporter.recording.ratelimit import GAUGES, parse_ratelimit
from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.storage.layout import EXEC_FIELDS, KEYED, MISSES, REQUEST_FIELDS, TOKEN_TYPES

__all__ = ["RateLimits", "RecorderCollector", "capturing", "register", "unregister"]

Samples = Iterator[tuple[tuple[str, ...], float]]


def _family(name: str) -> Metric:
    family: Family = BY_NAME[name]
    if family.type == "counter":
        return CounterMetricFamily(family.base, family.help, labels=family.labels)
    if family.type == "histogram":
        return HistogramMetricFamily(family.base, family.help, labels=family.labels)
    return GaugeMetricFamily(family.base, family.help, labels=family.labels)


def _buckets(
    bounds: tuple[float, ...], snapshot: tuple[list[int], float]
) -> tuple[list[tuple[str, float]], float]:
    counts, total = snapshot
    cumulative, out = 0, []
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        cumulative += count
        out.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
    return out, total


# The collectors a registry collected from while capturing() is on, in this thread; None when off.
_CAPTURED: ContextVar[list[RecorderCollector] | None] = ContextVar("claude_exporter_captured", default=None)


@contextlib.contextmanager
def capturing() -> Iterator[list[RecorderCollector]]:
    """While on (in this thread), a :class:`RecorderCollector` that a registry collects from yields no
    family and joins the list instead, for the caller to render with :meth:`RecorderCollector.exposition`;
    every other collector renders as usual, so no family is written twice."""
    found: list[RecorderCollector] = []
    token = _CAPTURED.set(found)
    try:
        yield found
    finally:
        _CAPTURED.reset(token)


class RateLimits:
    """The latest ``anthropic-ratelimit-*`` values per model, parsed from the responses seen since the
    last scrape (the request path only queues the headers)."""

    def __init__(self, rec: Recorder) -> None:
        self._rec = rec
        self.values: dict[tuple[str, str, str], float] = {}

    def refresh(self) -> None:
        pending = self._rec.recent_headers
        while pending:
            try:
                model, headers = pending.popleft()
            except IndexError:  # another scrape drained it first
                return
            for resource, field, value in parse_ratelimit(headers, self._rec.fault):
                self.values[(model, resource, field)] = value

    def samples(self, field: str) -> Samples:
        for (model, resource, kind), value in sorted(self.values.items()):
            if kind == field:
                yield (model, resource), value


def _sdk_version() -> str:
    # Read from the installed metadata: the standalone exporter never imports the SDK.
    try:
        return metadata.version("anthropic")
    except metadata.PackageNotFoundError:
        return "none"


class _Guarded:
    """One family being built: every value made a float and every label checked to be a string here, so
    rendering cannot fail on a stored value; a sample that cannot be added marks the family broken. The
    writer's :class:`~claude_exporter.exposition.writer.FamilyText` takes the same calls."""

    __slots__ = ("broken", "family")

    def __init__(self, family: Metric) -> None:
        self.family = family
        self.broken = False

    def add_metric(self, labels: tuple[str, ...], value: Any) -> None:
        if self.broken:
            return
        try:
            self.family.add_metric(checked(labels), float(value))  # type: ignore[attr-defined]
        except Exception:
            self.broken = True

    def add_histogram(
        self, labels: tuple[str, ...], bounds: tuple[float, ...], snapshot: tuple[list[int], float]
    ) -> None:
        """Non-cumulative bucket counts (the last is +Inf's) and their sum, as the storages keep them."""
        if self.broken:
            return
        try:
            buckets, total = _buckets(bounds, snapshot)
            self.family.add_metric(checked(labels), buckets, float(total))  # type: ignore[attr-defined]
        except Exception:
            self.broken = True


class RecorderCollector(Collector):
    """Every family of :data:`~claude_exporter.families.FAMILIES`, from one recorder.

    ``enabled(agent, family)`` says whether the configuration's ``metrics:`` list enables a family for
    an agent; families no seed metric names are always on. ``claude_code``: what Claude Code's telemetry
    feeds (:class:`~claude_exporter.ingest.claude_code.ClaudeCodeIngest`), when it is received here.
    """

    def __init__(
        self, rec: Recorder, enabled: Callable[[str, str], bool] | None = None, claude_code: Any = None
    ) -> None:
        self._rec = rec
        self._claude_code_ingest = claude_code
        self._enabled = enabled or (lambda agent, group: True)
        self._limits = RateLimits(rec)
        self._build = ((__version__, _sdk_version()), 1.0)
        self._writer = Writer(FAMILIES)

    def describe(self) -> Iterable[Metric]:
        return [_family(family.name) for family in FAMILIES]

    def collect(self) -> Iterable[Metric]:
        captured = _CAPTURED.get()
        if captured is not None:  # the caller writes this collector's families itself
            captured.append(self)
            return []
        out = {family.name: _Guarded(_family(family.name)) for family in FAMILIES}
        self._fill(out)
        return [guarded.family for guarded in out.values() if not guarded.broken]

    def exposition(self, openmetrics: bool = False, names: Collection[str] | None = None) -> bytes:
        """The families as exposition text, byte for byte what prometheus_client writes from
        :meth:`collect` (OpenMetrics without its closing ``# EOF``); ``names``: keep only these sample
        names, as prometheus_client's ``restricted_registry`` does."""
        out = self._writer.families(names)
        self._fill(out)
        return self._writer.text(out, openmetrics, restricted=names is not None)

    def _fill(self, out: dict[str, Any]) -> None:
        rec = self._rec
        if rec.orphans:
            rec.settle_orphans()
        flags = family_flags(self._enabled)  # per agent, once a scrape for both kinds of series
        steps: tuple[Callable[[dict[str, Any]], None], ...] = (
            # Claude Code first: it ends the turns that went quiet, before the executions are read.
            self._claude_code,
            lambda out: self._requests(out, flags),
            lambda out: self._executions(out, flags),
            self._live,
            self._exporter,
        )
        for step in steps:
            try:
                step(out)
            except Exception:  # one broken part must not cost the whole scrape
                rec.fault("scrape")
        # A family with a sample that could not be added is left out whole (a partial family would be a
        # wrong one) and counted; the others are served.
        for family in out.values():
            if family.broken:
                rec.fault("scrape")

    def _requests(self, out: dict[str, Any], flags: Callable[[str], dict[str, bool]]) -> None:
        requests, duration = out[REQUEST_FIELDS["outcomes"]], out[REQUEST_FIELDS["duration"]]
        tokens, ttft = out[REQUEST_FIELDS["tokens"]], out[REQUEST_FIELDS["ttft"]]
        for series in self._rec.request_series:
            agent, key = series.agent, (series.agent, series.model)
            on = flags(agent)
            snap = series.snapshot()
            if agent == series.model == OVERFLOW and not any(snap["outcomes"]):
                pass  # the overflow series exists only to hold open-label overflow; its totals stay hidden
            else:
                requests.add_metric((*key, "success"), snap["outcomes"][0])
                requests.add_metric((*key, "error"), snap["outcomes"][1])
                if on[REQUEST_FIELDS["duration"]]:
                    duration.add_histogram(key, series.duration.bounds, snap["duration"])
                for kind, count in zip(TOKEN_TYPES, snap["tokens"], strict=True):
                    if on[kind]:
                        tokens.add_metric((*key, kind), count)
                for field in ("cost", "savings"):
                    if on[REQUEST_FIELDS[field]]:
                        out[REQUEST_FIELDS[field]].add_metric(key, snap[field])
                # A zero series per (agent, model) whatever the codes seen, so rate() reads a 0.
                snap["rate_limited"].setdefault("none", 0)
            if any(snap["ttft"][0]) and on[REQUEST_FIELDS["ttft"]]:
                ttft.add_histogram(key, series.ttft.bounds, snap["ttft"])
            for field in KEYED:
                name = REQUEST_FIELDS[field]
                if on[name]:
                    family = out[name]
                    for value, count in snap[field].items():
                        family.add_metric((*key, *value) if type(value) is tuple else (*key, value), count)
            if on[MISSES[0]]:
                for reason, (count, missed) in snap["misses"].items():
                    out[MISSES[0]].add_metric((*key, reason), count)
                    out[MISSES[1]].add_metric((*key, reason), missed)

    def _executions(self, out: dict[str, Any], flags: Callable[[str], dict[str, bool]]) -> None:
        for series in list(self._rec.exec_series.values()):
            key = (series.agent, series.task)
            on = flags(series.agent)
            snap = series.snapshot()
            executions = out[EXEC_FIELDS["outcomes"][0]]
            executions.add_metric((*key, "success"), snap["outcomes"][0])
            executions.add_metric((*key, "error"), snap["outcomes"][1])
            for field in ("duration", "tokens_in", "tokens_out", "requests"):
                name, kind = EXEC_FIELDS[field]
                if on[name] and (kind is None or on[kind]):
                    histogram = getattr(series, field)
                    labels = key if kind is None else (*key, kind)
                    out[name].add_histogram(labels, histogram.bounds, snap[field])

    def _live(self, out: dict[str, Any]) -> None:
        rec = self._rec
        for name, samples in (
            ("claude_requests_in_flight", rec.gauge_requests_in_flight),
            ("claude_executions_in_flight", rec.gauge_executions_in_flight),
            ("claude_execution_longest_running_seconds", rec.gauge_longest_running),
        ):
            try:  # each gauge on its own: one that fails is left out, the others are served
                for values, value in samples():
                    out[name].add_metric(values, value)
            except Exception:
                out[name].broken = True
        self._limits.refresh()
        for field, name in GAUGES.items():
            for values, value in self._limits.samples(field):
                out[name].add_metric(values, value)
        out["claude_exporter_build_info"].add_metric(*self._build)

    def claude_code_families(self, more_agents: frozenset[str]) -> list[Metric]:
        """The families only this process knows in multiprocess mode: Claude Code ingestion (which
        ``serve`` runs in one process) and each agent's source."""
        out = {name: _Guarded(_family(name)) for name in (AGENT_INFO, TOOL_DURATION, *COUNTERS)}
        self._claude_code(out, more_agents)
        for guarded in out.values():
            if guarded.broken:
                self._rec.fault("scrape")
        return [guarded.family for guarded in out.values() if not guarded.broken]

    def _claude_code(self, out: dict[str, Any], more_agents: frozenset[str] = frozenset()) -> None:
        """The Claude-Code-only families, and every agent's source (``claude_agent_info``);
        ``more_agents``: agents other processes recorded (multiprocess mode)."""
        ingest = self._claude_code_ingest
        claude_code: frozenset[str] = frozenset()
        if ingest is not None:
            ingest.sweep()
            claude_code = ingest.store.agents
            counters, durations = ingest.store.snapshot()
            for name, series in counters.items():
                for values, value in sorted(series.items()):
                    out[name].add_metric(values, value)
            for key, counts, total in sorted(durations):
                out[TOOL_DURATION].add_histogram(key, DURATION_BUCKETS, (counts, total))
        for agent in sorted(claude_code | self._rec.agents | more_agents):
            out[AGENT_INFO].add_metric((agent, "claude_code" if agent in claude_code else "sdk"), 1.0)

    def _exporter(self, out: dict[str, Any]) -> None:
        rec = self._rec
        for name, counter in (
            ("claude_exporter_label_overflow_total", rec.overflow),
            ("claude_exporter_label_changes_total", rec.changes),
            ("claude_exporter_unpriced_tokens_total", rec.unpriced),
            ("claude_exporter_internal_errors_total", rec.internal_errors),
            ("claude_exporter_events_total", rec.events),
        ):
            for values, value in sorted(counter.snapshot().items()):
                out[name].add_metric(values, value)


def register(
    rec: Recorder,
    registry: CollectorRegistry,
    enabled: Callable[[str, str], bool] | None = None,
    claude_code: Any = None,
) -> Collector:
    """Expose ``rec`` on ``registry``; returns the collector to pass to :func:`unregister`. In
    multiprocess mode (a storage with files) the collector reads every worker's files instead."""
    collector: Collector
    local = RecorderCollector(rec, enabled, claude_code)
    path = rec.storage.path
    if path is not None:
        from claude_exporter.exposition.multiprocess import MultiprocessCollector

        rec.storage.build_info((__version__, _sdk_version()))
        # The storage's values without room in its files, added by this process's own scrape.
        held = getattr(rec.storage, "held", None)
        collector = MultiprocessCollector(path, enabled, local, rec.fault, held)
    else:
        collector = local
    registry.register(collector)
    return collector


def unregister(registry: CollectorRegistry, collector: Collector) -> None:
    with contextlib.suppress(KeyError):
        registry.unregister(collector)
