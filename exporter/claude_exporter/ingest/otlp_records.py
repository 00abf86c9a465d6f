"""OTLP messages walked into plain records: log events and sum data points, attributes as Python values.

Only what the mapping reads is kept: log records whose body (or ``event.name``) names an event, and the
data points of sums. Gauges, histograms and summaries are skipped (Claude Code sends none that map).
A record whose numbers fail :mod:`.numbers`' range check, and a data point that cannot be a count (out of
range, not finite, negative on a monotonic sum), are rejected and counted, so the sender's
partial-success answer says how many and why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from claude_exporter.ingest.numbers import POINT, check, screen

__all__ = [
    "CUMULATIVE",
    "DELTA",
    "LogEvent",
    "SumPoint",
    "attributes",
    "count_log_records",
    "event_name",
    "keep",
    "log_events",
    "point_problem",
    "sum_points",
]

DELTA = 1  # AggregationTemporality enum values of the OTLP metrics proto
CUMULATIVE = 2
_EVENT_PREFIX = "claude_code."

Attrs = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One event log record: ``name`` without the ``claude_code.`` prefix."""

    name: str
    attrs: Attrs
    resource: Attrs
    time_ns: int


@dataclass(frozen=True, slots=True)
class SumPoint:
    """One data point of a sum metric."""

    metric: str
    attrs: Attrs
    resource: Attrs
    start_ns: int
    time_ns: int
    value: float
    cumulative: bool
    monotonic: bool


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(any_value, kind)
    return None  # arrays, key-value lists and bytes carry nothing the mapping reads


def attributes(pairs: Any) -> dict[str, Any]:
    """Key-value list -> dict of scalar values (the last of repeated keys wins, as OTel SDKs do)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        value = _value(pair.value)
        if value is not None:
            out[pair.key] = value
    return out


def event_name(attrs: Attrs, body: Any) -> str | None:
    """The event a log record carries: its ``event.name`` attribute, else its string body; without the
    ``claude_code.`` prefix. None for a record that names no event."""
    name = attrs.get("event.name")
    if not isinstance(name, str) or not name:
        name = body if isinstance(body, str) else None
    if not name:
        return None
    return name[len(_EVENT_PREFIX) :] if name.startswith(_EVENT_PREFIX) else name


def log_events(request: Any) -> tuple[list[LogEvent], list[str]]:
    """Every event of an ExportLogsServiceRequest, and one problem per record rejected for its numbers
    (:func:`.numbers.screen`); records without an event name are skipped."""
    events: list[LogEvent] = []
    problems: list[str] = []
    for resource_logs in request.resource_logs:
        resource = attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                attrs = attributes(record.attributes)
                name = event_name(attrs, _value(record.body))
                if name is None:
                    continue
                time_ns = record.time_unix_nano or record.observed_time_unix_nano
                keep(events, problems, LogEvent(name, attrs, resource, int(time_ns)))
    return events, problems


def keep(events: list[LogEvent], problems: list[str], event: LogEvent) -> None:
    """``event`` into ``events``, or its number problems into ``problems`` (one entry per record)."""
    bad = screen(event.attrs)
    if bad:
        problems.append("; ".join(f"{event.name}: {problem}" for problem in bad))
    else:
        events.append(event)


def point_problem(metric: str, value: float, monotonic: bool) -> str | None:
    """What is wrong with a sum point's value (the one range check, and no decrease on a monotonic sum)."""
    _, problem = check(value, POINT)
    if problem is not None:
        return f"{metric}: value: {problem}"
    if monotonic and value < 0:
        return f"{metric}: value must be a finite count, got {value}"
    return None


def count_log_records(request: Any) -> int:
    return sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)


def sum_points(request: Any) -> tuple[list[SumPoint], list[str]]:
    """The data points of every sum in an ExportMetricsServiceRequest, and one problem per rejected point."""
    points: list[SumPoint] = []
    problems: list[str] = []
    for resource_metrics in request.resource_metrics:
        resource = attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.WhichOneof("data") != "sum":
                    continue
                temporality = metric.sum.aggregation_temporality
                monotonic = bool(metric.sum.is_monotonic)
                for point in metric.sum.data_points:
                    kind = point.WhichOneof("value")
                    value = float(getattr(point, kind)) if kind is not None else math.nan
                    if temporality not in (DELTA, CUMULATIVE):
                        problems.append(f"{metric.name}: aggregation temporality unspecified")
                    elif (problem := point_problem(metric.name, value, monotonic)) is not None:
                        problems.append(problem)
                    else:
                        points.append(
                            SumPoint(
                                metric.name,
                                attributes(point.attributes),
                                resource,
                                int(point.start_time_unix_nano),
                                int(point.time_unix_nano),
                                value,
                                temporality == CUMULATIVE,
                                monotonic,
                            )
                        )
    return points, problems
