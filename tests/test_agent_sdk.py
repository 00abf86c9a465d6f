"""The Claude Agent SDK (``claude-agent-sdk`` from PyPI, the ``agent-sdk`` extra) measured with no code
change: inside ``execution(agent=..., task=...)``, a ``query()`` and a ``ClaudeSDKClient`` session spawn the
SDK's bundled Claude Code CLI against the fake API; the seam makes the CLI export its telemetry to the
exporter's OTLP receiver (served in this process by ``start_http_server``), and one scrape shows exactly the
requests, tokens and cost the fake served, under the execution's agent; each session's ``ResultMessage`` is
cross-checked against that telemetry (``claude_exporter_events_total{source="agent_sdk"}``).

Each CLI gets a throwaway HOME and working directory under tmp_path; the caller's own ``options.env`` (the
fake's URL, a key) is what a user would set, and the seam adds the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import claude_exporter as ce
import pytest
from claude_exporter.config import load_config
from claude_exporter.instrumentation import agent_sdk
from claude_exporter.recording import execution as execution_module
from claude_exporter.testing import FakeAnthropic, Reply
from conftest import expected_cost
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from otlp_payloads import api_request, event, logs_request, resource
from prometheus_client import CollectorRegistry
from test_claude_code_scenarios import approx, executions, recorded, truth
from test_serve import free_port, poll, samples, value

sdk = pytest.importorskip("claude_agent_sdk")  # the agent-sdk extra: in the dev lock, so CI runs this

MODEL = "claude-sonnet-4-5"
AGENT = "sdk-agent"
TOKEN = "agent-sdk-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _config(tmp_path: Path, port: int) -> Any:
    path = tmp_path / "exporter.yaml"
    path.write_text(
        f"monitoring:\n  {AGENT}:\n    sampling_rate: 1.0\n"
        "exporter:\n"
        "  server:\n"
        f"    port: {port}\n"
        "    token_env: AGENT_SDK_TEST_TOKEN\n"
        "  otlp:\n"
        "    enabled: true\n"
        "    turn_idle_seconds: 30\n"
        "  event_log:\n"
        "    destination: file\n"
        f"    path: {tmp_path / 'events.jsonl'}\n"
    )
    return load_config(path)


def _executions(tmp_path: Path) -> list[dict[str, Any]]:
    """The event log's finished executions (each with its cost, which no metric carries per execution)."""
    path = tmp_path / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"].startswith("claude_execution_")]


def _options(tmp_path: Path, fake: FakeAnthropic, key: str, **extra: Any) -> Any:
    home, work = tmp_path / f"home-{key}", tmp_path / f"work-{key}"
    home.mkdir()
    work.mkdir()
    env = {
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": fake.url,
        "ANTHROPIC_API_KEY": "sk-ant-test-key",
        "ANTHROPIC_CUSTOM_HEADERS": f"X-Fake-Key: {key}",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        **extra,
    }
    return sdk.ClaudeAgentOptions(model=MODEL, cwd=str(work), env=env, max_turns=3)


@pytest.fixture
def exporter(tmp_path, monkeypatch):
    """instrument() and the exporter's HTTP server (OTLP on) in this process, on the configured port."""
    monkeypatch.setenv("AGENT_SDK_TEST_TOKEN", TOKEN)
    for name in [k for k in os.environ if k.startswith(("OTEL_", "CLAUDE_CODE_"))]:
        monkeypatch.delenv(name)
    if ce.is_instrumented():
        ce.uninstrument()
    registry = CollectorRegistry()
    port = free_port()
    config = _config(tmp_path, port)
    ce.instrument(config, registry=registry)
    server = ce.start_http_server(port, config=config, registry=registry)
    try:
        yield server
    finally:
        server.close()
        ce.uninstrument()


async def _collect(messages: Any, results: list[Any]) -> None:
    async for message in messages:
        if isinstance(message, sdk.ResultMessage):
            results.append(message)


@pytest.mark.system
def test_query_and_client_sessions_reach_the_exporter_exactly(exporter, tmp_path):
    one = [
        Reply(input_tokens=120, output_tokens=30, cache_read_input_tokens=9, cache_creation_input_tokens=4)
    ]
    two = [Reply(input_tokens=50, output_tokens=7), Reply(input_tokens=70, output_tokens=11)]
    results: list[Any] = []

    async def run(fake: FakeAnthropic) -> None:
        query_options = _options(tmp_path, fake, "query")
        given = dict(query_options.env)
        async with ce.execution("ask", agent=AGENT):
            await _collect(sdk.query(prompt="say hi", options=query_options), results)
        assert query_options.env == given  # the caller's options object is never written
        client_options = _options(tmp_path, fake, "client")
        async with ce.execution("chat", agent=AGENT), sdk.ClaudeSDKClient(options=client_options) as client:
            for prompt in ("first", "second"):
                await client.query(prompt)
                await _collect(client.receive_response(), results)

    with FakeAnthropic() as fake:
        fake.script(*one, key="query")
        fake.script(*two, key="client")
        asyncio.run(run(fake))
        assert fake.pending("query") == 0 and fake.pending("client") == 0
        want = truth(fake, ["query", "client"])
        served = {"ask": truth(fake, ["query"]), "chat": truth(fake, ["client"])}
    assert [r.is_error for r in results] == [False, False, False]
    assert list(want) == [("model", MODEL)] and want[("model", MODEL)]["success"] == 3

    def arrived() -> bool:
        return recorded(samples(exporter.url, AUTH), AGENT, [MODEL])[("model", MODEL)]["success"] >= 3

    assert poll(arrived, timeout=20)
    table = samples(exporter.url, AUTH)
    assert recorded(table, AGENT, [MODEL]) == approx(want)
    # The SDK's own figures agree: its last result's cost is the session's, each usage its turn's.
    row = want[("model", MODEL)]
    assert sum(m.usage["input_tokens"] for m in results) == row["input"]
    assert results[0].total_cost_usd + results[-1].total_cost_usd == pytest.approx(row["cost"], rel=1e-9)
    assert value(table, "claude_exporter_events_total", source="agent_sdk", result="agreed") == 2
    assert value(table, "claude_exporter_events_total", source="agent_sdk", result="mismatch") == 0
    assert value(table, "claude_code_sessions_total", agent=AGENT) == 2
    assert value(table, "claude_exporter_internal_errors_total", stage="agent_sdk_env") == 0
    # Identities never become labels.
    labels = json_labels(table)
    assert all(m.session_id not in labels for m in results)
    # Each execution() around a session is that session's one execution, with all its requests, tokens
    # and cost; the CLI's turns inside it are not executions of their own (nor in flight).
    assert executions(table, AGENT) == (2, 0, 3)
    logged = {e["task"]: e for e in _executions(tmp_path)}
    assert sorted(logged) == ["ask", "chat"]
    for task, rows in served.items():
        row = rows[("model", MODEL)]
        scope = {"agent": AGENT, "task": task}
        assert value(table, "claude_executions_total", **scope, outcome="success") == 1
        assert value(table, "claude_execution_requests_sum", **scope) == row["success"]
        every_input = row["input"] + row["cache_read"] + row["cache_creation"]
        assert value(table, "claude_execution_tokens_sum", **scope, type="input") == every_input
        assert value(table, "claude_execution_tokens_sum", **scope, type="output") == row["output"]
        assert value(table, "claude_executions_in_flight", **scope) == 0
        event = logged[task]
        assert event["event"] == "claude_execution_complete" and event["requests"] == row["success"]
        assert (event["input_tokens"], event["output_tokens"]) == (row["input"], row["output"])
        assert event["cache_read_input_tokens"] == row["cache_read"]
        assert event["cache_creation_input_tokens"] == row["cache_creation"]
        assert event["cost_usd"] == pytest.approx(row["cost"], rel=1e-6)


@pytest.mark.system
def test_a_session_outside_any_execution_is_measured_by_its_turns(exporter, tmp_path):
    """No execution() around the session: each of the CLI's turns is an execution (the receiver's default
    agent, task default), ended by the session's next prompt; nothing names a scope."""
    results: list[Any] = []

    async def run(fake: FakeAnthropic) -> None:
        async with sdk.ClaudeSDKClient(options=_options(tmp_path, fake, "outside")) as client:
            for prompt in ("first", "second"):
                await client.query(prompt)
                await _collect(client.receive_response(), results)

    with FakeAnthropic() as fake:
        fake.script(
            Reply(input_tokens=40, output_tokens=5), Reply(input_tokens=60, output_tokens=9), key="outside"
        )
        asyncio.run(run(fake))
        assert fake.pending("outside") == 0
    agent = "claude-code"  # otlp.default_agent: the resource names no agent

    def arrived() -> bool:
        return recorded(samples(exporter.url, AUTH), agent, [MODEL])[("model", MODEL)]["success"] >= 2

    assert poll(arrived, timeout=20)
    table = samples(exporter.url, AUTH)
    # The first turn ended at the second prompt: one execution with its one request; the second turn has
    # answered (out of the in-flight gauges) and ends when idle or at a Stop hook.
    assert _in_executions(table, agent) == {"default": (1, 1)}
    assert value(table, "claude_execution_tokens_sum", agent=agent, task="default", type="input") == 40
    assert value(table, "claude_executions_in_flight", agent=agent, task="default") == 0
    [turn] = _executions(tmp_path)
    assert (turn["agent"], turn["task"], turn["requests"], turn["input_tokens"]) == (agent, "default", 1, 40)
    assert turn["cost_usd"] == pytest.approx(expected_cost(MODEL, input=40, output=5))
    assert [r.is_error for r in results] == [False, False]


def json_labels(table: Any) -> str:
    return repr(sorted(sorted(items) for _, items in table))


@pytest.mark.system
def test_a_result_the_telemetry_contradicts_is_counted_and_logged(tmp_path, monkeypatch, caplog):
    """The exporter prices the model at ten times the list (an override): the CLI's own total_cost_usd then
    disagrees with what its telemetry recorded, which the cross-check must say."""
    monkeypatch.setenv("AGENT_SDK_TEST_TOKEN", TOKEN)
    if ce.is_instrumented():
        ce.uninstrument()
    port = free_port()
    path = tmp_path / "exporter.yaml"
    path.write_text(
        f"monitoring:\n  {AGENT}:\n    sampling_rate: 1.0\n"
        f"exporter:\n  server:\n    port: {port}\n    token_env: AGENT_SDK_TEST_TOKEN\n"
        "  otlp:\n    enabled: true\n"
        "  pricing_overrides:\n"
        f"    {MODEL}:\n      input: 30.0\n      output: 150.0\n"
        "      cache_write_5m: 37.5\n      cache_write_1h: 60.0\n      cache_read: 3.0\n"
    )
    config = load_config(path)
    registry = CollectorRegistry()
    ce.instrument(config, registry=registry)
    server = ce.start_http_server(port, config=config, registry=registry)
    results: list[Any] = []
    try:
        with FakeAnthropic() as fake, caplog.at_level("WARNING", logger="claude_exporter.agent_sdk"):
            fake.script(Reply(input_tokens=100, output_tokens=10), key="priced")

            async def run() -> None:
                async with ce.execution("ask", agent=AGENT):
                    await _collect(
                        sdk.query(prompt="hi", options=_options(tmp_path, fake, "priced")), results
                    )

            asyncio.run(run())
        table = samples(server.url, AUTH)
    finally:
        server.close()
        ce.uninstrument()
    assert value(table, "claude_tokens_total", agent=AGENT, model=MODEL, type="input") == 100
    assert value(table, "claude_exporter_events_total", source="agent_sdk", result="mismatch") == 1
    assert value(table, "claude_exporter_events_total", source="agent_sdk", result="agreed") == 0
    [record] = [r for r in caplog.records if r.name == "claude_exporter.agent_sdk"]
    want = expected_cost(MODEL, input=100, output=10)
    assert record.mismatch == {"cost_usd": [pytest.approx(want), pytest.approx(want * 10)]}  # type: ignore[attr-defined]
    assert results[0].session_id not in record.getMessage()


# -- the environment the CLI gets (no CLI needed) -----------------------------------------------------------


def _transport_env(options: Any) -> dict[str, str]:
    from claude_agent_sdk._internal.transport.subprocess_cli import SubprocessCLITransport

    transport = SubprocessCLITransport(prompt="x", options=options)
    return dict(transport._options.env)


@pytest.mark.integration
def test_the_cli_is_pointed_at_the_exporter_and_never_against_the_callers_choice(exporter, monkeypatch):
    url = f"http://127.0.0.1:{exporter.port}"
    with ce.execution("t1", agent="a b,c") as ex:
        env = _transport_env(sdk.ClaudeAgentOptions(env={"OTEL_RESOURCE_ATTRIBUTES": "team=x"}))
    assert env["CLAUDE_CODE_ENABLE_TELEMETRY"] == "1"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == url
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == f"Authorization=Bearer {TOKEN}"
    assert env["OTEL_METRICS_EXPORTER"] == env["OTEL_LOGS_EXPORTER"] == "otlp"
    # The caller's own attribute stays; agent and task are added, percent-encoded, and the key of the
    # execution the CLI's requests count towards (random, made once per execution).
    assert ex.scope is not None and len(ex.scope) == 32
    assert (
        env["OTEL_RESOURCE_ATTRIBUTES"] == f"team=x,agent=a%20b%2Cc,task=t1,claude_exporter.scope={ex.scope}"
    )

    # Set by the caller (options.env or the process environment): theirs is kept.
    monkeypatch.setenv("OTEL_LOGS_EXPORT_INTERVAL", "7000")
    env = _transport_env(sdk.ClaudeAgentOptions(env={"CLAUDE_CODE_ENABLE_TELEMETRY": "0"}))
    assert env["CLAUDE_CODE_ENABLE_TELEMETRY"] == "0"
    assert "OTEL_LOGS_EXPORT_INTERVAL" not in env  # the CLI inherits the process's own 7000
    assert "OTEL_RESOURCE_ATTRIBUTES" not in env  # no execution: the receiver's default agent applies

    # An endpoint of the caller's: no destination variable of ours, so the token goes nowhere else.
    env = _transport_env(
        sdk.ClaudeAgentOptions(env={"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://collector:4318"})
    )
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env and "OTEL_EXPORTER_OTLP_HEADERS" not in env
    with ce.execution("t2", agent="b") as ex:
        env = _transport_env(sdk.ClaudeAgentOptions(env={"OTEL_RESOURCE_ATTRIBUTES": "agent=mine"}))
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == f"agent=mine,task=t2,claude_exporter.scope={ex.scope}"

    # A marker inherited from a parent CLI (this program runs as its tool) names another process's
    # execution: dropped outside an execution, replaced inside one.
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=y,claude_exporter.scope=theirs")
    assert _transport_env(sdk.ClaudeAgentOptions())["OTEL_RESOURCE_ATTRIBUTES"] == "team=y"
    with ce.execution("t3", agent="c") as ex:
        env = _transport_env(sdk.ClaudeAgentOptions())
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == f"team=y,agent=c,task=t3,claude_exporter.scope={ex.scope}"


@pytest.mark.integration
def test_a_fault_in_the_seam_leaves_the_sdk_untouched(exporter, monkeypatch):
    """The env merge raises: the transport is the SDK's own, unchanged, and the fault is counted."""

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(agent_sdk, "_resource", boom)
    options = sdk.ClaudeAgentOptions(env={"A": "1"})
    with ce.execution("t", agent="x"):
        env = _transport_env(options)
    assert env == {"A": "1"}
    table = samples(exporter.url, AUTH)
    assert value(table, "claude_exporter_internal_errors_total", stage="agent_sdk_env") == 1


@pytest.mark.integration
def test_uninstrument_restores_the_transport_and_switched_off_leaves_it_alone(tmp_path):
    from claude_agent_sdk._internal.transport.subprocess_cli import SubprocessCLITransport

    if ce.is_instrumented():
        ce.uninstrument()
    originals = {
        name: SubprocessCLITransport.__dict__[name] for name in ("__init__", "read_messages", "close")
    }
    ce.instrument(registry=CollectorRegistry())
    try:
        assert all(SubprocessCLITransport.__dict__[n] is not f for n, f in originals.items())
    finally:
        ce.uninstrument()
    assert all(SubprocessCLITransport.__dict__[n] is f for n, f in originals.items())
    path = tmp_path / "off.yaml"
    path.write_text(
        f"monitoring:\n  {AGENT}:\n    sampling_rate: 1.0\nexporter:\n  otlp:\n    enabled: false\n"
    )
    ce.instrument(load_config(path), registry=CollectorRegistry())
    try:
        assert all(SubprocessCLITransport.__dict__[n] is f for n, f in originals.items())
    finally:
        ce.uninstrument()


@pytest.mark.integration
def test_instrument_works_without_the_agent_sdk_installed(monkeypatch):
    from claude_exporter.instrumentation import instrumentor

    if ce.is_instrumented():
        ce.uninstrument()
    missing = tuple(("claude_agent_sdk_not_installed", *rest) for _, *rest in instrumentor.OPTIONAL_SEAMS)
    monkeypatch.setattr(instrumentor, "OPTIONAL_SEAMS", missing)
    ce.instrument(registry=CollectorRegistry())
    try:
        assert ce.is_instrumented()
    finally:
        ce.uninstrument()


_KEY = st.text(alphabet="abcdefghijklmnopqrstuvwxyz._-", min_size=1, max_size=8)
_VALUE = st.text(min_size=1, max_size=12).filter(lambda v: v.strip() == v)


@pytest.mark.unit
@settings(max_examples=60, deadline=None)
@given(
    theirs=st.dictionaries(_KEY, st.text(alphabet="abcxyz019", min_size=1, max_size=6), max_size=4),
    agent=_VALUE,
    task=_VALUE,
)
def test_resource_attributes_keep_the_callers_and_add_agent_and_task_decodably(theirs, agent, task):
    current = ",".join(f"{k}={v}" for k, v in theirs.items()) or None
    merged = agent_sdk._resource(current, {"agent": agent, "task": task})
    assert merged is not None
    pairs = [part.split("=", 1) for part in merged.split(",")]
    decoded = {key: unquote(raw) for key, raw in pairs}
    assert len(pairs) == len(decoded)  # no key twice
    for key, given_value in theirs.items():
        assert decoded[key] == given_value  # the caller's own, untouched
    assert decoded["agent"] == theirs.get("agent", agent)
    assert decoded["task"] == theirs.get("task", task)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("module", "cls"),
    [
        ("claude_agent_sdk._internal.transport.renamed_in_a_later_release", agent_sdk.CLASS),
        (agent_sdk.MODULE, "RenamedTransport"),
        (agent_sdk.MODULE, "object_without_the_methods"),
    ],
)
def test_another_release_of_the_agent_sdk_leaves_instrument_working(monkeypatch, caplog, module, cls):
    """The transport moved or lost a seam: instrument() still measures the anthropic SDK, says what it
    could not find, counts it, and patches nothing of the agent SDK."""
    from claude_agent_sdk._internal.transport import subprocess_cli
    from claude_exporter.instrumentation import instrumentor

    if ce.is_instrumented():
        ce.uninstrument()
    monkeypatch.setattr(subprocess_cli, "object_without_the_methods", type("Bare", (), {}), raising=False)
    moved = tuple((package, module, cls, build) for package, _, _, build in instrumentor.OPTIONAL_SEAMS)
    monkeypatch.setattr(instrumentor, "OPTIONAL_SEAMS", moved)
    registry = CollectorRegistry()
    with caplog.at_level("WARNING", logger="claude_exporter.instrument"):
        rec = ce.instrument(registry=registry)
    try:
        assert ce.is_instrumented()
        assert all(
            owner.__module__.startswith(("anthropic", "httpx2")) for owner, _, _ in instrumentor._patched
        )
        assert dict(rec.internal_errors.values).get(("seam_claude_agent_sdk",)) == 1
        assert "claude_agent_sdk is installed but not measured" in caplog.text
    finally:
        ce.uninstrument()


@pytest.mark.integration
def test_overlapping_sessions_of_one_agent_are_unchecked_not_compared(exporter):
    """Two sessions of one agent at once: the series' difference is not either's own, so neither is
    compared; a lone one is (here with nothing sent and nothing recorded: they agree)."""
    from claude_exporter.recording.state import ACTIVE

    state = agent_sdk._Seams(ACTIVE.opened)
    result = {"type": "result", "usage": {"input_tokens": 5, "output_tokens": 1}, "total_cost_usd": 0.1}
    first, second = state.open("overlap"), state.open("overlap")
    assert first is not None and second is not None
    first.results.append(result)
    second.results.append(result)
    state.check(first)
    state.check(second)
    alone = state.open("overlap")
    assert alone is not None
    alone.results.append(
        {"type": "result", "usage": {"input_tokens": 0, "output_tokens": 0}, "total_cost_usd": 0}
    )
    state.check(alone)
    table = samples(exporter.url, AUTH)
    assert value(table, "claude_exporter_events_total", source="agent_sdk", result="unchecked") == 2
    assert value(table, "claude_exporter_events_total", source="agent_sdk", result="agreed") == 1
    assert value(table, "claude_exporter_events_total", source="agent_sdk", result="mismatch") == 0
    assert state.live == {}


# -- the scope: what the ingest does with a CLI's records that name an execution() (no CLI needed) ---------


def _send(server: Any, records: list[dict[str, Any]], res: dict[str, str]) -> None:
    """An OTLP/protobuf logs export, in the CLI's shape, over HTTP to the exporter's receiver."""
    request = urllib.request.Request(
        server.url + "/v1/logs",
        data=logs_request(records, res),
        method="POST",
        headers={"Content-Type": "application/x-protobuf", **AUTH},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


def _request(rid: str, session: str, prompt_id: str, tokens: tuple[int, int, int, int], **extra: Any) -> Any:
    record = api_request(rid, session=session, prompt=prompt_id, model=MODEL, tokens=tokens)
    record.update(extra)
    return record


def _prompt(session: str, prompt_id: str) -> dict[str, Any]:
    return event("user_prompt", session, **{"prompt.id": prompt_id}, prompt="<REDACTED>", prompt_length=5)


def _in_executions(table: Any, agent: str) -> dict[str, tuple[float, float]]:
    """task -> (executions, requests in them)."""
    out: dict[str, tuple[float, float]] = {}
    for (name, labels), v in table.items():
        items = dict(labels)
        if items.get("agent") != agent:
            continue
        done, requests = out.get(items.get("task", ""), (0.0, 0.0))
        if name == "claude_executions_total":
            out[items["task"]] = (done + v, requests)
        elif name == "claude_execution_requests_sum":
            out[items["task"]] = (done, requests + v)
    return {task: row for task, row in out.items() if row != (0.0, 0.0)}


SUBAGENT = "agent:builtin:general-purpose"


@pytest.mark.integration
def test_records_naming_an_execution_count_towards_it_and_nothing_else_is_lost(exporter, tmp_path):
    """Records under a live execution's key are its requests (its sub-agent's work an execution of its own);
    a forged key, and records after the execution ended, are ordinary turns: every request counts in
    exactly one execution."""
    with ce.execution("scoped", agent=AGENT) as ex:
        key = execution_module.scope_key(ex)
        assert key is not None
        marked = resource(AGENT, task="scoped", **{execution_module.SCOPE_ATTRIBUTE: key})
        _send(exporter, [_prompt("s1", "p1"), _request("r1", "s1", "p1", (100, 10, 4, 9))], marked)
        _send(exporter, [_request("r2", "s1", "p1", (7, 1, 0, 0), query_source=SUBAGENT)], marked)
        forged = resource(AGENT, task="scoped", **{execution_module.SCOPE_ATTRIBUTE: "0" * 32})
        _send(exporter, [_prompt("s2", "q1"), _request("r3", "s2", "q1", (50, 5, 0, 0))], forged)
        running = samples(exporter.url, AUTH)
        # In flight: the execution itself, the sub-agent's and the forged turn; not the scoped turn.
        assert value(running, "claude_executions_in_flight", agent=AGENT, task="scoped") == 2
        assert value(running, "claude_executions_in_flight", agent=AGENT, task=SUBAGENT) == 1
        assert (ex.requests, ex.input_tokens, ex.output_tokens) == (1, 100, 10)
    # The execution is over: a late request of its turn is that turn's own execution; the session's next
    # prompt (marked with the ended key) ends it, and is an ordinary turn itself.
    _send(exporter, [_request("r4", "s1", "p1", (20, 2, 0, 0))], marked)
    _send(exporter, [_prompt("s1", "p2"), _prompt("s2", "q2")], marked)
    table = samples(exporter.url, AUTH)
    assert _in_executions(table, AGENT) == {"scoped": (3, 3), SUBAGENT: (1, 1)}
    assert value(table, "claude_requests_total", agent=AGENT, model=MODEL, outcome="success") == 4
    assert value(table, "claude_executions_in_flight", agent=AGENT, task="scoped") == 2  # p2 and q2
    # The execution's own figures: exactly r1's (the event log carries its cost).
    logged = sorted(
        (e["task"], e["requests"], e["input_tokens"], e["output_tokens"]) for e in _executions(tmp_path)
    )
    assert logged == [(SUBAGENT, 1, 7, 1), ("scoped", 1, 20, 2), ("scoped", 1, 50, 5), ("scoped", 1, 100, 10)]
    [scope] = [e for e in _executions(tmp_path) if e["input_tokens"] == 100]
    assert (scope["cache_creation_input_tokens"], scope["cache_read_input_tokens"]) == (4, 9)
    assert scope["cost_usd"] == pytest.approx(
        expected_cost(MODEL, input=100, output=10, cache_5m=4, cache_read=9)
    )
    assert value(table, "claude_exporter_internal_errors_total", stage="otlp_scope") == 0


@pytest.mark.integration
def test_a_failed_turn_fails_its_execution(exporter, tmp_path):
    """The CLI gave up on its only attempt (CLAUDE_CODE_MAX_RETRIES=0): the execution around the session
    failed, as the turn would have without it, and still counts the failed request."""
    with ce.execution("fails", agent=AGENT) as ex:
        marked = resource(
            AGENT, task="fails", **{execution_module.SCOPE_ATTRIBUTE: execution_module.scope_key(ex) or ""}
        )
        failure = event("api_error", "s1", **{"prompt.id": "p1"}, model=MODEL, status_code=529, attempt=1,
                        duration_ms=30, error="Overloaded", query_source="sdk")  # fmt: skip
        _send(exporter, [_prompt("s1", "p1"), failure], marked)
    table = samples(exporter.url, AUTH)
    assert _in_executions(table, AGENT) == {"fails": (1, 1)}
    assert value(table, "claude_executions_total", agent=AGENT, task="fails", outcome="error") == 1
    [logged] = _executions(tmp_path)
    assert logged["event"] == "claude_execution_error" and logged["error_type"]


_RUNS = iter(range(10**6))


@pytest.mark.integration
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from(["live", "forged", "none"])), min_size=1, max_size=7
    ),
    end_at=st.integers(0, 7),
)
def test_every_request_counts_in_exactly_one_execution_whenever_the_scope_ends(exporter, steps, end_at):
    """Requests of three sessions, each under the live key, a forged one or none, with the execution ending
    between any two: a turn is the execution's when its first record names it while it runs, until it ends;
    every other request is its own turn's. Counted exactly once either way."""
    agent = f"prop-{next(_RUNS)}"
    scope = {"live": 0}
    own = [0, 0, 0]
    state: dict[int, str] = {}
    block = ce.execution("p", agent=agent)
    ex = block.__enter__()
    key = execution_module.scope_key(ex)
    assert key is not None
    marks = {"live": key, "forged": "f" * 32}
    running = True
    for i, (session, mark) in enumerate(steps):
        if i == end_at:
            block.__exit__(None, None, None)
            running = False
        extra = {execution_module.SCOPE_ATTRIBUTE: marks[mark]} if mark in marks else {}
        record = _request(f"{agent}-r{i}", f"{agent}-s{session}", "p", (10, 1, 0, 0))
        _send(exporter, [record], resource(agent, task="p", **extra))
        # The model: decided at the turn's first record, left when the execution has ended.
        if session not in state:
            state[session] = "scoped" if mark == "live" and running else "own"
        elif state[session] == "scoped" and not running:
            state[session] = "own"
        if state[session] == "scoped":
            scope["live"] += 1
        else:
            own[session] += 1
    if running:
        block.__exit__(None, None, None)
    # Each session's next prompt ends its turn.
    _send(exporter, [_prompt(f"{agent}-s{s}", "next") for s in range(3)], resource(agent, task="p"))
    table = samples(exporter.url, AUTH)
    assert ex.requests == scope["live"]
    assert _in_executions(table, agent) == {"p": (1 + sum(1 for n in own if n), len(steps))}
    assert value(table, "claude_requests_total", agent=agent, model=MODEL, outcome="success") == len(steps)
    assert value(table, "claude_executions_in_flight", agent=agent, task="p") == 3  # the three next prompts


@pytest.mark.integration
def test_a_fault_in_the_scope_lookup_still_counts_the_record(exporter, monkeypatch):
    """The ingest's scope step raises: the request still counts, its turn an ordinary one, the fault
    counted."""
    from claude_exporter.ingest.claude_code import ClaudeCodeIngest

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(ClaudeCodeIngest, "_scoped_turn", boom)
    with ce.execution("faulty", agent=AGENT) as ex:
        marked = resource(
            AGENT, task="faulty", **{execution_module.SCOPE_ATTRIBUTE: execution_module.scope_key(ex) or ""}
        )
        _send(exporter, [_prompt("s9", "p1"), _request("r9", "s9", "p1", (10, 1, 0, 0))], marked)
    _send(exporter, [_prompt("s9", "p2")], resource(AGENT))
    table = samples(exporter.url, AUTH)
    assert ex.requests == 0
    assert _in_executions(table, AGENT) == {"faulty": (2, 1)}  # the execution, and the turn with r9
    assert value(table, "claude_requests_total", agent=AGENT, model=MODEL, outcome="success") == 1
    assert value(table, "claude_exporter_internal_errors_total", stage="otlp_scope") == 2
