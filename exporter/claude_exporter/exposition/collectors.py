"""The recorder's series as Prometheus metric families, built when Prometheus scrapes.

Every family comes from its declaration in :mod:`claude_exporter.families`: name, type, help and labels
are read from there, never restated. Each series is copied under its own lock, so a scrape sees every
request either whole or not at all. Histogram bucket bounds are written the way prometheus_client writes
them (``le="30.0"``), so rules and dashboards see one format whichever family they read. Live gauges (in
flight, longest running, rate-limit headroom, build info) are computed here from the recorder's state, so
the request path never touches them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
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
from claude_exporter.families import BY_NAME, DURATION_BUCKETS, FAMILIES, TOKEN_TYPE_GROUPS, Family
from claude_exporter.recording.cardinality import OVERFLOW
from claude_exporter.recording.claude_code_series import AGENT_INFO, COUNTERS, TOOL_DURATION
from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.series import TOKEN_TYPES

__all__ = [
    "RATELIMIT_GAUGES",
    "RESOURCES",
    "RateLimits",
    "RecorderCollector",
    "family_flags",
    "parse_ratelimit",
    "register",
    "unregister",
]

RESOURCES = ("requests", "tokens", "input_tokens", "output_tokens")
_FIELDS = ("limit", "remaining", "reset")
_GAUGE_FIELD = {
    "claude_ratelimit_limit": "limit",
    "claude_ratelimit_remaining": "remaining",
    "claude_ratelimit_reset_timestamp_seconds": "reset",
}
RATELIMIT_GAUGES = {field: name for name, field in _GAUGE_FIELD.items()}  # header field -> gauge

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


def parse_ratelimit(headers: Any, fault: Callable[[str], None]) -> Iterator[tuple[str, str, float]]:
    """``(resource, field, value)`` of every ``anthropic-ratelimit-*`` header present (a response without
    one keeps the last known value); a header that does not parse is counted as a fault."""
    for resource in RESOURCES:
        prefix = "anthropic-ratelimit-" + resource.replace("_", "-") + "-"
        for field in _FIELDS:
            raw = headers.get(prefix + field)
            if raw is None:
                continue
            try:
                yield resource, field, _parse(field, raw)
            except ValueError:
                fault("ratelimit_header")


def family_flags(enabled: Callable[[str, str], bool]) -> Callable[[str], dict[str, bool]]:
    """Per agent, which families and token types its ``metrics:`` list enables; computed once per agent
    (make one per scrape)."""
    cache: dict[str, dict[str, bool]] = {}

    def flags(agent: str) -> dict[str, bool]:
        found = cache.get(agent)
        if found is None:
            found = cache[agent] = {
                **{
                    f.name: not f.enabled_by or any(enabled(agent, group) for group in f.enabled_by)
                    for f in FAMILIES
                },
                **{kind: enabled(agent, group) for kind, group in TOKEN_TYPE_GROUPS.items()},
            }
        return found

    return flags


def _parse(field: str, raw: str) -> float:
    """A header's value; ``ValueError`` for anything but a finite count (or an ISO 8601 time)."""
    if field != "reset":
        value = float(raw)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"not a finite count: {raw[:40]}")
        return value
    return datetime.fromisoformat(raw.strip().replace("Z", "+00:00")).timestamp()


def _sdk_version() -> str:
    # Read from the installed metadata: the standalone exporter never imports the SDK.
    try:
        return metadata.version("anthropic")
    except metadata.PackageNotFoundError:
        return "none"


class _Guarded:
    """One family being built: every value made a float and every label checked to be a string here, so
    rendering cannot fail on a stored value; a sample that cannot be added marks the family broken."""

    __slots__ = ("broken", "family")

    def __init__(self, family: Metric) -> None:
        self.family = family
        self.broken = False

    def add_metric(self, labels: tuple[str, ...], value: Any, *rest: Any) -> None:
        if self.broken:
            return
        try:
            for label in labels:
                if label.__class__ is not str:
                    raise TypeError(f"label value {label!r:.40} is not a string")
            if rest:  # a histogram: (buckets, sum)
                self.family.add_metric(labels, value, float(rest[0]))  # type: ignore[attr-defined]
            else:
                self.family.add_metric(labels, float(value))  # type: ignore[attr-defined]
        except Exception:
            self.broken = True


class RecorderCollector(Collector):
    """Every family of :data:`~claude_exporter.families.FAMILIES`, from one recorder.

    ``enabled(agent, family)`` says whether the configuration's ``metrics:`` list enables a family for
    an agent; families no seed metric names are always on.
    """

    def __init__(self, rec: Recorder, enabled: Callable[[str, str], bool] | None = None) -> None:
        self._rec = rec
        self._enabled = enabled or (lambda agent, group: True)
        self._limits = RateLimits(rec)
        self._build = ((__version__, _sdk_version()), 1.0)

    def describe(self) -> Iterable[Metric]:
        return [_family(family.name) for family in FAMILIES]

    def collect(self) -> Iterable[Metric]:
        rec = self._rec
        if rec.orphans:
            rec.settle_orphans()
        out = {family.name: _Guarded(_family(family.name)) for family in FAMILIES}
        # Claude Code first: it ends the turns that went quiet, before the executions are read.
        for step in (self._claude_code, self._requests, self._executions, self._live, self._exporter):
            try:
                step(out)
            except Exception:  # one broken part must not cost the whole scrape
                rec.fault("scrape")
        # A family with a sample that could not be added is left out whole (a partial family would be a
        # wrong one) and counted; the others are served.
        for guarded in out.values():
            if guarded.broken:
                rec.fault("scrape")
        return [guarded.family for guarded in out.values() if not guarded.broken]

    def _flags(self) -> Callable[[str], dict[str, bool]]:
        return family_flags(self._enabled)

    def _requests(self, out: dict[str, Any]) -> None:
        flags = self._flags()
        for series in self._rec.request_series:
            agent, key = series.agent, (series.agent, series.model)
            on = flags(agent)
            snap = series.snapshot()
            if agent == series.model == OVERFLOW and not any(snap["outcomes"]):
                pass  # the overflow series exists only to hold open-label overflow; its totals stay hidden
            else:
                out["claude_requests_total"].add_metric((*key, "success"), snap["outcomes"][0])
                out["claude_requests_total"].add_metric((*key, "error"), snap["outcomes"][1])
                if on["claude_request_duration_seconds"]:
                    out["claude_request_duration_seconds"].add_metric(
                        key, *_buckets(series.duration.bounds, snap["duration"])
                    )
                for kind, count in zip(TOKEN_TYPES, snap["tokens"], strict=True):
                    if on[kind]:
                        out["claude_tokens_total"].add_metric((*key, kind), count)
                if on["claude_cost_usd_total"]:
                    out["claude_cost_usd_total"].add_metric(key, snap["cost"])
                if on["claude_rate_limited_total"]:
                    out["claude_rate_limited_total"].add_metric(key, snap["rate_limited"])
            if any(snap["ttft"][0]) and on["claude_time_to_first_token_seconds"]:
                out["claude_time_to_first_token_seconds"].add_metric(
                    key, *_buckets(series.ttft.bounds, snap["ttft"])
                )
            for name, field, width in (
                ("claude_stop_reasons_total", "stops", 1),
                ("claude_errors_total", "errors", 1),
                ("claude_retries_total", "retries", 1),
                ("claude_code_blocks_executed_total", "code", 2),
            ):
                if on[name]:
                    family = out[name]
                    for value, count in snap[field].items():
                        family.add_metric((*key, *value) if width == 2 else (*key, value), count)

    def _executions(self, out: dict[str, Any]) -> None:
        flags = self._flags()
        executions, duration = out["claude_executions_total"], out["claude_execution_duration_seconds"]
        tokens, turns = out["claude_execution_tokens"], out["claude_execution_requests"]
        for series in list(self._rec.exec_series.values()):
            key = (series.agent, series.task)
            on = flags(series.agent)
            snap = series.snapshot()
            executions.add_metric((*key, "success"), snap["outcomes"][0])
            executions.add_metric((*key, "error"), snap["outcomes"][1])
            if on["claude_execution_duration_seconds"]:
                duration.add_metric(key, *_buckets(series.duration.bounds, snap["duration"]))
            if on["input"]:
                tokens.add_metric((*key, "input"), *_buckets(series.tokens_in.bounds, snap["tokens_in"]))
            if on["output"]:
                tokens.add_metric((*key, "output"), *_buckets(series.tokens_out.bounds, snap["tokens_out"]))
            turns.add_metric(key, *_buckets(series.requests.bounds, snap["requests"]))

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
        for name, field in _GAUGE_FIELD.items():
            for values, value in self._limits.samples(field):
                out[name].add_metric(values, value)
        out["claude_exporter_build_info"].add_metric(*self._build)

    def claude_code_families(self, more_agents: frozenset[str]) -> list[Metric]:
        """The families only this process knows in multiprocess mode: Claude Code ingestion (which
        ``serve`` runs in one process) and each agent's source."""
        out = {name: _family(name) for name in (AGENT_INFO, TOOL_DURATION, *COUNTERS)}
        self._claude_code(out, more_agents)
        return list(out.values())

    def _claude_code(self, out: dict[str, Any], more_agents: frozenset[str] = frozenset()) -> None:
        """The Claude-Code-only families, and every agent's source (``claude_agent_info``);
        ``more_agents``: agents other processes recorded (multiprocess mode)."""
        ingest = self._rec.claude_code
        claude_code: frozenset[str] = frozenset()
        if ingest is not None:
            ingest.sweep()
            claude_code = ingest.store.agents
            counters, durations = ingest.store.snapshot()
            for name, series in counters.items():
                for values, value in sorted(series.items()):
                    out[name].add_metric(values, value)
            for key, counts, total in sorted(durations):
                out[TOOL_DURATION].add_metric(key, *_buckets(DURATION_BUCKETS, (counts, total)))
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
    rec: Recorder, registry: CollectorRegistry, enabled: Callable[[str, str], bool] | None = None
) -> Collector:
    """Expose ``rec`` on ``registry``; returns the collector to pass to :func:`unregister`. In
    multiprocess mode (``rec.backend``) the collector reads every worker's files instead."""
    collector: Collector
    if rec.backend is not None:
        from claude_exporter.exposition.multiprocess import MultiprocessCollector

        rec.backend.build_info((__version__, _sdk_version()))
        collector = MultiprocessCollector(rec.backend.path, enabled, RecorderCollector(rec, enabled))
    else:
        collector = RecorderCollector(rec, enabled)
    registry.register(collector)
    return collector


def unregister(registry: CollectorRegistry, collector: Collector) -> None:
    with contextlib.suppress(KeyError):
        registry.unregister(collector)
