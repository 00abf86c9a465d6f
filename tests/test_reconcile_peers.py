"""``claude-exporter reconcile`` against hostile peers (issue 18, rows 14-16): answers of the wrong shape,
a peer that sends one byte at a time, a page without end. Whatever the Admin API or Prometheus send, the
command prints a report or one ``claude-exporter reconcile:`` line and exits 1; never a traceback, never
past its deadline by more than a moment, never more memory than its size cap allows."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
from claude_exporter.cli import main
from claude_exporter.cli.reconcile.peer import MAX_ANSWER_BYTES
from claude_exporter.testing.admin_api import FakeAdminAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reconcile_peers import FakePrometheus, RawServer

KEY_ENV = "TEST_RECONCILE_PEERS_KEY"
KEY = "sk-ant-admin-peers"
COST = "/v1/organizations/cost_report"
USAGE = "/v1/organizations/usage_report/messages"
DAY = "2026-11-20T00:00:00Z"


@pytest.fixture
def admin() -> Iterator[FakeAdminAPI]:
    with FakeAdminAPI(key=KEY) as fake:
        yield fake


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    with FakePrometheus() as fake:
        yield fake


def _run(admin_url: str, prometheus_url: str, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    monkeypatch.setenv(KEY_ENV, KEY)
    args = ["reconcile", "--admin-key-env", KEY_ENV, "--since", "48h", "--prometheus", prometheus_url]
    return main([*args, "--admin-url", admin_url, *extra])


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("claude-exporter reconcile: "), err
    return lines[0]


# --------------------------------------------------------------------------------------- row 14: shapes

_BUCKET = {"starting_at": DAY, "ending_at": "2026-11-21T00:00:00Z"}
_ITEM = {"model": "claude-opus-4-6", "uncached_input_tokens": 1, "output_tokens": 1}


def _page(data: object) -> bytes:
    return json.dumps({"data": data, "has_more": False, "next_page": None}).encode()


ADMIN_SHAPES = [
    (COST, _page([5]), f"Admin API {COST}: data[0] is 5, not an object"),
    (COST, _page([{**_BUCKET, "results": 5}]), f"Admin API {COST}: data[0].results is 5, not a list"),
    (
        COST,
        _page([{**_BUCKET, "results": [[1]]}]),
        f"Admin API {COST}: data[0].results[0] is a list, not an object",
    ),
    (COST, _page({"a": 1}), f"Admin API {COST}: data is an object, not a list"),
    (COST, b'{"data": [], "has_more": 5}', f"Admin API {COST}: has_more is 5, not true or false"),
    (
        COST,
        _page([{**_BUCKET, "results": [{"amount": [1]}]}]),
        f"Admin API {COST}: data[0].results[0].amount is a list",
    ),
    (COST, _page([{"starting_at": 7, "results": []}]), f"Admin API {COST}: data[0].starting_at is 7, not"),
    (COST, b"[" * 200_000 + b"]" * 200_000, f"Admin API {COST}: the answer is nested too deeply"),
    (COST, b"[1, 2", f"Admin API {COST}: the answer is not JSON"),
    (
        USAGE,
        _page([{**_BUCKET, "results": [{**_ITEM, "cache_creation": [3]}]}]),
        f"Admin API {USAGE}: data[0].results[0].cache_creation is a list, not an object",
    ),
    (
        USAGE,
        _page([{**_BUCKET, "results": [{**_ITEM, "output_tokens": "many"}]}]),
        f"Admin API {USAGE}: data[0].results[0].output_tokens is a string, not a count",
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize(("path", "body", "expected"), ADMIN_SHAPES)
def test_an_admin_answer_of_the_wrong_shape_is_one_line_naming_where(
    admin: FakeAdminAPI,
    prometheus: FakePrometheus,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    path: str,
    body: bytes,
    expected: str,
) -> None:
    admin.answers[path] = body
    assert _run(admin.url, prometheus.url, monkeypatch) == 1
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert expected in line, line
    assert captured.out == ""
    assert KEY not in line


PROMETHEUS_SHAPES = [
    (b'{"status": "success", "data": []}', "data is a list, not an object"),
    (b'{"status": "success", "data": {"result": 5}}', "data.result is 5, not a list"),
    (
        b'{"status": "success", "data": {"result": [{"metric": [], "value": [0, "1"]}]}}',
        "data.result[0].metric is a list, not an object",
    ),
    (
        b'{"status": "success", "data": {"result": [{"metric": {"model": 5}, "value": [0, "1"]}]}}',
        "data.result[0].metric.model is 5, not a string",
    ),
    (
        b'{"status": "success", "data": {"result": [{"metric": {}, "value": {"a": 1}}]}}',
        "data.result[0].value is an object, not a list",
    ),
    (b'{"status": "error", "error": {"deep": [1]}}', "query failed"),
    (b"5", "the answer is 5, not an object"),
    (b'{"a":' * 100_000, "the answer is nested too deeply"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("body", "expected"), PROMETHEUS_SHAPES)
def test_a_prometheus_answer_of_the_wrong_shape_is_one_line_naming_where(
    admin: FakeAdminAPI,
    prometheus: FakePrometheus,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    body: bytes,
    expected: str,
) -> None:
    prometheus.answer = body
    assert _run(admin.url, prometheus.url, monkeypatch) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"claude-exporter reconcile: Prometheus at {prometheus.url} /api/v1/query: "), line
    assert expected in line, line


# ------------------------------------------------------------------------------ row 15: one byte at a time


def _dribble(in_headers: bool) -> object:
    def handler(path: str, conn: socket.socket, stopping: threading.Event) -> None:
        if in_headers:
            head, body = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000, b""
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            body = b'{"data": [' + b" " * 99_990
            conn.sendall(head)
            head = b""
        # One byte every 0.2 s for at most 30 s: without a deadline the reader waits all of it.
        for byte in (head or body)[:150]:
            if stopping.wait(0.2):
                return
            conn.sendall(bytes([byte]))
        conn.close()

    return handler


@pytest.mark.integration
@pytest.mark.parametrize("in_headers", [False, True], ids=["body", "headers"])
def test_a_peer_sending_one_byte_at_a_time_meets_the_deadline(
    prometheus: FakePrometheus,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    in_headers: bool,
) -> None:
    with RawServer(_dribble(in_headers)) as slow:  # type: ignore[arg-type]
        assert _run(slow.url, prometheus.url, monkeypatch, "--deadline", "1.5") == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "no complete answer within the 1.5 s deadline (--deadline)" in line, line
    assert line.startswith("claude-exporter reconcile: Admin API /v1/organizations/"), line


@pytest.mark.unit
def test_the_deadline_is_stated_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["reconcile", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--deadline SECONDS" in text
    assert "the most the whole run may take, every request to the Admin API and Prometheus" in text
    assert "Prometheus included (default: 120)" in text


# --------------------------------------------------------------------------------- row 16: an endless page


def _endless(sent: list[int], declared: int | None) -> object:
    def handler(path: str, conn: socket.socket, stopping: threading.Event) -> None:
        length = f"Content-Length: {declared}\r\n" if declared is not None else ""
        conn.sendall(
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n".encode()
        )
        item = b'{"starting_at": "2026-11-20T00:00:00Z", "results": []}, '
        chunk = item * (65536 // len(item))
        total = 0
        try:
            conn.sendall(b'{"has_more": false, "data": [')
            while total < 2 * MAX_ANSWER_BYTES and not stopping.is_set():
                conn.sendall(chunk)
                total += len(chunk)
            conn.sendall(item[:-2] + b"]}")
        except OSError:
            pass
        finally:
            sent.append(total)
            conn.close()

    return handler


@pytest.mark.integration
@pytest.mark.parametrize("declared", [None, 200 * 1024 * 1024], ids=["no-length", "200MiB-declared"])
def test_an_answer_past_the_size_cap_is_refused_naming_the_cap(
    prometheus: FakePrometheus,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    declared: int | None,
) -> None:
    sent: list[int] = []
    with RawServer(_endless(sent, declared)) as big:  # type: ignore[arg-type]
        assert _run(big.url, prometheus.url, monkeypatch) == 1
    line = _one_error_line(capsys.readouterr().err)
    cap = MAX_ANSWER_BYTES // (1024 * 1024)
    assert f"the answer is larger than the {cap} MiB cap" in line, line
    # The reader stopped reading: the peer could not hand over its whole page.
    assert sent and sent[0] < 2 * MAX_ANSWER_BYTES


# ------------------------------------------------------------------------------ property: any JSON at all

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "data",
        "has_more",
        "next_page",
        "results",
        "starting_at",
        "amount",
        "model",
        "cost_type",
        "service_tier",
        "status",
        "result",
        "metric",
        "value",
        "uncached_input_tokens",
        "cache_creation",
        "server_tool_use",
    ]
)
# Objects with the keys reconcile reads, so the answers get past the first check often.
_shaped = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=6)
    | st.sampled_from([DAY, "success", "12.5"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=25,
)


@pytest.mark.integration
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=_json | _shaped, which=st.integers(0, 4))
def test_any_json_from_either_peer_gives_a_report_or_one_line(
    admin: FakeAdminAPI,
    prometheus: FakePrometheus,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answer: object,
    which: int,
) -> None:
    admin.answers.clear()
    prometheus.answer = None
    body = json.dumps(answer).encode()
    if which == 4:
        prometheus.answer = body
    elif which >= 2:  # the analytics reports (the usage report is read after a valid cost report)
        analytics = "/v1/organizations/analytics/"
        admin.answers[analytics + "cost_report"] = body if which == 2 else _page([])
        if which == 3:
            admin.answers[analytics + "usage_report"] = body
    else:
        admin.answers[(COST, USAGE)[which]] = body
    code = _run(admin.url, prometheus.url, monkeypatch)
    captured = capsys.readouterr()
    assert code in (0, 1)
    if captured.err:
        assert code == 1
        _one_error_line(captured.err)
    else:
        assert "Reconciliation of" in captured.out


# ------------------------------------------------------------------------------------- more of the same


@pytest.mark.integration
def test_a_redirect_is_not_followed_so_the_key_stays_home(
    prometheus: FakePrometheus, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    heads: list[str] = []

    def elsewhere(path: str, conn: socket.socket, stopping: threading.Event) -> None:
        heads.append(path)
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn.close()

    with RawServer(elsewhere) as other:

        def redirect(path: str, conn: socket.socket, stopping: threading.Event) -> None:
            conn.sendall(
                f"HTTP/1.1 302 Found\r\nLocation: {other.url}{path}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            conn.close()

        with RawServer(redirect) as admin:
            assert _run(admin.url, prometheus.url, monkeypatch) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.endswith("Admin API /v1/organizations/analytics/cost_report answered HTTP 302"), line
    assert heads == []  # the request (and its x-api-key) never went to the other host


@pytest.mark.unit
@pytest.mark.parametrize(
    ("flag", "url", "problem"),
    [
        ("--prometheus", "prometheus:9090", "not an http:// or https:// URL with a host"),
        ("--prometheus", "http://:9090", "not an http:// or https:// URL with a host"),
        ("--admin-url", "http://api:port", "Port could not be cast to integer value as 'port'"),
        ("--admin-url", "ftp://api.example", "not an http:// or https:// URL with a host"),
    ],
)
def test_a_url_that_cannot_name_a_peer_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flag: str, url: str, problem: str
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    args = {"--prometheus": "http://127.0.0.1:9", "--admin-url": "http://127.0.0.1:9", flag: url}
    assert main(["reconcile", "--admin-key-env", KEY_ENV, *(x for kv in args.items() for x in kv)]) == 2
    assert capsys.readouterr().err == f"claude-exporter reconcile: {flag} {url!r}: {problem}\n"
