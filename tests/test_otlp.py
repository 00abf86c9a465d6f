"""The OTLP/HTTP receiver and hooks endpoint without the CLI: export requests the tests write (shaped like
Claude Code 2.1.328's, see ``otlp_payloads.py``) over real HTTP, read back from the exposition.

Covers the encodings (protobuf, JSON, gzip), partial success, unreadable bodies (nothing applied), the
bearer token, delta and cumulative temporality with resets, twelve parallel writers into one series,
re-sent batches, the hook join and the rule that identities never become labels. The real CLI is in
``test_claude_code_cli.py``.
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
import time
import urllib.error
import urllib.request
from typing import Any

import claude_exporter as ce
import pytest
from claude_exporter.config import parse_config
from claude_exporter.ingest.events import MAX_BODY
from claude_exporter.recording.state import ACTIVE
from conftest import expected_cost, is_close, scrape, val
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from otlp_payloads import (
    CUMULATIVE,
    DELTA,
    T0,
    api_request,
    as_json,
    event,
    logs_request,
    resource,
    sums_request,
)
from prometheus_client import CollectorRegistry

PROTOBUF = "application/x-protobuf"
MODEL = "claude-sonnet-4-5"
AGENT = "claude-code"
TOKEN = "otlp-test-token"


SERVER_OPTIONS = {"token": TOKEN, "otlp": True}  # conftest's server: the token and the OTLP routes
OTLP_SETTINGS = {"turn_idle_seconds": 0.2, "hook_join_seconds": 0.2}
INSTRUMENT_CONFIG = parse_config({"monitoring": {}, "exporter": {"otlp": OTLP_SETTINGS}})  # conftest's reg


def instrument(**otlp: Any) -> CollectorRegistry:
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    registry = CollectorRegistry()
    settings = {**OTLP_SETTINGS, **otlp}
    ce.instrument(config=parse_config({"monitoring": {}, "exporter": {"otlp": settings}}), registry=registry)
    return registry


def post(
    server: Any,
    path: str,
    body: bytes,
    content_type: str = PROTOBUF,
    *,
    encoding: str | None = None,
    token: str | None = TOKEN,
    query: str = "",
) -> tuple[int, str, bytes]:
    headers = {"Content-Type": content_type}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(server.url + path + query, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def logs(server: Any, records: list[dict[str, Any]], res: dict[str, str] | None = None) -> Any:
    status, ctype, body = post(server, "/v1/logs", logs_request(records, res))
    assert (status, ctype) == (200, PROTOBUF), body
    answer = ExportLogsServiceResponse()
    answer.ParseFromString(body)
    return answer


def sums(server: Any, points: list[Any], temporality: int = DELTA, res: dict[str, str] | None = None) -> Any:
    status, ctype, body = post(server, "/v1/metrics", sums_request(points, temporality=temporality, res=res))
    assert (status, ctype) == (200, PROTOBUF), body
    answer = ExportMetricsServiceResponse()
    answer.ParseFromString(body)
    return answer


def turn(prompt: str, session: str, *records: dict[str, Any], ok: bool = True) -> list[dict[str, Any]]:
    """A whole turn: user_prompt, the records, then assistant_response (when ``ok``)."""
    out = [event("user_prompt", session, **{"prompt.id": prompt}, prompt="<REDACTED>", prompt_length="9")]
    out += list(records)
    if ok:
        out.append(event("assistant_response", session, **{"prompt.id": prompt}, model=MODEL))
    return out


def stop(server: Any, session: str, hook: str = "Stop") -> None:
    """Claude Code's Stop (or SessionEnd) hook for ``session``: its turn is over."""
    body = json.dumps({"hook_event_name": hook, "session_id": session, "stop_hook_active": False})
    status, _, answer = post(server, "/v1/hooks", body.encode(), "application/json")
    assert status == 200, answer
    time.sleep(0.25)  # its turn ends at the next scrape after hook_join_seconds (0.2 here)


def cost_of(tokens: tuple[int, int, int, int], model: str = MODEL) -> float:
    return expected_cost(model, input=tokens[0], output=tokens[1], cache_5m=tokens[2], cache_read=tokens[3])


def request_figures(reg: CollectorRegistry, agent: str = AGENT, model: str = MODEL) -> dict[str, float]:
    labels = {"agent": agent, "model": model}
    return {
        "success": val(reg, "claude_requests_total", **labels, outcome="success"),
        "error": val(reg, "claude_requests_total", **labels, outcome="error"),
        "input": val(reg, "claude_tokens_total", **labels, type="input"),
        "output": val(reg, "claude_tokens_total", **labels, type="output"),
        "cache_creation": val(reg, "claude_tokens_total", **labels, type="cache_creation"),
        "cache_read": val(reg, "claude_tokens_total", **labels, type="cache_read"),
        "cost": val(reg, "claude_cost_usd_total", **labels),
        "duration_count": val(reg, "claude_request_duration_seconds_count", **labels),
        "duration_sum": val(reg, "claude_request_duration_seconds_sum", **labels),
    }


# -- events: requests, errors, retries, executions ----------------------------------------------------------


@pytest.mark.integration
def test_events_become_exact_request_and_execution_metrics(server, reg):
    records = turn(
        "p1",
        "s1",
        api_request("req_1", tokens=(100, 20, 5, 7), duration_ms=1500, ttft_ms=300),
        api_request("req_2", tokens=(30, 10, 0, 200), duration_ms=500, ttft_ms=100, as_strings=True),
    )
    records += turn(
        "p2",
        "s1",
        event(
            "api_error",
            "s1",
            **{"prompt.id": "p2"},
            model=MODEL,
            error="Overloaded",
            status_code="529",
            duration_ms=40,
            attempt=3,
            request_id="req_3",
            query_source="sdk",
        ),
        event("api_retries_exhausted", "s1", **{"prompt.id": "p2"}, model=MODEL, total_attempts=3),
        ok=False,
    )
    answer = logs(server, records)
    assert not answer.HasField("partial_success")
    figures = request_figures(reg)
    assert figures == {
        "success": 2,
        "error": 1,
        "input": 130,
        "output": 30,
        "cache_creation": 5,
        "cache_read": 207,
        "cost": pytest.approx(cost_of((100, 20, 5, 7)) + cost_of((30, 10, 0, 200)), rel=1e-9),
        "duration_count": 3,
        "duration_sum": pytest.approx(2.04),
    }
    assert val(reg, "claude_time_to_first_token_seconds_count", agent=AGENT, model=MODEL) == 2
    assert (
        val(
            reg,
            "claude_errors_total",
            agent=AGENT,
            model=MODEL,
            error_type="OverloadedError",
            error_code="none",
        )
        == 1
    )
    assert val(reg, "claude_retries_total", agent=AGENT, model=MODEL, reason="529", error_code="none") == 2
    # Each prompt is an execution (the session's next prompt ends the first, retries exhausted the second);
    # the main loop's query source ("sdk" for claude -p) is no task: the task is "default".
    assert val(reg, "claude_executions_total", agent=AGENT, task="default", outcome="success") == 1
    assert val(reg, "claude_executions_total", agent=AGENT, task="default", outcome="error") == 1
    assert val(reg, "claude_execution_requests_sum", agent=AGENT, task="default") == 3
    assert val(reg, "claude_execution_tokens_sum", agent=AGENT, task="default", type="input") == 130 + 5 + 207
    assert val(reg, "claude_exporter_events_total", source="otlp", result="accepted") == len(records)


@pytest.mark.integration
def test_agent_and_task_come_from_resource_attributes(server, reg):
    res = resource("billing-bot", task="nightly-fix")
    logs(server, turn("p1", "s9", api_request("req_a", session="s9")), res)
    stop(server, "s9")
    assert request_figures(reg, agent="billing-bot")["success"] == 1
    assert (
        val(reg, "claude_executions_total", agent="billing-bot", task="nightly-fix", outcome="success") == 1
    )
    assert val(reg, "claude_agent_info", agent="billing-bot", source="claude_code") == 1


@pytest.mark.integration
def test_an_unanswered_turn_ends_when_it_goes_quiet(server, reg):
    # Three attempts failed and the api_retries_exhausted that would end the turn never came.
    error = event(
        "api_error",
        "s2",
        **{"prompt.id": "p9"},
        model=MODEL,
        status_code=400,
        attempt=3,
        duration_ms=5,
        query_source="sdk",
    )
    logs(server, turn("p9", "s2", error, ok=False))
    assert val(reg, "claude_executions_in_flight", agent=AGENT, task="default") == 1

    time.sleep(0.3)  # turn_idle_seconds is 0.2 here
    assert val(reg, "claude_executions_total", agent=AGENT, task="default", outcome="error") == 1
    assert val(reg, "claude_executions_in_flight", agent=AGENT, task="default") == 0
    assert (
        val(
            reg,
            "claude_errors_total",
            agent=AGENT,
            model=MODEL,
            error_type="BadRequestError",
            error_code="none",
        )
        == 1
    )


@pytest.mark.integration
def test_a_resent_batch_and_a_resent_request_count_once(server, reg):
    records = turn("p1", "s1", api_request("req_1"), api_request("req_2"))
    body = logs_request(records)
    for _ in range(3):
        assert post(server, "/v1/logs", body)[0] == 200
    # The same request again in another batch, with a new sequence number (a re-sent event).
    logs(server, [api_request("req_2")])
    stop(server, "s1")
    figures = request_figures(reg)
    assert (figures["success"], figures["input"], figures["output"]) == (2, 200, 40)
    assert val(reg, "claude_executions_total", agent=AGENT, task="default", outcome="success") == 1


@pytest.mark.integration
def test_an_unpriced_model_takes_claude_codes_own_cost(server, reg):
    logs(server, [api_request("req_x", model="claude-future-9", cost_usd=0.25)])
    assert val(reg, "claude_cost_usd_total", agent=AGENT, model="claude-future-9") == 0.25
    assert val(reg, "claude_exporter_unpriced_tokens_total", model="claude-future-9", reason="model") == 0


@pytest.mark.integration
def test_json_and_gzip_give_the_same_figures(server, reg):
    records = turn("p1", "s1", api_request("req_1", tokens=(11, 3, 0, 0)))
    body = gzip.compress(as_json("logs", logs_request(records)))
    status, ctype, answer = post(server, "/v1/logs", body, "application/json", encoding="gzip")
    assert (status, ctype, json.loads(answer)) == (200, "application/json", {})
    figures = request_figures(reg)
    assert (figures["success"], figures["input"], figures["output"]) == (1, 11, 3)
    assert is_close(figures["cost"], cost_of((11, 3, 0, 0)))


@pytest.mark.integration
def test_json_with_hex_trace_ids_as_the_javascript_exporter_writes_them(server, reg):
    doc = json.loads(as_json("logs", logs_request([api_request("req_1")])))
    record = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    record["traceId"], record["spanId"] = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    status, _, answer = post(server, "/v1/logs", json.dumps(doc).encode(), "application/json")
    assert (status, json.loads(answer)) == (200, {})
    assert request_figures(reg)["success"] == 1


# -- partial success and unreadable bodies -------------------------------------------------------------------


@pytest.mark.integration
def test_bad_records_are_rejected_by_name_and_the_rest_applied(server, reg):
    bad = api_request("req_bad", tokens=(-5, 1, 0, 0))
    no_model = api_request("req_nomodel")
    del no_model["model"]
    answer = logs(server, [api_request("req_good"), bad, no_model])
    assert answer.partial_success.rejected_log_records == 2
    assert "api_request: input_tokens: must be an integer from 0 to 1000000000000, got -5" in (
        answer.partial_success.error_message
    )
    assert "api_request: model: required" in answer.partial_success.error_message
    assert request_figures(reg)["success"] == 1
    assert val(reg, "claude_exporter_events_total", source="otlp", result="rejected") == 2


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "content_type", "encoding", "status"),
    [
        (b"\xff\xff\xff not protobuf", PROTOBUF, None, 400),
        (b"[1, 2]", "application/json", None, 400),
        (b"{not json", "application/json", None, 400),
        (b'{"resourceLogs": "nope"}', "application/json", None, 400),
        (b"plain", "text/plain", None, 415),
        (b"\x1f\x8b garbage", PROTOBUF, "gzip", 400),
        (b"", PROTOBUF, "br", 415),
        (gzip.compress(b"\0" * (9 << 20)), PROTOBUF, "gzip", 413),  # inflates past 8 MiB
    ],
)
def test_unreadable_bodies_apply_nothing(server, reg, body, content_type, encoding, status):
    before = scrape(reg)
    got, ctype, answer = post(server, "/v1/logs", body, content_type, encoding=encoding)
    assert (got, ctype) == (status, "application/json")
    assert json.loads(answer)["error"].startswith("nothing applied: ")
    assert val(reg, "claude_exporter_events_total", source="otlp", result="rejected") == 1
    after = scrape(reg)
    assert [line for line in after.splitlines() if "events" not in line] == [
        line for line in before.splitlines() if "events" not in line
    ]


@pytest.mark.integration
def test_over_one_mib_is_413(server, reg):
    status, _, answer = post(server, "/v1/metrics", b"\0" * (MAX_BODY + 1))
    assert status == 413
    assert "body over" in json.loads(answer)["error"]


@pytest.mark.integration
def test_traces_are_accepted_and_dropped(server, reg):
    status, ctype, body = post(server, "/v1/traces", b"")
    assert (status, ctype) == (200, PROTOBUF)
    status, ctype, body = post(server, "/v1/traces", b"{}", "application/json")
    assert (status, json.loads(body)) == (200, {})


@pytest.mark.integration
def test_the_bearer_token_is_required(server, reg):
    assert post(server, "/v1/logs", logs_request([api_request("r")]), token=None)[0] == 401
    assert post(server, "/v1/metrics", b"", token="wrong")[0] == 401
    assert post(server, "/v1/hooks", b"{}", "application/json", token=None)[0] == 401
    assert request_figures(reg)["success"] == 0


@pytest.mark.integration
def test_only_post(server, reg):
    request = urllib.request.Request(
        server.url + "/v1/logs", headers={"Authorization": f"Bearer {TOKEN}"}, method="GET"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == 405


@pytest.mark.integration
def test_start_http_server_leaves_otlp_off_unless_asked(reg):
    srv = ce.start_http_server(0, token=TOKEN)
    try:
        assert post(srv, "/v1/logs", logs_request([api_request("r")]))[0] == 404
    finally:
        srv.close()


# -- identities and prompts ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_identities_and_prompts_never_become_labels(server, reg):
    records = turn("p-secret-prompt-id", "session-4b1d", api_request("req_id_7", session="session-4b1d"))
    records[0]["prompt"] = "please print my API key sk-ant-xyz"
    logs(server, records, resource(**{"user.email": "dev@example.com"}))
    sums(
        server, [("claude_code.session.count", {"session.id": "session-4b1d", "user.id": "f" * 64}, 1, 2, 1)]
    )
    exposition = scrape(reg)
    for secret in (
        "session-4b1d",
        "dev@example.com",
        "f" * 64,
        "org-7f1e",
        "acc-42",
        "req_id_7",
        "sk-ant",
        "p-secret",
    ):
        assert secret not in exposition


# -- metrics: delta, cumulative, resets, twelve writers ------------------------------------------------------


@pytest.mark.integration
def test_claude_code_only_families_from_delta_points(server, reg):
    points = [
        ("claude_code.session.count", {"start_type": "fresh"}, T0, T0 + 1, 1.0),
        ("claude_code.lines_of_code.count", {"type": "added"}, T0, T0 + 1, 12.0),
        ("claude_code.lines_of_code.count", {"type": "removed"}, T0, T0 + 1, 3.0),
        ("claude_code.commit.count", {}, T0, T0 + 1, 1.0),
        ("claude_code.pull_request.count", {}, T0, T0 + 1, 1.0),
        ("claude_code.active_time.total", {"type": "cli"}, T0, T0 + 1, 0.25),
        ("claude_code.code_edit_tool.decision", {"tool_name": "Edit", "decision": "accept"}, T0, T0 + 1, 2.0),
        # tokens and cost come from the api_request events (usage_from: events): these are ignored
        ("claude_code.token.usage", {"type": "input", "model": MODEL}, T0, T0 + 1, 999.0),
        ("claude_code.cost.usage", {"model": MODEL}, T0, T0 + 1, 9.99),
    ]
    sums(server, points)
    sums(server, points[:1])  # the same interval re-sent: nothing more
    sums(server, [("claude_code.session.count", {"start_type": "fresh"}, T0 + 1, T0 + 2, 1.0)])
    assert val(reg, "claude_code_sessions_total", agent=AGENT) == 2
    assert val(reg, "claude_code_lines_of_code_total", agent=AGENT, type="added") == 12
    assert val(reg, "claude_code_lines_of_code_total", agent=AGENT, type="removed") == 3
    assert val(reg, "claude_code_commits_total", agent=AGENT) == 1
    assert val(reg, "claude_code_pull_requests_total", agent=AGENT) == 1
    assert val(reg, "claude_code_active_time_seconds_total", agent=AGENT, type="cli") == 0.25
    assert val(reg, "claude_code_edit_decisions_total", agent=AGENT, tool="Edit", decision="accept") == 2
    assert val(reg, "claude_tokens_total", agent=AGENT, model=MODEL, type="input") == 0
    assert val(reg, "claude_cost_usd_total", agent=AGENT, model=MODEL) == 0


@pytest.mark.integration
def test_cumulative_points_become_deltas_and_a_new_start_is_a_reset(server, reg):
    def lines(start: int, at: int, value: float) -> Any:
        return sums(
            server, [("claude_code.lines_of_code.count", {"type": "added"}, start, at, value)], CUMULATIVE
        )

    for at, value in ((1, 3.0), (2, 5.0), (3, 9.0)):
        lines(T0, T0 + at, value)
    assert val(reg, "claude_code_lines_of_code_total", agent=AGENT, type="added") == 9
    lines(T0, T0 + 2, 5.0)  # an old point again: nothing
    lines(T0, T0 + 3, 9.0)  # the newest again: nothing
    assert val(reg, "claude_code_lines_of_code_total", agent=AGENT, type="added") == 9
    lines(T0 + 10, T0 + 11, 2.0)  # the process restarted: a new start, counted from zero
    lines(T0 + 10, T0 + 12, 4.0)
    assert val(reg, "claude_code_lines_of_code_total", agent=AGENT, type="added") == 13
    lines(T0 + 10, T0 + 13, 1.0)  # lower with the same start: a reset too
    assert val(reg, "claude_code_lines_of_code_total", agent=AGENT, type="added") == 14


def naive_increase(values: list[float]) -> float:
    """What Prometheus's increase() makes of one series fed by interleaved writers: every drop a reset."""
    total = 0.0
    for previous, current in itertools.pairwise(values):
        total += current - previous if current >= previous else current
    return total + (values[0] if values else 0.0)


@pytest.mark.integration
def test_twelve_parallel_sessions_in_one_series_give_the_exact_spend(server):
    """Twelve Claude Code processes without a session id in their attributes write "one" cumulative cost
    series; told apart by start time, their spend adds up exactly, where the naive reading inflates it."""
    reg = instrument(usage_from="metrics")
    try:
        rng = random.Random(12)
        writers = [T0 + i * 7_000_000_000 for i in range(12)]  # twelve start times
        spent = {start: 0.0 for start in writers}
        tokens = {start: 0 for start in writers}
        exports: list[tuple[int, int, float, int]] = []
        for step in range(1, 41):
            for start in writers:
                if rng.random() < 0.6:
                    spent[start] += round(rng.uniform(0.5, 4.0), 2)
                    tokens[start] += rng.randrange(1000, 50_000)
                exports.append((start, start + step * 1_000_000_000, spent[start], tokens[start]))
        rng.shuffle(exports)  # twelve processes exporting on their own clocks
        exports += rng.sample(exports, 40)  # and some exports sent twice
        attrs = {"model": MODEL, "query_source": "main"}
        for start, at, cost, count in exports:
            points = [
                ("claude_code.cost.usage", attrs, start, at, cost),
                ("claude_code.token.usage", {**attrs, "type": "output"}, start, at, float(count)),
            ]
            sums(server, points, CUMULATIVE)
        exact = sum(spent.values())
        assert val(reg, "claude_cost_usd_total", agent=AGENT, model=MODEL) == pytest.approx(exact, rel=1e-12)
        assert val(reg, "claude_tokens_total", agent=AGENT, model=MODEL, type="output") == sum(
            tokens.values()
        )
        # What a collector summing them into one series would have shown: far more than was spent.
        assert naive_increase([cost for _, _, cost, _ in exports]) > 3 * exact
    finally:
        ce.uninstrument()


@pytest.mark.integration
def test_twelve_parallel_sessions_of_events_give_the_exact_spend(server, reg):
    rng = random.Random(7)
    batches, expected_cost_total, expected_requests = [], 0.0, 0
    for session in range(12):
        records = []
        for n in range(rng.randrange(3, 9)):
            tokens = (
                rng.randrange(1, 5000),
                rng.randrange(1, 800),
                rng.randrange(0, 300),
                rng.randrange(0, 9000),
            )
            records.append(
                api_request(f"req_{session}_{n}", session=f"s{session}", prompt=f"p{session}", tokens=tokens)
            )
            expected_cost_total += cost_of(tokens)
            expected_requests += 1
        batches.append(turn(f"p{session}", f"s{session}", *records))
    # Each session sends its records in order, in batches of up to five; the sessions interleave.
    queues = [[records[i : i + 5] for i in range(0, len(records), 5)] for records in batches]
    sent = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        sent.append(queue.pop(0))
        logs(server, sent[-1])
    for batch in rng.sample(sent, 5):  # five batches re-sent after a lost answer
        logs(server, batch)
    for session in range(12):
        stop(server, f"s{session}")
    figures = request_figures(reg)
    assert figures["success"] == expected_requests
    assert figures["cost"] == pytest.approx(expected_cost_total, rel=1e-9)
    assert val(reg, "claude_executions_total", agent=AGENT, task="default", outcome="success") == 12


@pytest.mark.integration
def test_points_that_are_not_counts_are_rejected(server, reg):
    points = [
        ("claude_code.commit.count", {}, T0, T0 + 1, float("nan")),
        ("claude_code.commit.count", {"x": "y"}, T0, T0 + 1, -1.0),
        ("claude_code.commit.count", {"x": "z"}, T0, T0 + 1, 2.0),
    ]
    answer = sums(server, points)
    assert answer.partial_success.rejected_data_points == 2
    assert "claude_code.commit.count: value must be a finite count" in answer.partial_success.error_message
    assert val(reg, "claude_code_commits_total", agent=AGENT) == 2


# -- hooks ---------------------------------------------------------------------------------------------------


def hook(server: Any, body: dict[str, Any], query: str = "") -> tuple[int, Any]:
    status, _, answer = post(server, "/v1/hooks", json.dumps(body).encode(), "application/json", query=query)
    return status, json.loads(answer)


def failure_hook(use_id: str, *, interrupt: bool = False) -> dict[str, Any]:
    return {
        "session_id": "s1",
        "transcript_path": "/home/dev/.claude/projects/x/s1.jsonl",
        "cwd": "/home/dev/project",
        "prompt_id": "p1",
        "hook_event_name": "PostToolUseFailure",
        "tool_name": "Bash",
        "tool_input": {"command": "ls missing-dir"},
        "tool_use_id": use_id,
        "error": "Exit code 2\nls: cannot access 'missing-dir': No such file or directory",
        "is_interrupt": interrupt,
        "duration_ms": 95,
    }


def tool_result(use_id: str, ok: bool, request_id: str = "req_1") -> dict[str, Any]:
    extra = {} if ok else {"error_type": "ShellError"}
    return event(
        "tool_result",
        **{"prompt.id": "p1"},
        tool_name="Bash",
        tool_use_id=use_id,
        success="true" if ok else "false",
        duration_ms="95",
        request_id=request_id,
        **extra,
    )


def blocks(reg: CollectorRegistry, outcome: str, agent: str = "hooked", model: str = MODEL) -> float:
    return val(
        reg, "claude_code_blocks_executed_total", agent=agent, model=model, tool="Bash", outcome=outcome
    )


@pytest.mark.integration
def test_a_hook_joins_its_tool_result_by_tool_use_id_and_counts_once(server, reg):
    res = resource("hooked")
    logs(server, [api_request("req_1")], res)
    # The hook comes first (it is synchronous); the tool_result event comes with the next log batch.
    assert hook(server, failure_hook("toolu_1", interrupt=True), "?agent=hooked") == (200, {})
    logs(server, [tool_result("toolu_1", ok=False)], res)
    assert hook(server, failure_hook("toolu_1"), "?agent=hooked") == (200, {})  # sent again: nothing
    # The event first, then its hook.
    logs(server, [tool_result("toolu_2", ok=False)], res)
    assert hook(server, failure_hook("toolu_2"), "?agent=hooked") == (200, {})
    assert blocks(reg, "tool_error") == 1  # the hook said: interrupted
    assert blocks(reg, "nonzero_exit") == 1
    assert val(reg, "claude_code_tool_results_total", agent="hooked", tool="Bash", outcome="failure") == 2
    assert val(reg, "claude_code_tool_duration_seconds_count", agent="hooked", tool="Bash") == 2


@pytest.mark.integration
def test_a_hook_alone_counts_after_the_join_window(server, reg):
    assert hook(server, failure_hook("toolu_9"), "?agent=hooks-only") == (200, {})
    assert val(reg, "claude_code_tool_results_total", agent="hooks-only", tool="Bash", outcome="failure") == 0

    time.sleep(0.3)  # hook_join_seconds is 0.2 here
    assert val(reg, "claude_code_tool_results_total", agent="hooks-only", tool="Bash", outcome="failure") == 1
    assert blocks(reg, "nonzero_exit", agent="hooks-only", model="unknown") == 1


@pytest.mark.integration
def test_other_hook_events_are_accepted_and_bad_ones_named(server, reg):
    assert hook(server, {"hook_event_name": "Stop", "session_id": "s1"}) == (200, {})
    status, answer = hook(server, {"hook_event_name": "PostToolUse", "tool_name": "Bash"})
    assert status == 400
    assert answer["problems"] == [
        "tool_use_id: required (it joins the hook to Claude Code's tool_result event)"
    ]
    status, _, raw = post(server, "/v1/hooks", b"not json", "application/json")
    assert status == 400 and b"nothing applied" in raw
    # A JSON escape that makes a string no exporter could write out: refused, the scrape unharmed.
    body = json.dumps({**failure_hook("toolu_x"), "tool_name": "\ud800"}).encode()
    status, _, raw = post(server, "/v1/hooks", body, "application/json")
    assert status == 400 and b"tool_name: not valid Unicode" in raw
    assert "claude_requests_total" in scrape(reg)


# -- configuration and declarations --------------------------------------------------------------------------


@pytest.mark.unit
def test_otlp_settings_are_checked_with_their_paths():
    from claude_exporter.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "monitoring": {},
                "exporter": {
                    "otlp": {"usage_from": "both", "turn_idle_seconds": -1, "memory": 5, "colour": 1}
                },
            }
        )
    assert err.value.problems == [
        "exporter.otlp.colour: unknown key; valid keys: agent_attribute, code_tools, default_agent, enabled, "
        "hook_join_seconds, memory, state_dir, task_attribute, turn_idle_seconds, usage_from",
        'exporter.otlp.usage_from: must be one of events, metrics, got "both"',
        "exporter.otlp.turn_idle_seconds: must be a number above 0 and at most 86400, got -1",
        "exporter.otlp.memory: must be an integer from 1000 to 10000000, got 5",
    ]
    assert parse_config({"monitoring": {}, "exporter": {"otlp": False}}).otlp.enabled is False


@pytest.mark.integration
def test_the_claude_code_families_are_declared_once_and_all_exposed(server, reg):
    from claude_exporter.families import FAMILIES
    from claude_exporter.recording.claude_code_series import AGENT_INFO, COUNTERS, TOOL_DURATION

    declared = {f.name for f in FAMILIES if f.name.startswith("claude_code_") and "blocks" not in f.name}
    assert declared == {*COUNTERS, TOOL_DURATION}
    assert AGENT_INFO in {f.name for f in FAMILIES}
    declared.add(AGENT_INFO)
    points = [
        (name, {"type": "added", "tool_name": "Edit", "decision": "accept"}, T0, T0 + 1, 1.0)
        for name in (
            "claude_code.session.count",
            "claude_code.lines_of_code.count",
            "claude_code.commit.count",
            "claude_code.pull_request.count",
            "claude_code.active_time.total",
            "claude_code.code_edit_tool.decision",
        )
    ]
    sums(server, points)
    logs(
        server,
        [
            event("tool_result", tool_name="Read", tool_use_id="t1", success="true", duration_ms="5"),
            event("tool_decision", tool_name="Bash", tool_use_id="t2", decision="reject", source="config"),
            event("compaction", trigger="auto", success="true", duration_ms=900),
            event("internal_error", error_name="TypeError"),
            event(
                "api_retries_exhausted", **{"prompt.id": "p1"}, total_attempts=3, total_retry_duration_ms=9
            ),
        ],
    )
    exposed = {
        line.split("{")[0].split(" ")[0] for line in scrape(reg).splitlines() if not line.startswith("#")
    }
    for name in declared:
        assert any(sample.startswith(name) for sample in exposed), name


@pytest.mark.integration
def test_claude_code_executions_reach_the_event_log_and_health(server, tmp_path):
    log = tmp_path / "events.jsonl"
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    config = {"monitoring": {}, "exporter": {"event_log": {"destination": "file", "path": str(log)}}}
    ce.instrument(config=parse_config(config), registry=CollectorRegistry())
    try:
        logs(server, turn("p1", "s1", api_request("req_1", tokens=(100, 20, 5, 7))))
        error = {"model": MODEL, "status_code": 529, "attempt": 3, "duration_ms": 9, "query_source": "sdk"}
        logs(
            server,
            [
                *turn("p2", "s1", event("api_error", **{"prompt.id": "p2"}, **error), ok=False),
                event("api_retries_exhausted", **{"prompt.id": "p2"}, status_code=529),
            ],
        )
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert [line["event"] for line in lines] == ["claude_execution_complete", "claude_execution_error"]
        assert (
            lines[0]["agent"] == AGENT and lines[0]["input_tokens"] == 100 and lines[0]["output_tokens"] == 20
        )
        assert is_close(lines[0]["cost_usd"], cost_of((100, 20, 5, 7)))
        assert lines[1]["error_type"] == "OverloadedError"
        for line in lines:
            assert "s1" not in json.dumps(line) and "p1" not in line.get("execution_id", "")
        with urllib.request.urlopen(
            urllib.request.Request(
                server.url + "/health/claude-agent", headers={"Authorization": f"Bearer {TOKEN}"}
            ),
            timeout=5,
        ) as resp:
            health = json.loads(resp.read())
        assert health["agents"][AGENT]["executions"] == 2
        assert health["agents"][AGENT]["error_rate_percent"] == 50.0
    finally:
        ce.uninstrument()


# -- serve ---------------------------------------------------------------------------------------------------


def run_serve(config: Any) -> tuple[str, Any]:
    """``serve`` in a thread until it has announced itself; returns its announcement and the stopper."""
    import io
    import threading

    from claude_exporter.cli.serve import serve

    out, stop = io.StringIO(), threading.Event()
    thread = threading.Thread(target=serve, args=(config,), kwargs={"port": 0, "stop": stop, "out": out})
    thread.start()
    deadline = time.monotonic() + 10
    while "listening on" not in out.getvalue() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    return out.getvalue(), (stop, thread)


@pytest.mark.unit
def test_serve_receives_otlp_unless_the_extra_is_missing(monkeypatch):
    from claude_exporter.ingest import otlp_wire

    if ACTIVE.recorder is not None:
        ce.uninstrument()
    config = parse_config({"monitoring": {}, "exporter": {"server": {"token_env": None}}})
    announced, (stop, thread) = run_serve(config)
    stop.set()
    thread.join(10)
    assert "  otlp:     OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:" in announced
    assert "  hooks:    POST http://127.0.0.1:" in announced

    def missing() -> None:
        raise otlp_wire.WireError("the OTLP receiver needs opentelemetry-proto", "501 Not Implemented")

    monkeypatch.setattr(otlp_wire, "proto_modules", missing)
    announced, (stop, thread) = run_serve(config)
    stop.set()
    thread.join(10)
    assert (
        "  otlp:     off (pip install 'claude-exporter[otlp]' to receive Claude Code's telemetry)"
        in announced
    )
    asked = parse_config({"monitoring": {}, "exporter": {"otlp": True, "server": {"token_env": None}}})
    from claude_exporter.cli.serve import serve
    from claude_exporter.config import ConfigError

    with pytest.raises(
        ConfigError, match=r"exporter\.otlp\.enabled: the OTLP receiver needs opentelemetry-proto"
    ):
        serve(asked, port=0)
