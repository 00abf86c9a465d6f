"""Property tests for reading and counting OTLP payloads (hypothesis, bounded so the suite stays fast).

- Any bytes, in either encoding, gzip or not, are either read or refused with a 4xx naming the problem;
  the handler never fails and a refused body changes nothing. So do log records, sum points and hook
  bodies carrying any numbers (huge, not finite, of 400 digits, as text), and nothing they leave in the
  registry is infinite or NaN.
- Cumulative points from any number of writers, sent in any order and any number of times, add up to
  exactly each writer's final value per start time; delta points, re-sent or not, add up to their sum.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import uuid
from typing import Any

import claude_exporter as ce
import pytest
from claude_exporter.config import parse_config
from claude_exporter.ingest.otlp_counting import Deltas, Recent
from claude_exporter.ingest.otlp_records import SumPoint
from claude_exporter.ingest.otlp_wire import WireError, decode
from claude_exporter.recording.state import ACTIVE
from conftest import scrape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from otlp_payloads import T0, api_request, as_json, logs_request, sums_request
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.unit

BOUNDED = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
PROTOBUF = "application/x-protobuf"


def _call(route: Any, body: bytes, content_type: str, encoding: str | None = None) -> tuple[str, bytes]:
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": content_type,
        "wsgi.input": io.BytesIO(body),
    }
    if encoding:
        environ["HTTP_CONTENT_ENCODING"] = encoding
    seen: list[str] = []
    chunks = route(environ, lambda status, headers: seen.append(status))
    return seen[0], b"".join(chunks)


@pytest.fixture(scope="module")
def routes() -> Any:
    from claude_exporter.server import default_routes

    if ACTIVE.recorder is not None:
        ce.uninstrument()
    registry = CollectorRegistry()
    ce.instrument(config=parse_config({"monitoring": {}}), registry=registry)
    try:
        yield default_routes(otlp=True), registry
    finally:
        ce.uninstrument()


def _mutations() -> st.SearchStrategy[bytes]:
    valid = logs_request([api_request("req_1"), api_request("req_2", as_strings=True)])
    return st.one_of(
        st.binary(max_size=300),
        st.builds(lambda cut: valid[:cut], st.integers(0, len(valid))),
        st.builds(
            lambda i, b: valid[:i] + bytes([b]) + valid[i + 1 :],
            st.integers(0, len(valid) - 1),
            st.integers(0, 255),
        ),
    )


def _stable(registry: CollectorRegistry) -> list[str]:
    """The exposition without what changes by itself (the ingest counter, ages of running turns)."""
    return [line for line in scrape(registry).splitlines() if "events" not in line and "longest" not in line]


@BOUNDED
@given(body=_mutations(), as_text=st.booleans(), zipped=st.booleans())
def test_any_body_is_read_or_refused_never_a_server_error(routes, body, as_text, zipped):
    table, registry = routes
    content_type = "application/json" if as_text else PROTOBUF
    if as_text:
        try:
            body = as_json("logs", body)
        except Exception:
            body = body.decode("latin-1").encode()  # not protobuf at all: send it as (bad) JSON text
    before = _stable(registry)
    payload = gzip.compress(body) if zipped else body
    status, answer = _call(table["/v1/logs"], payload, content_type, "gzip" if zipped else None)
    assert status[:3] in ("200", "400"), (status, answer)
    if status.startswith("400"):
        assert json.loads(answer)["error"].startswith("nothing applied: body: ")
        assert _stable(registry) == before


# Numbers as hostile senders write them: huge, tiny, not finite, of hundreds of digits, or as text.
hostile_numbers = st.one_of(
    st.sampled_from([1e308, -1e308, 1e300, 10**400, -(10**400), 2**63, math.nan, math.inf, -math.inf]),
    st.integers(-(10**20), 10**20),
    st.integers(-(10**400), 10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "9" * 400, "-5", "12", "", "x"]),
)
NUMBER_KEYS = [
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "duration_ms",
    "ttft_ms",
    "status_code",
    "attempt",
]


def _json_number(value: Any) -> str:
    """``value`` as JSON text, NaN and Infinity as Python's json writes them (senders do too)."""
    return json.dumps(value) if not isinstance(value, int) or abs(value) < 10**300 else str(value)


def _finite(registry: CollectorRegistry) -> bool:
    return all(math.isfinite(s.value) for family in registry.collect() for s in family.samples)


def _check_answer(registry: CollectorRegistry, before: list[str], status: str, answer: bytes) -> None:
    """Never a 5xx; a refusal names what is wrong and changes nothing; nothing stored is not finite."""
    assert status[:3] in ("200", "400", "413"), (status, answer)
    if not status.startswith("200"):
        assert json.loads(answer)["error"].startswith("nothing applied")
        assert _stable(registry) == before
    assert _finite(registry)


def _attribute(key: str, value: Any, as_double: bool) -> str:
    """One OTLP/JSON attribute, written as a sender would: text, an int64, or a double (any digits)."""
    if isinstance(value, str):
        kind, literal = "stringValue", json.dumps(value)
    else:
        small = isinstance(value, int) and abs(value) < 2**63 and not as_double
        kind, literal = ("intValue" if small else "doubleValue"), _json_number(value)
    return f'{{"key": {json.dumps(key)}, "value": {{"{kind}": {literal}}}}}'


@BOUNDED
@given(
    numbers=st.dictionaries(st.sampled_from(NUMBER_KEYS), hostile_numbers, min_size=1, max_size=4),
    name=st.sampled_from(["api_request", "api_error", "tool_result"]),
    as_double=st.booleans(),
    as_text=st.booleans(),
    split=st.none() | st.integers(0, 3),
)
def test_records_with_any_numbers_never_fail_and_never_poison(
    routes, numbers, name, as_double, as_text, split
):
    table, registry = routes
    logs = []
    for copy in range(2):  # two records with the same numbers: 1e308 + 1e308 was +Inf
        attrs = {**api_request(f"req_p{copy}"), "tool_name": "Bash", "success": "true"}
        attrs.pop("_name")
        attrs["request_id"] = f"req_{uuid.uuid4()}"
        texts = [_attribute(k, str(v), False) for k, v in attrs.items() if k not in numbers]
        texts += [_attribute(k, v, as_double) for k, v in numbers.items()]
        body = f'{{"stringValue": "claude_code.{name}"}}'
        logs.append(f'{{"body": {body}, "timeUnixNano": "{T0}", "attributes": [{", ".join(texts)}]}}')
    text = f'{{"resourceLogs": [{{"scopeLogs": [{{"logRecords": [{", ".join(logs)}]}}]}}]}}'
    body, content_type = text.encode(), "application/json"
    if not as_text:
        from google.protobuf import json_format
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

        try:
            body = json_format.Parse(text, ExportLogsServiceRequest()).SerializeToString()
            content_type = PROTOBUF
        except Exception:
            pass  # protobuf cannot hold it (a number of 400 digits): sent as JSON
    before = _stable(registry)
    if split is None:
        status, answer = _call(table["/v1/logs"], body, content_type)
    else:  # two gzip members (before, only the first was read)
        payload = gzip.compress(body[:split]) + gzip.compress(body[split:])
        status, answer = _call(table["/v1/logs"], payload, content_type, "gzip")
    _check_answer(registry, before, status, answer)


@BOUNDED
@given(
    values=st.lists(st.one_of(hostile_numbers, st.sampled_from([1e308, 1e300, 2.0])), min_size=1, max_size=3),
    temporality=st.sampled_from([0, 1, 2]),
    as_text=st.booleans(),
)
def test_sum_points_with_any_values_never_fail_and_never_poison(routes, values, temporality, as_text):
    table, registry = routes
    floats = [float(v) for v in values if isinstance(v, float)] or [1e308]
    ints = [v for v in values if isinstance(v, int)]
    before = _stable(registry)
    for send in range(2):  # twice, from a new writer (start) each time: 1e308 + 1e308 was +Inf
        start = T0 + send * 1000 + len(values) * 10**6 + temporality * 10**7
        points = [("claude_code.session.count", {}, start, start + i + 1, v) for i, v in enumerate(floats)]
        body, content_type = sums_request(points, temporality=temporality), PROTOBUF
        if as_text:
            body, content_type = as_json("metrics", body), "application/json"
            if ints:  # an integer, of any size, where the sender wrote its first point
                body = body.replace(
                    b'"asDouble"', b'"asInt": ' + _json_number(ints[0]).encode() + b', "x"', 1
                )
        status, answer = _call(table["/v1/metrics"], body, content_type)
        _check_answer(registry, before if send == 0 else _stable(registry), status, answer)
        before = _stable(registry)


hook_values = st.one_of(hostile_numbers, st.none(), st.booleans(), st.text(max_size=8), st.just({"a": [1]}))


@BOUNDED
@given(
    fields=st.dictionaries(
        st.sampled_from(
            ["hook_event_name", "tool_name", "tool_use_id", "duration_ms", "is_interrupt", "error"]
        ),
        hook_values,
        max_size=6,
    ),
    event=st.sampled_from(["PostToolUse", "PostToolUseFailure", "Stop", None]),
)
def test_any_hook_body_is_applied_or_refused_never_a_server_error(routes, fields, event):
    table, registry = routes
    body = {"hook_event_name": event, "tool_name": "Bash", "tool_use_id": "toolu_p", **fields}
    text = "{" + ", ".join(f"{json.dumps(k)}: {_json_number(v)}" for k, v in body.items()) + "}"
    before = _stable(registry)
    status, answer = _call(table["/v1/hooks"], text.encode("utf-8", "surrogatepass"), "application/json")
    assert status[:3] in ("200", "400"), (status, answer)
    if status.startswith("400"):
        assert _stable(registry) == before
    duration = body.get("duration_ms")
    in_range = duration is None or (
        isinstance(duration, (int, float))
        and not isinstance(duration, bool)
        and (isinstance(duration, int) or math.isfinite(duration))
        and 0 <= duration <= 30 * 86_400_000
    )
    if body.get("hook_event_name") in ("PostToolUse", "PostToolUseFailure") and not in_range:
        assert status.startswith("400") and "duration_ms: must be a number from 0" in answer.decode()
    assert _finite(registry)


@BOUNDED
@given(st.binary(max_size=200))
def test_decode_raises_only_wire_errors(data):
    for content_type in (PROTOBUF, "application/json"):
        for signal in ("metrics", "logs", "traces"):
            try:
                decode(signal, data, content_type)
            except WireError as err:
                assert str(err).startswith("body: ")


# -- counting ------------------------------------------------------------------------------------------------

writer_runs = st.lists(  # per writer: its segments (one per start time), each a list of increments
    st.lists(st.lists(st.integers(0, 1000), min_size=1, max_size=6), min_size=1, max_size=3),
    min_size=1,
    max_size=5,
)


@BOUNDED
@given(runs=writer_runs, order=st.randoms(use_true_random=False), repeats=st.integers(0, 10))
def test_cumulative_points_in_any_order_add_up_exactly(runs, order, repeats):
    points, expected = [], 0.0
    for writer, segments in enumerate(runs):
        for segment, increments in enumerate(segments):
            start = T0 + segment * 1_000_000_000_000
            total = 0.0
            for step, inc in enumerate(increments, 1):
                total += inc
                points.append(SumPoint("m", {"w": writer}, {}, start, start + step, total, True, True))
            expected += total
    sent = points + [order.choice(points) for _ in range(repeats)]
    order.shuffle(sent)
    deltas = Deltas()
    assert sum(deltas.increment(point) for point in sent) == expected


@BOUNDED
@given(
    values=st.lists(st.integers(0, 10**6), min_size=1, max_size=30),
    order=st.randoms(use_true_random=False),
    repeats=st.integers(0, 10),
)
def test_delta_points_add_once_however_often_sent(values, order, repeats):
    points = [SumPoint("m", {}, {}, T0 + i, T0 + i + 1, float(v), False, True) for i, v in enumerate(values)]
    sent = points + [order.choice(points) for _ in range(repeats)]
    order.shuffle(sent)
    deltas = Deltas()
    assert sum(deltas.increment(point) for point in sent) == sum(values)


def test_memory_stays_bounded_and_evictions_are_reported():
    evicted = []
    deltas = Deltas(capacity=100, on_evict=lambda: evicted.append(1))
    for writer in range(250):
        deltas.increment(SumPoint("m", {"w": writer}, {}, T0, T0 + 1, 1.0, True, True))
    assert len(deltas) == 100
    assert len(evicted) == 150


def test_remembered_ids_expire_after_their_ttl():
    now = [0.0]
    recent = Recent(capacity=10_000, ttl=60.0, clock=lambda: now[0])
    assert recent.add("req_old") and not recent.add("req_old")
    now[0] = 61.0
    for i in range(2048):  # expiry runs every 1024 additions, from the oldest
        recent.add(f"req_{i}")
    assert "req_old" not in recent
    assert recent.add("req_old")  # forgotten: a re-send this late would count again (hence a long TTL)


# -- the JSON reader reads what the protobuf reader reads ----------------------------------------------------

scalars = st.one_of(
    st.text(max_size=12),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
attribute_maps = st.dictionaries(st.sampled_from(["a", "b", "event.name", "model", "n"]), scalars, max_size=4)


def _records_of(signal: str, body: bytes, enums_as_numbers: bool) -> tuple[Any, Any]:
    """(records read from protobuf, records read from the same request's OTLP/JSON)."""
    from claude_exporter.ingest import otlp_json, otlp_records
    from google.protobuf import json_format
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    message = (ExportLogsServiceRequest if signal == "logs" else ExportMetricsServiceRequest)()
    message.ParseFromString(body)
    as_dict = json.loads(
        json.dumps(json_format.MessageToDict(message, use_integers_for_enums=enums_as_numbers))
    )
    if signal == "logs":
        return otlp_records.log_events(message), otlp_json.log_events(as_dict)
    return otlp_records.sum_points(message), otlp_json.sum_points(as_dict)


@BOUNDED
@given(
    records=st.lists(
        st.tuples(st.sampled_from(["api_request", "tool_result", "x"]), attribute_maps), max_size=6
    ),
    res=attribute_maps,
    enums_as_numbers=st.booleans(),
)
def test_json_logs_read_as_protobuf_logs(records, res, enums_as_numbers):
    built = [{**attrs, "_name": name} for name, attrs in records]
    from_protobuf, from_json = _records_of("logs", logs_request(built, res), enums_as_numbers)
    assert from_json == from_protobuf


@BOUNDED
@given(
    points=st.lists(
        st.tuples(
            st.sampled_from(["claude_code.commit.count", "claude_code.cost.usage"]),
            attribute_maps,
            st.integers(0, 2**63),
            st.integers(0, 2**63),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        max_size=6,
    ),
    temporality=st.sampled_from([0, 1, 2]),
    res=attribute_maps,
    enums_as_numbers=st.booleans(),
)
def test_json_sums_read_as_protobuf_sums(points, temporality, res, enums_as_numbers):
    body = sums_request(points, temporality=temporality, res=res)
    from_protobuf, from_json = _records_of("metrics", body, enums_as_numbers)
    assert from_json == from_protobuf
