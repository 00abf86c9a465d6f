"""``POST /v1/events``: events in the event-log shape become exactly the metrics the SDK path records.

Each test gets the exporter server and a registry instrumented with ``INSTRUMENT_CONFIG`` (whose default
agent is ``ingest-fallback``), both from conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import urllib.error
import urllib.request
from typing import Any

import claude_exporter as ce
import pytest
from claude_exporter.config import parse_config
from claude_exporter.ingest.events import MAX_BODY
from claude_exporter.recording.pricing import load_price_table
from claude_exporter.recording.state import ACTIVE
from conftest import MODEL, UNKNOWN_MODEL, is_close, val
from prometheus_client import CollectorRegistry, generate_latest

pytestmark = pytest.mark.integration

DEFAULT_AGENT = "ingest-fallback"
OTHER_MODEL = "claude-sonnet-4-5"


# -- helpers -------------------------------------------------------------------------------------------------


INSTRUMENT_CONFIG = parse_config(
    {
        "monitoring": {"ingest-named": {"sampling_rate": 1.0}},
        "exporter": {"default_agent": DEFAULT_AGENT},
    }
)


def post(
    server: Any, body: bytes | str, method: str = "POST", content_type: str = "application/x-ndjson"
) -> tuple[int, dict[str, str], Any]:
    """(status, lower-case headers, JSON answer or the raw text)."""
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(
        server.url + "/v1/events",
        data=data if method == "POST" else None,
        method=method,
        headers={"Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status, headers, raw = resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as err:
        status, headers, raw = err.code, dict(err.headers.items()), err.read()
    headers = {k.lower(): v for k, v in headers.items()}
    answer = json.loads(raw) if headers.get("content-type") == "application/json" else raw.decode()
    return status, headers, answer


def ndjson(*events: dict[str, Any]) -> str:
    return "".join(json.dumps(event) + "\n" for event in events)


def ok(**fields: Any) -> dict[str, Any]:
    return {"event": "claude_execution_complete", "duration_ms": 100, **fields}


def err(error_type: str = "RateLimitError", **fields: Any) -> dict[str, Any]:
    return {"event": "claude_execution_error", "error_type": error_type, "duration_ms": 50, **fields}


def price_by_hand(model: str, *, input: int, output: int, cache_write: int = 0, cache_read: int = 0) -> float:
    price = load_price_table().lookup(model)
    assert price is not None
    return (
        input * price.input
        + output * price.output
        + cache_write * price.cache_write_5m
        + cache_read * price.cache_read
    ) / 1_000_000


def events_total(reg: CollectorRegistry, result: str) -> float:
    return val(reg, "claude_exporter_events_total", source="http", result=result)


def exposition_without_ingest_counter(reg: CollectorRegistry) -> list[str]:
    return [
        line
        for line in generate_latest(reg).decode().splitlines()
        if "claude_exporter_events" not in line and "longest_running" not in line
    ]


# -- accepted ------------------------------------------------------------------------------------------------


def test_one_object_becomes_exact_metrics(server, reg):
    event = ok(
        execution_id="abc123",
        duration_ms=1500,
        input_tokens=100,
        output_tokens=50,
        cache_creation_input_tokens=30,
        cache_read_input_tokens=7,
        stop_reason="end_turn",
        timestamp="2025-01-01T00:00:00.000Z",
        agent="ingest-named",
        task="summarise",
        model=MODEL,
        requests=3,
    )
    # One object, not NDJSON: no trailing newline, pretty-printed over one line.
    status, _, answer = post(server, json.dumps(event), content_type="application/json")
    assert (status, answer) == (200, {"accepted": 1})

    labels = {"agent": "ingest-named", "model": MODEL}
    assert val(reg, "claude_requests_total", **labels, outcome="success") == 1
    assert val(reg, "claude_requests_total", **labels, outcome="error") == 0
    assert {
        kind: val(reg, "claude_tokens_total", **labels, type=kind)
        for kind in ("input", "output", "cache_creation", "cache_read")
    } == {"input": 100, "output": 50, "cache_creation": 30, "cache_read": 7}
    cost = val(reg, "claude_cost_usd_total", **labels)
    assert is_close(cost, price_by_hand(MODEL, input=100, output=50, cache_write=30, cache_read=7))
    assert val(reg, "claude_stop_reasons_total", **labels, stop_reason="end_turn") == 1
    assert val(reg, "claude_request_duration_seconds_count", **labels) == 1
    assert val(reg, "claude_request_duration_seconds_sum", **labels) == 1.5

    exec_labels = {"agent": "ingest-named", "task": "summarise"}
    assert val(reg, "claude_executions_total", **exec_labels, outcome="success") == 1
    assert val(reg, "claude_execution_duration_seconds_sum", **exec_labels) == 1.5
    assert val(reg, "claude_execution_tokens_sum", **exec_labels, type="input") == 137
    assert val(reg, "claude_execution_tokens_sum", **exec_labels, type="output") == 50
    assert val(reg, "claude_execution_requests_sum", **exec_labels) == 3
    assert events_total(reg, "accepted") == 1
    assert events_total(reg, "rejected") == 0


def test_ndjson_of_several_events(server, reg):
    body = ndjson(
        ok(agent="a1", task="plan", model=MODEL, input_tokens=10, output_tokens=20, stop_reason="end_turn"),
        ok(agent="a1", task="plan", model=MODEL, input_tokens=1, output_tokens=2, stop_reason="max_tokens"),
        err("RateLimitError", agent="a1", task="plan", model=MODEL),
        err("OverloadedError", agent="a1", task="code", model=MODEL, error_message="Overloaded"),
        ok(agent="a2", model=OTHER_MODEL, input_tokens=1000, output_tokens=100, duration_ms=250.5),
    )
    body += "\n   \n"  # blank lines are allowed and ignored
    status, _, answer = post(server, body)
    assert (status, answer) == (200, {"accepted": 5})

    a1 = {"agent": "a1", "model": MODEL}
    assert val(reg, "claude_requests_total", **a1, outcome="success") == 2
    assert val(reg, "claude_requests_total", **a1, outcome="error") == 2
    assert val(reg, "claude_tokens_total", **a1, type="input") == 11
    assert val(reg, "claude_tokens_total", **a1, type="output") == 22
    assert val(reg, "claude_errors_total", **a1, error_type="RateLimitError", error_code="none") == 1
    assert val(reg, "claude_errors_total", **a1, error_type="OverloadedError", error_code="none") == 1
    assert val(reg, "claude_stop_reasons_total", **a1, stop_reason="end_turn") == 1
    assert val(reg, "claude_stop_reasons_total", **a1, stop_reason="max_tokens") == 1
    assert is_close(val(reg, "claude_cost_usd_total", **a1), price_by_hand(MODEL, input=11, output=22))
    assert val(reg, "claude_executions_total", agent="a1", task="plan", outcome="success") == 2
    assert val(reg, "claude_executions_total", agent="a1", task="plan", outcome="error") == 1
    assert val(reg, "claude_executions_total", agent="a1", task="code", outcome="error") == 1
    # No task: "default".
    a2 = {"agent": "a2", "model": OTHER_MODEL}
    assert val(reg, "claude_executions_total", agent="a2", task="default", outcome="success") == 1
    a2_cost = price_by_hand(OTHER_MODEL, input=1000, output=100)
    assert is_close(val(reg, "claude_cost_usd_total", **a2), a2_cost)
    assert val(reg, "claude_request_duration_seconds_sum", **a2) == pytest.approx(0.2505)
    assert events_total(reg, "accepted") == 5


def test_default_agent_and_model(server, reg):
    status, _, _ = post(server, ndjson(ok(input_tokens=4, output_tokens=5), err("APITimeoutError")))
    assert status == 200
    # The configured default agent; model "unknown", which is unpriced.
    labels = {"agent": DEFAULT_AGENT, "model": "unknown"}
    assert val(reg, "claude_requests_total", **labels, outcome="success") == 1
    assert val(reg, "claude_requests_total", **labels, outcome="error") == 1
    assert val(reg, "claude_errors_total", **labels, error_type="APITimeoutError", error_code="none") == 1
    assert val(reg, "claude_executions_total", agent=DEFAULT_AGENT, task="default", outcome="success") == 1
    assert val(reg, "claude_exporter_unpriced_tokens_total", model="unknown", reason="model") == 9
    assert val(reg, "claude_cost_usd_total", **labels) == 0
    assert val(reg, "claude_requests_total", agent="default", model="unknown", outcome="success") == 0


def test_unpriced_model_counts_its_tokens(server, reg):
    body = ndjson(
        ok(model=UNKNOWN_MODEL, input_tokens=100, output_tokens=20, cache_read_input_tokens=5),
        ok(model=UNKNOWN_MODEL, input_tokens=1, output_tokens=1, cache_creation_input_tokens=2),
        ok(model=MODEL, input_tokens=1000, output_tokens=1000),
    )
    assert post(server, body)[0] == 200
    assert val(reg, "claude_exporter_unpriced_tokens_total", model=UNKNOWN_MODEL, reason="model") == 125 + 4
    assert val(reg, "claude_cost_usd_total", agent=DEFAULT_AGENT, model=UNKNOWN_MODEL) == 0
    assert val(reg, "claude_tokens_total", agent=DEFAULT_AGENT, model=UNKNOWN_MODEL, type="input") == 101
    # A priced model never gets an unpriced series.
    assert (
        reg.get_sample_value("claude_exporter_unpriced_tokens_total", {"model": MODEL, "reason": "model"})
        is None
    )
    assert is_close(
        val(reg, "claude_cost_usd_total", agent=DEFAULT_AGENT, model=MODEL),
        price_by_hand(MODEL, input=1000, output=1000),
    )


def test_ingested_events_feed_the_health_window(server, reg):
    body = ndjson(ok(agent="h", duration_ms=100), ok(agent="h", duration_ms=300), err(agent="h"))
    assert post(server, body)[0] == 200
    with urllib.request.urlopen(server.url + "/health/claude-agent", timeout=5) as resp:
        doc = json.loads(resp.read())
    assert doc["agents"]["h"]["executions"] == 3
    assert doc["agents"]["h"]["avg_execution_ms"] == 150.0
    assert doc["agents"]["h"]["error_rate_percent"] == pytest.approx(33.33)


# -- rejected: nothing applied -------------------------------------------------------------------------------


def test_bad_lines_reject_the_whole_body(server, reg):
    assert post(server, ndjson(ok(agent="x", model=MODEL, input_tokens=1)))[0] == 200
    before = exposition_without_ingest_counter(reg)

    lines = [
        json.dumps(ok(agent="x", model=MODEL, input_tokens=5)),  # 1: good
        json.dumps({"event": "claude_execution_complete", "input_tokens": 3}),  # 2: no duration_ms
        json.dumps(ok(agent="x", model=MODEL)),  # 3: good
        json.dumps(ok(input_tokens=-1, output_tokens="7", event="claude_done")),  # 4: three problems
        "",  # 5: blank
        json.dumps(err(agent="x", model=MODEL)),  # 6: good
        json.dumps({"event": "claude_execution_error", "duration_ms": 5}),  # 7: no error_type
        json.dumps(ok(agent="", requests=0)),  # 8: two problems
    ]
    status, headers, answer = post(server, "\n".join(lines) + "\n")
    assert status == 400
    assert headers["content-type"] == "application/json"
    problems = answer["problems"]
    assert isinstance(problems, list)
    numbers = sorted({p.split(":", 1)[0] for p in problems})
    assert numbers == ["line 2", "line 4", "line 7", "line 8"]
    expected_fields = {
        "line 2": {"duration_ms"},
        "line 4": {"event", "input_tokens", "output_tokens"},
        "line 7": {"error_type"},
        "line 8": {"agent", "requests"},
    }
    for line, fields in expected_fields.items():
        named = {p.split(": ")[1] for p in problems if p.startswith(line + ":")}
        assert named == fields, (line, problems)
    assert any(p.startswith("line 4: input_tokens: ") and "-1" in p for p in problems)

    # Nothing applied: every metric as before, the good lines included.
    assert exposition_without_ingest_counter(reg) == before
    assert val(reg, "claude_requests_total", agent="x", model=MODEL, outcome="success") == 1
    assert events_total(reg, "accepted") == 1
    # The rejection is counted (per bad line, or per line of the refused body).
    assert events_total(reg, "rejected") in (4, 7)


def test_a_non_json_line(server, reg):
    body = json.dumps(ok()) + "\n" + '{"event": "claude_execution_complete", "duration_ms": 1' + "\n"
    status, _, answer = post(server, body)
    assert status == 400
    [problem] = answer["problems"]
    assert problem.startswith("line 2: ")
    assert "JSON" in problem
    assert val(reg, "claude_requests_total", agent=DEFAULT_AGENT, model="unknown", outcome="success") == 0
    assert events_total(reg, "accepted") == 0


@pytest.mark.parametrize(
    ("body", "start"),
    [
        ("[1, 2]\n", "line 1: "),
        ('"claude_execution_complete"\n', "line 1: "),
        ("", "body: "),
        ("\n\n", "body: "),
        (b"\xff\xfe{}", "body: "),
    ],
    ids=["array", "string", "empty", "blank", "not-utf8"],
)
def test_bodies_that_are_not_events(server, reg, body, start):
    status, _, answer = post(server, body)
    assert status == 400
    assert answer["problems"]
    assert all(p.startswith(start) for p in answer["problems"]), answer
    assert events_total(reg, "accepted") == 0


# -- size limit and methods ----------------------------------------------------------------------------------


def raw_post(server: Any, body: bytes) -> bytes:
    """POST over a plain socket, reading the answer while the body is still being sent (as curl does), so
    an early answer is seen even when the server does not read the rest of the body."""
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)

    def send() -> None:
        # The server may answer early and close: expected for a refused body.
        with contextlib.suppress(OSError):
            sock.sendall(head + body)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    finally:
        sender.join(10)
        sock.close()
    return b"".join(chunks)


def test_a_body_of_exactly_one_mib_is_accepted(server, reg):
    line = json.dumps(ok(input_tokens=3)).encode() + b"\n"
    body = line + b" " * (MAX_BODY - len(line))  # padding: one blank line
    assert len(body) == 1 << 20 == MAX_BODY
    status, _, answer = post(server, body)
    assert (status, answer) == (200, {"accepted": 1})


def test_over_one_mib_is_413_and_nothing_applied(server, reg):
    line = json.dumps(ok(input_tokens=3)).encode() + b"\n"
    body = line + b" " * (MAX_BODY + 1 - len(line))
    assert len(body) == (1 << 20) + 1
    answer = raw_post(server, body)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"413", answer[:200]
    assert b"application/json" in rest
    assert val(reg, "claude_tokens_total", agent=DEFAULT_AGENT, model="unknown", type="input") == 0
    assert events_total(reg, "accepted") == 0


def test_a_far_bigger_body_still_gets_413(server, reg):
    answer = raw_post(server, b"x" * (8 << 20))
    assert answer.split(b"\r\n", 1)[0].split()[1] == b"413"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_are_405(server, reg, method):
    status, headers, _ = post(server, ndjson(ok()), method=method)
    assert status == 405
    assert headers.get("allow") == "POST"
    assert events_total(reg, "accepted") == 0


def test_not_instrumented_is_503(server):
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    status, _, answer = post(server, ndjson(ok()))
    assert status == 503
    assert "error" in answer
