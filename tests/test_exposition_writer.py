"""The exposition writer against prometheus_client, from one recorder state: the same bytes and the same
parsed families in the text format and in OpenMetrics, under ``name[]`` filters and for any label value;
and ``/metrics`` (the writer for the recorder's families, prometheus_client for the rest) against
prometheus_client's own ``make_wsgi_app`` for every format, encoding and method it answers."""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from claude_exporter.exposition.collectors import RecorderCollector, capturing
from claude_exporter.exposition.endpoint import metrics_app
from claude_exporter.exposition.writer import go_float
from claude_exporter.families import FAMILIES
from claude_exporter.ingest.events import apply_events, parse_event
from claude_exporter.recording.state import ACTIVE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client import generate_latest as generate_text
from prometheus_client import make_wsgi_app as prometheus_wsgi_app
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString

pytestmark = pytest.mark.unit

# Label values that need escaping or are not ASCII. The admission keeps quotes and backslashes; newlines
# only reach the store when something skips it, and are written escaped all the same.
AWKWARD = ('say "hi"', "back\\slash", 'both \\" at once', "ünïcödé エージェント 🚀", "trailing\\")
RAW = ("line\nbreak", "\\n is not a newline", '"', "\\", "")


def collector_of(registry: CollectorRegistry) -> RecorderCollector:
    """The recorder collector on ``registry`` (found the way /metrics finds it)."""
    with capturing() as found:
        generate_text(registry)
    [collector] = found
    return collector


def event(agent: str, task: str, model: str, ok: bool, **more: Any) -> Any:
    obj = {
        "event": "claude_execution_complete" if ok else "claude_execution_error",
        "agent": agent,
        "task": task,
        "model": model,
        "duration_ms": 1500,
        "input_tokens": 1000,
        "output_tokens": 200,
        "stop_reason": "end_turn" if ok else None,
        "error_type": None if ok else "InternalServerError",
        **more,
    }
    parsed = parse_event(obj)
    assert not isinstance(parsed, list), parsed
    return parsed


def rich_state(rec: Any) -> None:
    """Every family with samples: requests and executions through the ingestion path (the admission
    applies), then the label-keyed fields, the exporter's counters, rate limits and Claude Code's families
    written into the store directly, with values the admission would not let through."""
    events = [
        event(agent, task, model, ok)
        for agent in ("plain", *AWKWARD)
        for model in ("claude-sonnet-4-5", 'model "quoted"')
        for task in ("task-1", "täsk\\2")
        for ok in (True, False)
    ]
    events.append(event("big", "huge", "claude-opus-4-5", True, duration_ms=10**9, input_tokens=10**12))
    apply_events(rec, events)
    series = rec.request_series
    first = series[0]
    for value in RAW + AWKWARD:
        first.add("stops", value)
        first.add("errors", (value, "none"))
        first.add("retries", ("429", value))
        first.add("code", ("bash_code_execution", value), 3)
        first.add("refusals", value)
        first.add("rate_limited", value)
        first.add_cache_miss(value, 12)
    for one in series[:3]:
        for seconds in (0.0005, 0.3, 2.0, 99.0):
            one.add_ttft(seconds)
    first.cost += 1e6 + 0.1  # Go writes 1.0000001e+06
    first.tokens[0] += 10**7
    for value in RAW + AWKWARD:
        rec.overflow.inc((value,))
        rec.changes.inc(("agent", value), 2.5)
        rec.unpriced.inc((value, "model"), 1e21)
        rec.internal_errors.inc((value,))
        rec.events.inc(("events", value))
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:00Z",
        "anthropic-ratelimit-tokens-limit": "1000000",
    }
    rec.recent_headers.append(("claude-sonnet-4-5", headers))
    rec.recent_headers.append(('model "quoted"', headers))
    store = ACTIVE.opened.claude_code.store
    for agent in ("cc", *RAW[:2], *AWKWARD[:2]):
        store.add_agent(agent)
        store.add("claude_code_commits_total", (agent,), 2)
        store.add("claude_code_tool_results_total", (agent, 'Ba"sh', "success"), 1)
        store.add("claude_code_active_time_seconds_total", (agent, "cli"), 12.75)
        store.add("claude_code_sessions_total", (agent,), 1)
        store.add("claude_code_pull_requests_total", (agent,), 1)
        store.add("claude_code_lines_of_code_total", (agent, "added"), 40)
        store.add("claude_code_edit_decisions_total", (agent, "Edit", "accept"), 1)
        store.add("claude_code_tool_decisions_total", (agent, 'Ba"sh', "reject", "user_reject"), 1)
        store.add("claude_code_compactions_total", (agent, "auto", "success"), 1)
        store.add("claude_code_internal_errors_total", (agent,), 1)
        store.add("claude_code_retries_exhausted_total", (agent,), 1)
        store.add("claude_code_retry_seconds_total", (agent,), 7.5)
        store.observe_tool(agent, "Edit\nor", 0.25)
        store.observe_tool(agent, 'Ba"sh', 700.0)


def parsed(text: str, openmetrics: bool = False) -> list[tuple[Any, ...]]:
    """Every family as a comparable tuple: name, type, help, unit, and each sample in order."""
    families = parse_openmetrics(text) if openmetrics else parse_text(text)
    return [
        (
            f.name,
            f.type,
            f.documentation,
            f.unit,
            [(s.name, s.labels, repr(s.value), s.timestamp, s.exemplar) for s in f.samples],
        )
        for f in families
    ]


def assert_same(registry: CollectorRegistry, collector: RecorderCollector, parse: bool = True) -> None:
    """The writer's text and prometheus_client's, from the same state: equal bytes and (``parse``) equal
    families as each format's parser reads them."""
    old_text, new_text = generate_text(registry), collector.exposition(openmetrics=False)
    if parse:
        assert parsed(new_text.decode()) == parsed(old_text.decode())
    assert new_text == old_text
    old_om, new_om = generate_openmetrics(registry), collector.exposition(openmetrics=True) + b"# EOF\n"
    if parse:
        assert parsed(new_om.decode(), openmetrics=True) == parsed(old_om.decode(), openmetrics=True)
    assert new_om == old_om


def test_the_writer_writes_what_prometheus_client_writes(instrumented: Any) -> None:
    registry, rec = instrumented
    rich_state(rec)
    collector = collector_of(registry)
    generate_text(registry)  # the first scrape parses the rate-limit headers; then the state stands still
    assert_same(registry, collector)
    # Every family has samples, and the awkward values are there, escaped and read back.
    families = {f.name: f for f in parse_text(collector.exposition().decode())}
    assert {f.base for f in FAMILIES} <= {name for name, f in families.items() if f.samples}
    stops = {s.labels["stop_reason"] for s in families["claude_stop_reasons"].samples}
    assert {*RAW, *AWKWARD} - {""} <= stops
    agents = {s.labels["agent"] for s in families["claude_requests"].samples}
    assert set(AWKWARD) <= agents
    assert b'stop_reason="line\\nbreak"' in collector.exposition()
    # A second scrape from the caches writes the same again.
    assert_same(registry, collector)


def test_a_family_that_cannot_be_written_is_left_out_by_both(instrumented: Any) -> None:
    registry, rec = instrumented
    rich_state(rec)
    collector = collector_of(registry)
    generate_text(registry)
    rec.request_series[0].cost = 10**400  # no float holds it

    def scrape_faults() -> float:
        return float(rec.internal_errors.snapshot().get(("scrape",), 0.0))

    before = scrape_faults()
    old, new = generate_text(registry), collector.exposition()
    assert scrape_faults() == before + 2  # one each
    old_families, new_families = dict(by_name(old)), dict(by_name(new))
    assert "claude_cost_usd" not in new_families and "claude_tokens" in new_families
    # The same families, but for the fault the second scrape counted on top of the first's.
    old_errors, new_errors = old_families.pop(ERRORS), new_families.pop(ERRORS)
    assert new_families == old_families
    assert [s for s in new_errors[4] if s[1] != {"stage": "scrape"}] == [
        s for s in old_errors[4] if s[1] != {"stage": "scrape"}
    ]


ERRORS = "claude_exporter_internal_errors"


def by_name(text: bytes) -> Iterable[tuple[str, Any]]:
    return ((family[0], family) for family in parsed(text.decode()))


@pytest.mark.parametrize(
    "names",
    [
        ["claude_requests_total"],
        ["claude_request_duration_seconds_bucket"],
        ["claude_request_duration_seconds_sum", "claude_tokens_total", "claude_exporter_build_info"],
        ["claude_code_tool_duration_seconds_count", "claude_agent_info"],
        ["claude_requests"],  # a counter's family name: no sample has it
        ["claude_requests_in_flight"],
        ["no_such_metric"],
    ],
)
def test_name_filters_keep_what_prometheus_client_keeps(instrumented: Any, names: list[str]) -> None:
    registry, rec = instrumented
    rich_state(rec)
    collector = collector_of(registry)
    generate_text(registry)
    restricted = registry.restricted_registry(names)
    assert collector.exposition(False, set(names)) == generate_text(restricted)
    assert collector.exposition(True, set(names)) + b"# EOF\n" == generate_openmetrics(restricted)


_label = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)  # lone surrogates: no UTF-8


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_label, min_size=1, max_size=4), seconds=st.floats(0, 1e4))
def test_any_label_value_is_written_as_prometheus_client_writes_it(
    instrumented: Any, values: list[str], seconds: float
) -> None:
    registry, rec = instrumented
    if not rec.request_series:
        apply_events(rec, [event("a", "t", "m", True)])
    series = rec.request_series[0]
    store = ACTIVE.opened.claude_code.store
    for value in values:
        series.add("stops", value)
        series.add("errors", (value, values[0]))
        rec.overflow.inc((value,))
        store.add_agent(value)
        store.add("claude_code_tool_results_total", (values[0], value, "failure"), 1)
        store.observe_tool(value, values[-1], seconds)  # a histogram: labels on both sides of le
    collector = collector_of(registry)
    assert_same(registry, collector, parse=False)  # the same bytes: what one parser reads, so does the other
    # And the values read back as they were stored, in both formats.
    tool = "claude_code_tool_duration_seconds"
    names = {"claude_errors_total", f"{tool}_bucket", f"{tool}_count", f"{tool}_sum", "claude_agent_info"}
    for openmetrics in (False, True):
        text = collector.exposition(openmetrics, names).decode() + ("# EOF\n" if openmetrics else "")
        families = {f.name: f for f in (parse_openmetrics(text) if openmetrics else parse_text(text))}
        errors = {(s.labels["error_type"], s.labels["error_code"]) for s in families["claude_errors"].samples}
        assert {(value, values[0]) for value in values} <= errors
        tools = families[tool].samples
        assert {(value, values[-1]) for value in values} <= {
            (s.labels["agent"], s.labels["tool"]) for s in tools
        }
        assert set(values) <= {s.labels["agent"] for s in families["claude_agent_info"].samples}


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.integers(-(10**20), 10**20),
        st.integers(),
        st.floats(),
        st.sampled_from([0, 999_999, 1_000_000, 1e6, -0.0, 1e-7, 5e-324, 1e16, math.inf, -math.inf]),
    )
)
def test_go_float_is_float_to_go_string(value: float) -> None:
    try:
        expected = floatToGoString(value)
    except OverflowError:
        with pytest.raises(OverflowError):
            go_float(value)
        return
    assert go_float(value) == expected


# -- /metrics against prometheus_client's own app ----------------------------------------------------------

PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
ACCEPTS = [
    None,
    "",
    "*/*",
    "text/plain",
    "text/plain; version=0.0.4",
    "text/plain;version=1.0.0",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=underscores",
    "text/plain;version=1.0.0;escaping=dots",  # names rewritten: prometheus_client renders it all
    "text/plain;version=1.0.0;escaping=values",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0; charset=utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=underscores",
    "application/openmetrics-text;version=1.0.0;escaping=values",
    "application/openmetrics-text;version=0.0.1",  # below 1.0.0: the next type in the list, or text
    "application/openmetrics-text;version=2.0.0",
    "application/json",
    PROMETHEUS_2,
    PROMETHEUS_3,
]
QUERIES = [
    "",
    "name[]=claude_requests_total&name[]=app_jobs_total",
    "name[]=app_latency_seconds_bucket",
    "name[]=",
]


def app_metrics(registry: CollectorRegistry) -> None:
    """The application's own metrics beside the recorder's, of every kind prometheus_client has."""
    jobs = Counter("app_jobs", "Jobs.", ["queue"], registry=registry)
    jobs.labels('q"1').inc(3)
    Gauge("app_depth", "Queue depth.", registry=registry).set(7)
    Histogram("app_latency_seconds", "Latency.", registry=registry).observe(0.2)
    Summary("app_size_bytes", "Sizes.", registry=registry).observe(512)
    Info("app_build", "Build.", registry=registry).info({"version": "1.2"})
    Enum("app_state", "State.", states=["up", "down"], registry=registry).state("up")


def call(
    app: Callable[..., Iterable[bytes]], method: str, accept: str | None, encoding: str | None, query: str
) -> Any:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": "/metrics", "QUERY_STRING": query}
    if accept is not None:
        environ["HTTP_ACCEPT"] = accept
    if encoding is not None:
        environ["HTTP_ACCEPT_ENCODING"] = encoding
    response: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        response.update(status=status, headers=dict(headers))

    body = b"".join(app(environ, start_response))
    if response["headers"].get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return response["status"], response["headers"], body


def by_family(body: bytes, content_type: str) -> dict[str, Any]:
    """Parsed families by name: /metrics writes the recorder's families first, prometheus_client in
    registration order, so the order of families may differ; nothing else may."""
    openmetrics = content_type.startswith("application/openmetrics-text")
    families = parsed(body.decode(), openmetrics)
    out = {family[0]: family for family in families}
    assert len(out) == len(families), "a family written twice"
    return out


@pytest.fixture
def both(instrumented: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """/metrics and prometheus_client's app, on the recorder's registry with the application's metrics."""
    registry, rec = instrumented
    rich_state(rec)
    app_metrics(registry)
    generate_text(registry)
    return metrics_app(registry), prometheus_wsgi_app(registry)


@pytest.mark.parametrize("accept", ACCEPTS)
def test_metrics_serves_what_prometheus_client_serves(both: Any, accept: str | None) -> None:
    ours, theirs = both
    requests = [(query, None) for query in QUERIES] + [
        ("", e) for e in ("gzip", "br, gzip;q=0.5", "identity")
    ]
    for query, encoding in requests:
        status, headers, body = call(ours, "GET", accept, encoding, query)
        want_status, want_headers, want_body = call(theirs, "GET", accept, encoding, query)
        assert (status, headers) == (want_status, want_headers), (accept, encoding, query)
        content_type = headers["Content-Type"]
        if "escaping=dots" in content_type or "escaping=values" in content_type:
            # Escapings that rewrite names (which prometheus_client's parsers do not all read back):
            # prometheus_client writes everything.
            assert body == want_body
        else:
            assert by_family(body, content_type) == by_family(want_body, content_type)
        if headers["Content-Type"].startswith("application/openmetrics-text"):
            assert body.endswith(b"\n# EOF\n") and body.count(b"# EOF") == 1


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "POST", "PUT", "DELETE"])
def test_other_methods_are_answered_as_prometheus_client_answers_them(both: Any, method: str) -> None:
    ours, theirs = both
    assert call(ours, method, None, None, "") == call(theirs, method, None, None, "")


def test_the_writer_writes_the_recorder_families_and_prometheus_client_the_rest(both: Any) -> None:
    ours, _ = both
    _, headers, body = call(ours, "GET", PROMETHEUS_3, "gzip", "")
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == (
        "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"
    )
    families = by_family(body, headers["Content-Type"])
    assert {"claude_requests", "app_jobs", "app_build", "app_state", "claude_agent_info"} <= set(families)
    # The recorder's families come first; prometheus_client writes the others and the one # EOF.
    text = body.decode()
    assert text.startswith("# HELP claude_requests ")
    assert text.index("# TYPE app_jobs counter") > text.index("# TYPE claude_refusals counter")
