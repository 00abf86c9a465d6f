"""``POST /v1/events`` under hostile input: all or nothing, 400/411/413 never 500, bounded answers.

Each test here reproduces a finding of issue 9 against a real server over real sockets; the property tests
at the end drive :func:`parse_body` / :func:`apply_events` with generated bodies and check the same
guarantees for their neighbours.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import claude_exporter as ce
import pytest
from claude_exporter.config import parse_config
from claude_exporter.ingest.events import LIMITS, MAX_BODY, MAX_PROBLEMS, Event, apply_events, parse_body
from claude_exporter.recording.state import ACTIVE as STATE
from conftest import val
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

DEFAULT_AGENT = "hostile-fallback"


INSTRUMENT_CONFIG = parse_config({"monitoring": {}, "exporter": {"default_agent": DEFAULT_AGENT}})


def exchange(server: Any, head: str, body: bytes = b"", *, half_close: bool = True) -> tuple[int, bytes]:
    """Send a raw request (``head`` without the blank line), read the whole answer: (status, body)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    try:
        with contextlib.suppress(OSError):  # the server may answer early and close
            sock.sendall(head.encode() + b"\r\n\r\n" + body)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    finally:
        sock.close()
    raw = b"".join(chunks)
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def post(server: Any, body: bytes | str, length: int | str | None = None, **headers: str) -> tuple[int, Any]:
    data = body.encode() if isinstance(body, str) else body
    lines = ["POST /v1/events HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if length != "omit":
        lines.append(f"Content-Length: {len(data) if length is None else length}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    status, raw = exchange(server, "\r\n".join(lines), data)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def scrape_status(server: Any) -> int:
    return exchange(server, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close")[0]


def good(**fields: Any) -> dict[str, Any]:
    return {"event": "claude_execution_complete", "duration_ms": 100, "input_tokens": 5, **fields}


def applied(reg: CollectorRegistry, agent: str = DEFAULT_AGENT) -> float:
    return val(reg, "claude_requests_total", agent=agent, model="unknown", outcome="success")


# -- finding 1: a value no exposition can write ---------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("field", ["agent", "task", "model", "stop_reason"])
def test_a_lone_surrogate_is_refused_and_the_scrape_stays_up(server, reg, field):
    body = '{"event":"claude_execution_complete","duration_ms":1,"' + field + '":"\\ud800x"}\n'
    status, answer = post(server, body)
    assert status == 400, answer
    assert answer["problems"] == [f"line 1: {field}: must be valid Unicode text (a lone surrogate is not)"]
    assert scrape_status(server) == 200
    generate_latest(reg)  # and the registry itself renders


# -- finding 2: huge numbers ----------------------------------------------------------------------------


@pytest.mark.integration
def test_huge_token_counts_are_refused_with_their_range(server, reg):
    for _ in range(2):
        status, answer = post(server, json.dumps(good(input_tokens=10**308)))
        assert status == 400, answer
        [problem] = answer["problems"]
        assert (
            problem
            == f"line 1: input_tokens: must be an integer from 0 to {10**12}, got an integer of 309 digits"
        )
    assert scrape_status(server) == 200
    assert applied(reg) == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    "bad",
    [
        {"input_tokens": 10**400},
        {"requests": 10**400},
        {"duration_ms": 1e308},
        {"duration_ms": 10**400},
        {"output_tokens": 10**12 + 1},
    ],
    ids=["tokens-400-digits", "requests-400-digits", "duration-1e308", "duration-400-digits", "tokens-over"],
)
def test_a_bad_second_line_applies_nothing_of_the_first(server, reg, bad):
    body = json.dumps(good()) + "\n" + json.dumps(good(**bad)) + "\n"
    status, answer = post(server, body)
    assert status == 400, answer
    assert [p.split(":")[0] for p in answer["problems"]] == ["line 2"]
    assert applied(reg) == 0
    assert val(reg, "claude_exporter_events_total", source="http", result="accepted") == 0
    assert scrape_status(server) == 200


@pytest.mark.integration
@pytest.mark.parametrize("digits", [400, 4299, 5000])
def test_numbers_of_thousands_of_digits_are_400(server, reg, digits):
    status, answer = post(
        server, '{"event":"claude_execution_complete","duration_ms":1,"input_tokens":%s}' % ("9" * digits)
    )
    assert status == 400, answer
    assert answer["problems"][0].startswith("line 1: ")
    assert applied(reg) == 0


# -- finding 3: body size and framing (issue 18 made the answers those of every POST route: 400 for a
# length that is not a byte count, 411 for none or chunked; tests/test_ingest_bodies.py has the others)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("length", "status"),
    [
        *[("-1", 400), ("-5", 400), ("1e3", 400), ("0x10", 400), ("+5", 400)],
        *[("omit", 411), ("", 411), ("99999999999999999999", 413), ("9" * 5000, 413)],
    ],
    ids=["-1", "-5", "1e3", "0x10", "+5", "omitted", "empty", "20-digits", "5000-digits"],
)
def test_a_missing_or_malformed_content_length_is_refused_and_nothing_read(server, reg, length, status):
    got, answer = post(server, json.dumps(good()) + "\n", length=length)
    assert got == status, answer
    assert "Content-Length" in answer["error"]
    assert applied(reg) == 0


@pytest.mark.integration
def test_a_body_cut_short_of_its_content_length_is_400_and_not_applied(server, reg):
    line = (json.dumps(good()) + "\n").encode()
    status, answer = post(server, line, length=len(line) + 500)
    assert status == 400, answer
    assert answer["error"].startswith(f"body ended after {len(line)} of the {len(line) + 500} bytes")
    assert applied(reg) == 0


@pytest.mark.integration
def test_a_chunked_body_is_refused_saying_so(server, reg):
    line = (json.dumps(good()) + "\n").encode()
    chunked = f"{len(line):x}\r\n".encode() + line + b"\r\n0\r\n\r\n"
    status, answer = post(server, chunked, length="omit", Transfer_Encoding="chunked")
    assert status == 411, answer
    assert "chunked" in answer["error"]
    assert applied(reg) == 0


@pytest.mark.integration
def test_a_mebibyte_of_bad_lines_gets_a_small_answer(server, reg):
    line = b'{"event":"nope"}\n'
    count = MAX_BODY // len(line)
    status, answer = post(server, line * count)
    assert status == 400
    assert len(json.dumps(answer)) < 8192  # was 28 MB for this body
    assert len(answer["problems"]) == MAX_PROBLEMS
    assert answer["bad_lines"] == count
    assert answer["more_problems"] == 2 * count - MAX_PROBLEMS  # two problems per line, the rest counted
    assert val(reg, "claude_exporter_events_total", source="http", result="rejected") == count


# -- finding 7: NDJSON framing and nesting ---------------------------------------------------------------


@pytest.mark.integration
def test_ndjson_is_split_on_newline_only(server, reg):
    inside = json.dumps(good(execution_id="a\u2028b"), ensure_ascii=False)
    status, answer = post(server, inside + "\n")
    assert (status, answer) == (200, {"accepted": 1})
    assert applied(reg) == 1
    two = json.dumps(good()) + "\u2028" + json.dumps(good())
    status, answer = post(server, two)
    assert status == 400, answer
    assert answer["problems"][0].startswith("line 1: not JSON")


@pytest.mark.integration
def test_crlf_line_ends_are_accepted(server, reg):
    status, answer = post(server, json.dumps(good()) + "\r\n" + json.dumps(good()) + "\r\n")
    assert (status, answer) == (200, {"accepted": 2})


@pytest.mark.integration
def test_deep_nesting_is_400(server, reg):
    status, answer = post(server, "[" * 100_000 + "]" * 100_000)
    assert status == 400, answer
    assert answer["problems"] == ["line 1: not JSON we accept (nested too deeply)"]


# -- finding 10: what a person reads --------------------------------------------------------------------


@pytest.mark.integration
def test_a_missing_key_is_called_missing(server, reg):
    status, answer = post(server, '{"event":"something_else"}')
    assert status == 400
    assert "line 1: duration_ms: must be a number from 0 to 2592000000, missing" in answer["problems"]
    assert any(
        p.startswith("line 1: event: must be one of") and p.endswith('got "something_else"')
        for p in answer["problems"]
    )


# -- the class: any body, any value ---------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_keys = st.sampled_from(
    ["event", "duration_ms", "requests", "agent", "task", "model", *LIMITS, "error_type", "stop_reason"]
)
_events = st.fixed_dictionaries(
    {"event": st.sampled_from(["claude_execution_complete", "claude_execution_error"])},
    optional={
        "duration_ms": _values,
        "input_tokens": _values,
        "requests": _values,
        "agent": _values,
        "error_type": _values,
    },
) | st.dictionaries(_keys, _values, max_size=6)


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[CollectorRegistry, Any]]:
    if STATE.recorder is not None:
        ce.uninstrument()
    registry = CollectorRegistry()
    rec = ce.instrument(registry=registry)
    try:
        yield registry, rec
    finally:
        ce.uninstrument()


@pytest.mark.unit
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_events, min_size=1, max_size=4), st.sampled_from(["\n", "\r\n"]))
def test_any_body_is_all_or_nothing_and_never_breaks_the_scrape(recorder, objs, newline):
    registry, rec = recorder
    body = newline.join(json.dumps(obj) for obj in objs).encode("utf-8", "surrogatepass")
    before = registry.get_sample_value("claude_exporter_internal_errors_total", {"stage": "ingest"}) or 0.0
    total = lambda: sum(  # noqa: E731
        s.value
        for m in registry.collect()
        if m.name == "claude_requests"
        for s in m.samples
        if s.name.endswith("_total")
    )
    start = total()
    parsed = parse_body(body)  # never raises
    assert parsed.ok == (len(parsed.events) == len(objs))
    assert len(parsed.problems) <= MAX_PROBLEMS
    if parsed.ok:
        assert apply_events(rec, parsed.events) == len(objs)
        assert total() - start == len(objs)
    else:
        assert not parsed.problems or all(p.startswith(("line ", "body: ")) for p in parsed.problems)
    generate_latest(registry)  # whatever was accepted renders
    after = registry.get_sample_value("claude_exporter_internal_errors_total", {"stage": "ingest"}) or 0.0
    assert after == before


@pytest.mark.unit
@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_without_raising(data):
    parsed = parse_body(data)
    assert parsed.ok or parsed.problems
    assert all(isinstance(e, Event) for e in parsed.events)
