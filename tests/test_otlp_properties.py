"""Property tests for reading and counting OTLP payloads (hypothesis, bounded so the suite stays fast).

- Any bytes, in either encoding, gzip or not, are either read or refused with a 4xx naming the problem;
  the handler never fails and a refused body changes nothing.
- Cumulative points from any number of writers, sent in any order and any number of times, add up to
  exactly each writer's final value per start time; delta points, re-sent or not, add up to their sum.
"""

from __future__ import annotations

import gzip
import io
import json
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
