"""End to end: every dashboard query, run against a real Prometheus that scraped real instrumented traffic.

The real anthropic SDK talks to the fake Messages API (claude_exporter.testing.FakeAnthropic), instrumented
by claude_exporter.instrument and served by claude_exporter.start_http_server; a real Prometheus scrapes it
every second and evaluates one alert rule, so ALERTS has a series. Each panel query, annotation and
variable query then runs with the variables substituted as Grafana would, and must parse and return at
least one series. The traffic covers every family the dashboards use: successes, errors, retries after
429 and 529, streaming (time to first token), code-execution results, rate-limit headers, cache tokens,
a model missing from the pricing table, and an execution still running while Prometheus scrapes.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anthropic
import claude_exporter as ce
import pytest
import yaml
from claude_exporter.config import parse_config
from claude_exporter.rules import render_rules
from claude_exporter.testing import FakeAnthropic, Reply, code_execution_blocks
from otlp_payloads import event, logs_request, resource, sums_request
from prometheus_client import CollectorRegistry
from stack import Prometheus
from test_dashboards import FILES, load, panel_query, queries, variable_queries, variables

pytestmark = pytest.mark.system

JOB = "claude-dashboards"
AGENT = "dash-agent"
CC_AGENT = "dash-claude-code"
MODEL = "claude-sonnet-4-6"
UNPRICED = "claude-dashboard-unpriced"
# Grafana's $__rate_interval is max(4 x scrape interval, step + scrape interval); 15 s is that for a 1 s
# scrape and a graph step of up to 14 s, and leaves room for a slow CI machine.
BUILTINS = {"__rate_interval": "15s", "__range": "5m"}
DEADLINE = 60.0  # bounds a failing run only
PROMPT = [{"role": "user", "content": "run the checks"}]
SCRAPE = """
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: {job}
    static_configs: [{{targets: ["{target}"]}}]
"""
# One alert that fires as soon as there is traffic, so the ALERTS queries have a series to find.
RULES = """
groups:
  - name: dashboard-test
    rules:
      - alert: ClaudeDashboardTest
        expr: sum by (agent) (claude_requests_total) > 0
        labels: {severity: info}
"""


def band_rules() -> str:
    """The bundled rules' adaptive bands for the test agent, learning from seconds of traffic: the real
    expressions of the default window (the dashboards read ``rate10m``), evaluated every second, with a
    band that needs one recorded window and ends a second ago instead of minutes ago."""
    band = {"baseline_window": "20m", "min_history": "1s", "min_executions": 1, "seasonality": "none"}
    alerts = [{"name": name, **band} for name in ("latency_drift", "token_spike", "anomaly")]
    config = parse_config({"monitoring": {AGENT: {"alerts": alerts}}, "exporter": {"rules": {"job": JOB}}})
    groups = [
        {**g, "interval": "1s"}
        for g in yaml.safe_load(render_rules(config))["groups"]
        if g["name"] in ("claude-exporter-anomaly-signals", "claude-exporter-anomaly-bands")
    ]
    text = yaml.safe_dump({"groups": groups}, sort_keys=False)
    assert text.count("[20m] offset 5m") >= 10
    return text.replace("[20m] offset 5m", "[20m] offset 1s")


def ratelimits() -> dict[str, tuple[int, int, str]]:
    """Rate-limit headers: (limit, remaining, reset a minute from now) per resource."""
    reset = (datetime.now(timezone.utc) + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "requests": (50, 49, reset),
        "tokens": (100000, 90000, reset),
        "input_tokens": (80000, 75000, reset),
        "output_tokens": (20000, 19000, reset),
    }


def claude_code_telemetry(url: str) -> None:
    """What a Claude Code session exports (its OTLP logs and metrics), as a second agent beside the SDK's:
    a tool result and the Claude-Code-only families, none of them a request, so the SDK figures stay."""
    now = time.time_ns()
    res = resource(CC_AGENT)
    logs = logs_request(
        [event("tool_result", tool_name="Read", tool_use_id=f"t{now}", success="true", duration_ms="12")], res
    )
    points = [
        (name, attrs, now - 1_000_000_000, now, 3.0)
        for name, attrs in (
            ("claude_code.session.count", {}),
            ("claude_code.lines_of_code.count", {"type": "added"}),
            ("claude_code.commit.count", {}),
            ("claude_code.pull_request.count", {}),
            ("claude_code.active_time.total", {"type": "cli"}),
        )
    ]
    for path, body in (("/v1/logs", logs), ("/v1/metrics", sums_request(points, res=res))):
        request = urllib.request.Request(
            url + path, data=body, headers={"Content-Type": "application/x-protobuf"}
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.status == 200


def drive(fake: FakeAnthropic, url: str) -> None:
    """Real SDK traffic, through the instrumentation, covering every family the dashboards read:
    8 requests (1 failed after 3 attempts, 1 retried after a 429 and a 529, 1 streamed, 1 of an unpriced
    model, 1 refused with a diagnosed cache miss) in 6 executions (1 failed); and Claude Code telemetry
    for the same agent."""
    claude_code_telemetry(url)
    limits = ratelimits()
    fake.default = Reply(
        latency=0.01,
        input_tokens=1200,
        output_tokens=300,
        cache_creation_input_tokens=800,
        cache_read_input_tokens=5000,
        ratelimit=limits,
        content=[
            {"type": "text", "text": "running it"},
            *code_execution_blocks("success"),
            *code_execution_blocks("nonzero_exit", "bash_code_execution"),
        ],
    )
    client = fake.client(max_retries=2)
    with ce.execution("review", agent=AGENT):
        for _ in range(3):
            client.messages.create(model=MODEL, max_tokens=512, messages=PROMPT)
    fake.script(
        Reply(status=429, retry_after=0.01, ratelimit=limits),
        Reply(status=529, retry_after=0.01),
        Reply(stop_reason="max_tokens", ratelimit=limits),
    )
    with ce.execution("retrying", agent=AGENT):
        client.messages.create(model=MODEL, max_tokens=512, messages=PROMPT)
    fake.script(*[Reply(status=429, retry_after=0.01)] * 3)
    with pytest.raises(anthropic.RateLimitError), ce.execution("rate-limited", agent=AGENT):
        client.messages.create(model=MODEL, max_tokens=512, messages=PROMPT)
    fake.script(Reply(latency=0.02, event_delay=0.005, text_deltas=3, ratelimit=limits))
    with (
        ce.execution("streaming", agent=AGENT),
        client.messages.stream(model=MODEL, max_tokens=512, messages=PROMPT) as stream,
    ):
        stream.get_final_message()
    with ce.execution("unpriced", agent=AGENT):
        client.messages.create(model=UNPRICED, max_tokens=512, messages=PROMPT)
    fake.script(
        Reply(
            stop_reason="refusal",
            stop_details={"type": "refusal", "category": "cyber"},
            diagnostics={"cache_miss_reason": {"type": "system_changed", "cache_missed_input_tokens": 5000}},
            ratelimit=limits,
        )
    )
    with ce.execution("refused", agent=AGENT):
        client.messages.create(model=MODEL, max_tokens=512, messages=PROMPT)


def grafana_values(dashboard: dict[str, Any], instance: str) -> dict[str, str]:
    """What Grafana would substitute: the test's targets, the traffic's agent and models, defaults."""
    values = dict(BUILTINS)
    for name, variable in variables(dashboard).items():
        if variable["type"] in ("custom", "textbox"):
            values[name] = variable["current"]["value"]
    models = f"{MODEL}|{UNPRICED}"  # a multi-value selection, as Grafana writes it into =~
    values |= {"job": JOB, "instance": instance, "agent": f"{AGENT}|{CC_AGENT}", "model": models}
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    """``expr`` with every ``$name`` / ``${name}`` replaced; an unknown variable fails the test."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown variable ${name} in {expr}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def all_queries(instance: str) -> Iterator[tuple[str, str]]:
    """``(where, PromQL)`` for every query of every dashboard, variables substituted."""
    for name in FILES:
        dashboard = load(name)
        values = grafana_values(dashboard, instance)
        for where, expr in [*queries(dashboard), *variable_queries(dashboard)]:
            yield f"{name}: {where}", substitute(expr, values)


def running_execution(started: threading.Event, release: threading.Event) -> None:
    """An execution that stays open until ``release``: the in-flight and longest-running gauges."""
    with ce.execution("long-running", agent=AGENT):
        started.set()
        release.wait(timeout=300)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, str]]:
    """A Prometheus that scraped the traffic (and fired one Claude alert); yields it and the target."""
    tmp = tmp_path_factory.mktemp("dashboards-live")
    rules = tmp / "alerts.yml"
    rules.write_text(RULES)
    bands = tmp / "bands.yml"
    bands.write_text(band_rules())
    registry = CollectorRegistry()
    if ce.is_instrumented():  # a test that failed half-way must not leak into this one
        ce.uninstrument()
    ce.instrument(registry=registry)
    server = ce.start_http_server(port=0, addr="127.0.0.1", registry=registry, otlp=True)
    target = f"127.0.0.1:{server.port}"
    started, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=running_execution, args=(started, release), daemon=True)
    try:
        with (
            FakeAnthropic() as fake,
            Prometheus(SCRAPE.format(job=JOB, target=target), [rules, bands], tmp=tmp) as prom,
        ):
            prom.wait_for(f'up{{job="{JOB}"}} == 1', timeout=60)
            # Twice, a scrape apart: a series' first sample is not an increase, so rates need a second round.
            drive(fake, server.url)
            prom.wait_for(f'claude_requests_total{{job="{JOB}", model="{UNPRICED}"}}', timeout=60)
            prom.wait_for(f'claude_refusals_total{{job="{JOB}"}}', timeout=60)  # the round's last request
            drive(fake, server.url)
            worker.start()
            assert started.wait(timeout=60)
            prom.wait_for(f'claude_executions_in_flight{{task="long-running", job="{JOB}"}} > 0', timeout=60)
            prom.wait_for('ALERTS{alertname="ClaudeDashboardTest", alertstate="firing"}', timeout=60)
            prom.wait_for('agent:claude_anomaly_signal:lower{signal="requests_per_execution"}', timeout=60)
            yield prom, target
    finally:
        release.set()
        if worker.is_alive():
            worker.join(timeout=5)
        server.close()
        ce.uninstrument()


def test_every_dashboard_query_returns_series(scraped: tuple[Prometheus, str]) -> None:
    prom, target = scraped
    pending = dict(all_queries(target))
    assert len(pending) > 80
    deadline = time.monotonic() + DEADLINE
    while pending and time.monotonic() < deadline:
        for where, expr in list(pending.items()):
            try:
                result = prom.query(expr)
            except RuntimeError as e:
                pytest.fail(f"{where}: Prometheus rejects the query: {e}\n{expr}")
            if result:
                del pending[where]
        if pending:
            time.sleep(0.5)
    assert not pending, "queries without series:\n" + "\n".join(f"{w}\n  {e}" for w, e in pending.items())


@pytest.mark.parametrize("name", sorted(FILES))
def test_variable_queries_offer_the_traffic(scraped: tuple[Prometheus, str], name: str) -> None:
    prom, target = scraped
    dashboard = load(name)
    values = grafana_values(dashboard, target) | {"agent": ".*", "model": ".*"}
    expected = {"job": JOB, "instance": target, "agent": AGENT, "model": MODEL}
    for variable, selector in variable_queries(dashboard):
        label = re.search(r",\s*(\w+)\)$", variables(dashboard)[variable]["query"])
        assert label and label.group(1) == variable
        found = prom.query(substitute(selector, values))
        assert expected[variable] in {series["metric"].get(variable) for series in found}, variable


# (dashboard, panel, query, series labels or None for the only series, expected low, expected high)
EXPECTED: list[tuple[str, str, str, dict[str, str] | None, float, float]] = [
    ("claude-fleet.json", "Requests/s", "A", None, 1e-6, 100),
    ("claude-fleet.json", "Error rate", "A", None, 5, 30),  # 1 failed request in 7
    ("claude-fleet.json", "Firing alerts", "A", None, 1, 10),
    ("claude-fleet.json", "Agents seen", "A", None, 1, 1),
    (
        "claude-agent.json",
        "Rate-limit headroom",
        "A",
        {"resource": "tokens", "model": "claude-sonnet-4-6"},
        90,
        90,
    ),
    (
        "claude-agent.json",
        "Rate-limit headroom",
        "A",
        {"resource": "requests", "model": "claude-sonnet-4-6"},
        98,
        98,
    ),
    # 100 %, give or take the last bit of a float division of two rates
    ("claude-agent.json", "Code-execution failures", "A", {"tool": "bash_code_execution"}, 99.999, 100),
    ("claude-agent.json", "Code-execution failures", "A", {"tool": "code_execution"}, 0, 0),
    ("claude-agent.json", "Stop reasons", "A", {"stop_reason": "max_tokens"}, 5, 30),
    ("claude-agent.json", "Retries and 429s", "A", {"reason": "529"}, 1e-6, 100),
    ("claude-agent.json", "Retries and 429s", "B", None, 1e-6, 100),
    ("claude-agent.json", "Longest running", "A", None, 0.1, 600),
    ("claude-agent.json", "Executions in flight", "A", None, 1, 1),
    ("claude-cost.json", "Cache hit ratio", "A", None, 50, 80),  # 5000 of ~7000 prompt tokens
    ("claude-cost.json", "Unpriced tokens/s", "A", None, 1e-6, 1e6),
    ("claude-cost.json", "Cache savings per hour", "A", None, 1e-6, 1e6),
    ("claude-cost.json", "Cache hit ratio by agent", "A", None, 50, 80),
    ("claude-cost.json", "Cache misses by reason", "A", {"reason": "system_changed"}, 1e-6, 100),
    ("claude-cost.json", "Missed cache tokens by reason", "A", {"reason": "system_changed"}, 1e-6, 1e6),
    ("claude-cost.json", "Unpriced tokens by model and reason", "A", {"reason": "model"}, 1e-6, 1e6),
    ("claude-agent.json", "Refusals by category", "A", {"category": "cyber"}, 1e-6, 100),
    ("claude-agent.json", "Errors by type and code", "A", {"error_code": "none"}, 1e-6, 100),
    ("claude-cost.json", "Spend per hour", "A", None, 1e-6, 1e6),
    ("claude-fleet.json", "Agents by source", "A", {"source": "sdk"}, 1, 1),
    ("claude-fleet.json", "Agents by source", "A", {"source": "claude_code"}, 1, 1),
    ("claude-cost.json", "Spend per hour by source", "A", {"source": "sdk"}, 1e-6, 1e6),
    ("claude-fleet.json", "Claude Code sessions/min by agent", "A", {"agent": CC_AGENT}, 1e-6, 1e6),
    ("claude-fleet.json", "Telemetry received/s", "A", {"source": "otlp", "result": "accepted"}, 1e-6, 1e6),
]


@pytest.mark.parametrize(("name", "title", "ref", "labels", "low", "high"), EXPECTED)
def test_panels_show_the_traffic(
    scraped: tuple[Prometheus, str],
    name: str,
    title: str,
    ref: str,
    labels: dict[str, str] | None,
    low: float,
    high: float,
) -> None:
    prom, target = scraped
    dashboard = load(name)
    # A window over both rounds of traffic, whenever this test runs after the fixture.
    values = grafana_values(dashboard, target) | {"__rate_interval": "2m"}
    found = prom.query(substitute(panel_query(dashboard, title, ref), values))
    series = [s for s in found if labels is None or labels.items() <= s["metric"].items()]
    assert len(series) == 1, found
    value = float(series[0]["value"][1])
    assert low - 1e-9 * abs(low) <= value <= high + 1e-9 * abs(high), series  # float sums: allow rounding
