"""OTLP export requests written by the tests, shaped like Claude Code 2.1.328's (checked against captures
of the real CLI): resource attributes, one scope, events as log records whose body is ``claude_code.<name>``
and sums with delta or cumulative temporality."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
T0 = 1_796_000_000_000_000_000  # nanoseconds
_sequence = itertools.count()


def resource(agent: str | None = None, **extra: str) -> dict[str, str]:
    out = {"service.name": "claude-code", "service.version": "2.1.328", "os.type": "linux"}
    if agent is not None:
        out["agent"] = agent
    out.update(extra)
    return out


def _kv(attrs: Mapping[str, Any]) -> list[KeyValue]:
    out = []
    for key, value in attrs.items():
        if isinstance(value, bool):
            any_value = AnyValue(bool_value=value)
        elif isinstance(value, int):
            any_value = AnyValue(int_value=value)
        elif isinstance(value, float):
            any_value = AnyValue(double_value=value)
        else:
            any_value = AnyValue(string_value=str(value))
        out.append(KeyValue(key=key, value=any_value))
    return out


def identity(session: str) -> dict[str, str]:
    """What Claude Code puts on every record: identities the exporter must never turn into labels."""
    return {
        "user.id": "f" * 64,
        "session.id": session,
        "organization.id": "org-7f1e",
        "user.email": "dev@example.com",
        "user.account_uuid": "acc-42",
        "terminal.type": "non-interactive",
    }


def event(name: str, session: str = "s1", sequence: int | None = None, **attrs: Any) -> dict[str, Any]:
    """One event record's attributes, as Claude Code writes them."""
    seq = next(_sequence) if sequence is None else sequence
    return {**identity(session), "event.name": name, "event.sequence": seq, **attrs, "_name": name}


def api_request(
    request_id: str,
    *,
    session: str = "s1",
    prompt: str = "p1",
    model: str = "claude-sonnet-4-5",
    tokens: Sequence[int] = (100, 20, 5, 7),
    duration_ms: int = 1500,
    ttft_ms: int = 300,
    cost_usd: float = 0.0,
    as_strings: bool = False,
) -> dict[str, Any]:
    numbers: dict[str, Any] = {
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cache_creation_tokens": tokens[2],
        "cache_read_tokens": tokens[3],
        "duration_ms": duration_ms,
        "ttft_ms": ttft_ms,
    }
    if as_strings:  # the protobuf export sends integers as strings
        numbers = {key: str(value) for key, value in numbers.items()}
    return event(
        "api_request",
        session,
        **{"prompt.id": prompt},
        model=model,
        cost_usd=cost_usd,
        request_id=request_id,
        client_request_id=f"client-{request_id}",  # the CLI's own id for the request, one per request
        query_source="sdk",
        speed="normal",
        prompt="<REDACTED>",
        **numbers,
    )


def logs_request(records: Sequence[Mapping[str, Any]], res: Mapping[str, str] | None = None) -> bytes:
    """A protobuf ExportLogsServiceRequest with ``records`` (from :func:`event`) under one resource."""
    message = ExportLogsServiceRequest()
    scope_logs = message.resource_logs.add()
    scope_logs.resource.attributes.extend(_kv(res or resource()))
    scope = scope_logs.scope_logs.add()
    scope.scope.name = "com.anthropic.claude_code.events"
    for i, record in enumerate(records):
        attrs = {k: v for k, v in record.items() if k != "_name"}
        log = scope.log_records.add()
        log.time_unix_nano = T0 + i * 1_000_000
        log.body.string_value = "claude_code." + record["_name"]
        log.attributes.extend(_kv(attrs))
    return message.SerializeToString()


def sums_request(
    points: Sequence[tuple[str, Mapping[str, Any], int, int, float]],
    *,
    temporality: int = DELTA,
    res: Mapping[str, str] | None = None,
) -> bytes:
    """A protobuf ExportMetricsServiceRequest: (metric, attributes, start_ns, time_ns, value) points."""
    message = ExportMetricsServiceRequest()
    rm = message.resource_metrics.add()
    rm.resource.attributes.extend(_kv(res or resource()))
    sm = rm.scope_metrics.add()
    sm.scope.name = "com.anthropic.claude_code"
    by_name: dict[str, Any] = {}
    for name, attrs, start, time, value in points:
        metric = by_name.get(name)
        if metric is None:
            metric = by_name[name] = sm.metrics.add()
            metric.name = name
            metric.sum.aggregation_temporality = temporality  # type: ignore[assignment]
            metric.sum.is_monotonic = True
        point = metric.sum.data_points.add()
        point.start_time_unix_nano = start
        point.time_unix_nano = time
        point.as_double = value
        point.attributes.extend(_kv(attrs))
    return message.SerializeToString()


def as_json(signal: str, body: bytes) -> bytes:
    """The same request in OTLP/JSON, as the JavaScript exporter writes it (camelCase, enums as numbers)."""
    cls = ExportLogsServiceRequest if signal == "logs" else ExportMetricsServiceRequest
    message = cls()
    message.ParseFromString(body)
    import json

    return json.dumps(json_format.MessageToDict(message, use_integers_for_enums=True)).encode()
