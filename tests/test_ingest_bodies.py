"""Hostile bodies on every POST route (``/v1/events``, ``/v1/logs``, ``/v1/metrics``, ``/v1/hooks``):
issue 18's rows 1, 2, 6, 7 and 11, each against a real server over real sockets.

- row 1: one body reader for all routes: a negative or malformed Content-Length is 400 and nothing is
  read; none, or chunked, is 411; over the limit 413.
- row 2: a gzip body that inflates into millions of empty records is refused (413, naming the limit)
  before it is decoded; an honest 512-record batch is not.
- row 6: numbers out of range (1e308 points, 1e300 tokens, cost 1e308, NaN, Infinity) are refused where
  they come in and never reach a counter or a histogram.
- row 7: integers of hundreds of digits are a 400 naming the field, not a 500.
- row 11: every gzip member is inflated; bytes after the last one are a 400.
"""

from __future__ import annotations

import gzip
import json
import math
from typing import Any

import pytest
from claude_exporter.config import parse_config
from claude_exporter.ingest.body import MAX_BODY
from claude_exporter.ingest.otlp_budget import MAX_OBJECTS
from conftest import scrape, val
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from otlp_payloads import CUMULATIVE, DELTA, T0, api_request, as_json, logs_request, sums_request
from prometheus_client import CollectorRegistry
from test_ingest_hostile import exchange

SERVER_OPTIONS = {"otlp": True}
INSTRUMENT_CONFIG = parse_config({"monitoring": {}})
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MODEL = "claude-sonnet-4-5"
AGENT = "claude-code"
SOURCES = {"/v1/events": "http", "/v1/logs": "otlp", "/v1/metrics": "otlp", "/v1/hooks": "hooks"}


def hook_body(**fields: Any) -> dict[str, Any]:
    return {
        "session_id": "s1",
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_use_id": "toolu_1",
        "duration_ms": 95,
        **fields,
    }


def good_body(path: str) -> tuple[bytes, str]:
    """A body each route applies: (bytes, content type)."""
    if path == "/v1/events":
        return json.dumps({"event": "claude_execution_complete", "duration_ms": 5}).encode(), JSON
    if path == "/v1/logs":
        return logs_request([api_request("req_ok")]), PROTOBUF
    if path == "/v1/metrics":
        return sums_request([("claude_code.commit.count", {}, T0, T0 + 1, 1.0)]), PROTOBUF
    return json.dumps(hook_body()).encode(), JSON


def send(
    server: Any, path: str, body: bytes, content_type: str, length: str | None = None, **headers: str
) -> tuple[int, bytes]:
    """POST over a raw socket: ``length`` "omit" leaves Content-Length out; other values are sent as is."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", f"Content-Type: {content_type}"]
    if length != "omit":
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    lines += [f"{key.replace('_', '-')}: {value}" for key, value in headers.items()]
    return exchange(server, "\r\n".join(lines), body)


def accepted(reg: CollectorRegistry, path: str) -> float:
    return val(reg, "claude_exporter_events_total", source=SOURCES[path], result="accepted")


def stable(reg: CollectorRegistry) -> list[str]:
    """The exposition without the ingest counter (which counts refusals too)."""
    return [line for line in scrape(reg).splitlines() if "events_total" not in line]


def poisoned(reg: CollectorRegistry) -> list[str]:
    """Samples that are not finite: what a poisoned counter or histogram sum looks like."""
    bad = []
    for family in reg.collect():
        for sample in family.samples:
            if not math.isfinite(sample.value):
                bad.append(f"{sample.name}{sample.labels} {sample.value}")
    return bad


# -- row 1: one body reader --------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("path", list(SOURCES))
@pytest.mark.parametrize(
    ("length", "status"), [("-1", 400), ("-5", 400), ("12abc", 400), ("omit", 411), ("chunked", 411)]
)
def test_every_route_refuses_a_bad_content_length_and_applies_nothing(server, reg, path, length, status):
    body, content_type = good_body(path)
    before = stable(reg)
    if length == "chunked":
        framed = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        got, answer = send(server, path, framed, content_type, "omit", Transfer_Encoding="chunked")
    else:
        # A negative length with a body behind it: before, the OTLP routes read to the end of the stream.
        got, answer = send(server, path, body, content_type, length)
    assert got == status, answer
    message = json.loads(answer)["error"]
    assert "Content-Length" in message or "chunked" in message
    assert accepted(reg, path) == 0
    assert stable(reg) == before


@pytest.mark.integration
@pytest.mark.parametrize("path", list(SOURCES))
def test_every_route_answers_413_over_the_limit_and_the_same_body_under_it_is_applied(server, reg, path):
    body, content_type = good_body(path)
    got, answer = send(server, path, body + b" " * MAX_BODY, content_type)
    assert got == 413, answer
    assert "over the limit" in json.loads(answer)["error"]
    assert accepted(reg, path) == 0
    got, answer = send(server, path, body, content_type)
    assert got == 200, answer
    assert accepted(reg, path) == 1


# -- row 2: objects, not just bytes --------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 127, n >> 7
        out.append(byte | (128 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


EMPTY_RECORDS = _field(1, _field(2, b"\x12\x00" * ((8 << 20) // 2 - 16)))  # 4 million empty log records
EMPTY_JSON = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[' + b"{}," * (MAX_OBJECTS + 1) + b"{}]}]}]}"


@pytest.mark.integration
@pytest.mark.parametrize(("body", "content_type"), [(EMPTY_RECORDS, PROTOBUF), (EMPTY_JSON, JSON)])
def test_a_small_gzip_body_of_millions_of_records_is_refused_before_decoding(server, reg, body, content_type):
    zipped = gzip.compress(body, 9)
    assert len(zipped) < 64 << 10
    before = stable(reg)
    got, answer = send(server, "/v1/logs", zipped, content_type, Content_Encoding="gzip")
    assert got == 413, answer
    assert f"more than {MAX_OBJECTS} objects" in json.loads(answer)["error"]
    assert stable(reg) == before


@pytest.mark.integration
@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_an_honest_batch_of_512_records_fits_the_budget(server, reg, content_type):
    records = [api_request(f"req_{i}", session=f"s{i}") for i in range(512)]
    body = logs_request(records)
    if content_type == JSON:
        body = as_json("logs", body)
    got, answer = send(server, "/v1/logs", gzip.compress(body), content_type, Content_Encoding="gzip")
    assert got == 200, answer
    assert val(reg, "claude_requests_total", agent=AGENT, model=MODEL, outcome="success") == 512


# -- rows 6 and 7: one range check for every number ---------------------------------------------------------


def _metrics(server: Any, body: bytes) -> ExportMetricsServiceResponse:
    got, answer = send(server, "/v1/metrics", body, PROTOBUF)
    assert got == 200, answer
    response = ExportMetricsServiceResponse()
    response.ParseFromString(answer)
    return response


@pytest.mark.integration
@pytest.mark.parametrize("temporality", [DELTA, CUMULATIVE])
def test_huge_sum_points_are_rejected_and_never_make_a_counter_infinite(server, reg, temporality):
    for start in (T0, T0 + 10):  # twice, from two writers: 1e308 + 1e308 was +Inf
        points = [
            ("claude_code.session.count", {}, start, start + 1, 1e308),
            ("claude_code.cost.usage", {"model": MODEL}, start, start + 1, 1e308),
            ("claude_code.commit.count", {}, start, start + 1, 2.0),
        ]
        answer = _metrics(server, sums_request(points, temporality=temporality))
        assert answer.partial_success.rejected_data_points == 2
        assert (
            "claude_code.session.count: value: must be a number from" in answer.partial_success.error_message
        )
    assert val(reg, "claude_code_sessions_total", agent=AGENT) == 0
    assert val(reg, "claude_cost_usd_total", agent=AGENT, model=MODEL) == 0
    assert val(reg, "claude_code_commits_total", agent=AGENT) == 4
    assert poisoned(reg) == []


@pytest.mark.integration
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_tokens", 1e300),
        ("cost_usd", 1e308),
        ("duration_ms", math.nan),
        ("duration_ms", math.inf),
        ("ttft_ms", -math.inf),
        ("output_tokens", "1e400"),
        ("cache_read_tokens", "9" * 400),
    ],
    ids=[
        "tokens-1e300",
        "cost-1e308",
        "duration-nan",
        "duration-inf",
        "ttft--inf",
        "text-1e400",
        "text-400-digits",
    ],
)
@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_event_numbers_out_of_range_reject_their_record_only(server, reg, field, value, content_type):
    bad = api_request("req_bad")
    bad[field] = value
    body = logs_request([bad, api_request("req_good")])
    if content_type == JSON:
        body = as_json("logs", body)
    got, answer = send(server, "/v1/logs", body, content_type)
    assert got == 200, answer
    if content_type == JSON:
        partial = json.loads(answer)["partialSuccess"]
        rejected, message = int(partial["rejectedLogRecords"]), partial["errorMessage"]
    else:
        response = ExportLogsServiceResponse()
        response.ParseFromString(answer)
        rejected, message = (
            response.partial_success.rejected_log_records,
            response.partial_success.error_message,
        )
    assert rejected == 1
    assert message.startswith(f"api_request: {field}: must be ")
    assert val(reg, "claude_requests_total", agent=AGENT, model=MODEL, outcome="success") == 1
    assert poisoned(reg) == []


@pytest.mark.integration
@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        *[("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e400", "Infinity")],
        *[("9" * 400, "an integer of 400 digits"), ("-1", "-1"), ("2592000001", "2592000001")],
    ],
    ids=["nan", "inf", "-inf", "1e400", "400-digits", "negative", "over-30-days"],
)
def test_a_hook_duration_out_of_range_is_400_naming_it(server, reg, raw, shown):
    body = json.dumps(hook_body(duration_ms=0)).replace('"duration_ms": 0', f'"duration_ms": {raw}')
    got, answer = send(server, "/v1/hooks", body.encode(), JSON)
    assert got == 400, answer
    assert json.loads(answer)["problems"] == [
        f"duration_ms: must be a number from 0 to 2592000000, got {shown}"
    ]
    assert accepted(reg, "/v1/hooks") == 0
    assert poisoned(reg) == []


@pytest.mark.integration
@pytest.mark.parametrize("where", ["asDouble", "doubleValue"])
def test_otlp_json_integers_of_400_digits_are_400_not_500(server, reg, where):
    huge = "9" * 400
    if where == "asDouble":
        point = {"timeUnixNano": str(T0 + 1), "asDouble": 0}
        metric = {
            "name": "claude_code.commit.count",
            "sum": {"aggregationTemporality": 1, "dataPoints": [point]},
        }
        body = json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]})
        path = "/v1/metrics"
    else:
        attribute = {"key": "cost_usd", "value": {"doubleValue": 0}}
        record = {"body": {"stringValue": "claude_code.api_request"}, "attributes": [attribute]}
        body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]})
        path = "/v1/logs"
    body = body.replace(f'"{where}": 0', f'"{where}": {huge}')
    got, answer = send(server, path, body.encode(), JSON)
    assert got == 400, answer
    message = json.loads(answer)["error"]
    assert message.startswith("nothing applied: body: ") and where in message
    assert "an integer of 400 digits" in message
    assert poisoned(reg) == []


# -- row 11: gzip members -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_every_gzip_member_is_inflated(server, reg):
    first = logs_request([api_request("req_1"), api_request("req_2")])
    second = logs_request([api_request("req_3")])
    # Two protobuf messages one after the other are one message with their fields together.
    body = gzip.compress(first) + gzip.compress(second)
    got, answer = send(server, "/v1/logs", body, PROTOBUF, Content_Encoding="gzip")
    assert got == 200, answer
    assert val(reg, "claude_requests_total", agent=AGENT, model=MODEL, outcome="success") == 3


@pytest.mark.integration
@pytest.mark.parametrize("tail", [b"garbage", b"\x1f\x8b\x08", b"\0" * 8])
def test_bytes_after_the_last_gzip_member_are_400(server, reg, tail):
    body = gzip.compress(logs_request([api_request("req_1")])) + tail
    before = stable(reg)
    got, answer = send(server, "/v1/logs", body, PROTOBUF, Content_Encoding="gzip")
    assert got == 400, answer
    assert json.loads(answer)["error"].startswith("nothing applied: body: ")
    assert stable(reg) == before


# -- the object count itself ----------------------------------------------------------------------------


def _messages(message: Any) -> int:
    """The messages protobuf builds for ``message``: itself and every message inside it."""
    count = 1
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        for item in value if field.is_repeated else [value]:
            count += _messages(item)
    return count


def _any_value(depth: int, width: int) -> Any:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    value = AnyValue(string_value="x") if depth == 0 else AnyValue()
    if depth:
        value.array_value.values.extend(_any_value(depth - 1, width) for _ in range(width))
    return value


@pytest.mark.unit
@settings(max_examples=25, deadline=None)
@given(
    records=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(0, 3)),  # attributes, depth, width
        max_size=5,
    ),
)
def test_the_walk_counts_exactly_the_messages_protobuf_builds(records):
    from claude_exporter.ingest.otlp_budget import BudgetError, protobuf_objects
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for attributes, depth, width in records:
        record = scope.log_records.add()
        record.body.string_value = "claude_code.api_request"
        for i in range(attributes):
            pair = record.attributes.add()
            pair.key = f"k{i}"
            pair.value.CopyFrom(_any_value(depth, width))
    data = request.SerializeToString()
    count = _messages(request)
    protobuf_objects(data, request.DESCRIPTOR, limit=count)  # exactly at the budget: accepted
    with pytest.raises(BudgetError, match=f"more than {count - 1} objects"):
        protobuf_objects(data, request.DESCRIPTOR, limit=count - 1)


def _request_with_value(value: bytes) -> bytes:
    """A logs request of one record whose one attribute holds the AnyValue ``value`` (wire bytes)."""
    pair = _field(1, b"a") + _field(2, value)  # KeyValue: key, value
    return _field(
        1, _field(2, _field(2, _field(6, pair)))
    )  # resource_logs, scope_logs, log_records, attributes


@pytest.mark.unit
def test_objects_deep_inside_one_attribute_count_too():
    from claude_exporter.ingest.otlp_budget import BudgetError, protobuf_objects
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    descriptor = ExportLogsServiceRequest.DESCRIPTOR
    wide = _field(5, b"\x0a\x00" * 300_000)  # array_value: 300,000 empty values, 2 bytes each
    with pytest.raises(BudgetError, match=f"more than {MAX_OBJECTS} objects") as over:
        protobuf_objects(_request_with_value(wide), descriptor)
    assert over.value.over
    deep = b""
    for _ in range(40):  # an array holding an array ...: 80 messages deep
        deep = _field(5, _field(1, deep))
    with pytest.raises(BudgetError, match="nested over 64 deep") as nested:
        protobuf_objects(_request_with_value(deep), descriptor, limit=90)  # 194 bytes: walked
    assert not nested.value.over


@pytest.mark.unit
def test_what_is_not_a_number_is_left_to_the_event_reader():
    from claude_exporter.ingest.numbers import screen

    assert screen({"status_code": "undefined", "cost_usd": True, "duration_ms": "", "model": 1e308}) == []
    assert screen({"status_code": "1e3", "attempt": 2.5, "ttft_ms": " 12 "}) == [
        'status_code: must be an integer from 0 to 999, got "1e3"',
        "attempt: must be an integer from 0 to 1000000, got 2.5",
    ]


@pytest.mark.unit
@pytest.mark.parametrize("cumulative", [False, True])
def test_a_point_that_is_not_finite_adds_nothing_where_counters_add(cumulative):
    from claude_exporter.ingest.otlp_counting import Deltas
    from claude_exporter.ingest.otlp_records import SumPoint

    # The readers refuse such points; this is the second check, where an amount reaches a counter.
    deltas = Deltas()
    for step, value in enumerate([math.inf, math.nan, -math.inf], 1):
        assert deltas.increment(SumPoint("m", {}, {}, T0, T0 + step, value, cumulative, True)) == 0.0
    assert deltas.increment(SumPoint("m", {}, {}, T0, T0 + 10, 3.0, cumulative, True)) == 3.0
