"""The bundled alerts judge Claude Code agents as they judge SDK agents: OTLP telemetry (written by the
test, shaped like Claude Code's) -> the exporter -> a real Prometheus evaluating ``claude-exporter rules``
output with shrunk windows -> firing alerts for the Claude Code agent:

- ClaudeErrorRateHigh: a quarter of its requests fail (api_error after retries);
- ClaudeRateLimited: its requests end on 429s;
- ClaudeCodeExecutionFailing: its Bash commands exit non-zero;
- ClaudeCostBudgetBurn: it spends over a (tiny) budget;
- ClaudeExecutionTimeout (running): a turn that never finished;
- and nothing for a healthy Claude Code agent with the same settings.
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import claude_exporter as ce
import pytest
import yaml
from claude_exporter.config import load_config
from claude_exporter.rules import render_rules
from otlp_payloads import api_request, event, logs_request, resource
from prometheus_client import CollectorRegistry
from stack import Prometheus, require_binary

pytestmark = pytest.mark.system

ALERTS: list[dict[str, Any]] = [
    {"name": "execution_timeout", "threshold_ms": 2000},
    {"name": "error_rate", "window": "5s", "min_requests": 3, "for": "1s"},
    {"name": "rate_limited", "window": "5s", "for": "1s"},
    {"name": "code_execution_failures", "window": "5s", "min_blocks": 3, "for": "1s"},
    {"name": "cost_budget", "threshold_usd_per_hour": 0.5, "for": "1s"},
    {"name": "token_spike", "enabled": False},
    {"name": "latency_drift", "enabled": False},
]
AGENTS = ("cc-failing", "cc-healthy")
SCRAPE = """
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: claude-exporter
    static_configs: [{{targets: ["{target}"]}}]
"""
_ids = itertools.count()


def post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url + "/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


def one_turn(agent: str, failing: bool) -> list[dict[str, Any]]:
    """One claude -p turn: a Bash tool use and an answer; the failing agent's Bash fails, and every
    fourth of its turns ends on an error (a 500 or a 429 after its retries)."""
    n = next(_ids)
    session, prompt = f"{agent}-s{n}", f"{agent}-p{n}"
    ids = {"prompt.id": prompt}
    records = [
        event("user_prompt", session, **ids, prompt="<REDACTED>"),
        api_request(f"req-{n}", session=session, prompt=prompt, tokens=(20_000, 2_000, 0, 0)),
        event(
            "tool_result",
            session,
            **ids,
            tool_name="Bash",
            tool_use_id=f"toolu-{n}",
            success="false" if failing else "true",
            error_type="ShellError" if failing else "",
            duration_ms="30",
            request_id=f"req-{n}",
        ),
    ]
    if failing and n % 4 == 0:
        status = 429 if n % 8 == 0 else 500
        error = {"model": "claude-sonnet-4-5", "status_code": status, "attempt": 3, "duration_ms": 20}
        records.append(event("api_error", session, **ids, request_id=f"err-{n}", query_source="sdk", **error))
        records.append(event("api_retries_exhausted", session, **ids, status_code=status))
    else:
        records.append(event("assistant_response", session, **ids, model="claude-sonnet-4-5"))
    return records


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "claude-exporter.yaml"
    config = {
        "monitoring": {agent: {"alerts": ALERTS} for agent in AGENTS},
        "exporter": {"rules": {"evaluation_interval": "1s"}, "otlp": {"enabled": True}},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    registry = CollectorRegistry()
    ce.instrument(config=load_config(path), registry=registry)
    server = ce.start_http_server(port=0, addr="127.0.0.1", config=load_config(path), registry=registry)
    try:
        yield server.url, path
    finally:
        server.close()
        ce.uninstrument()


def firing(prom: Prometheus, alert: str, agent: str) -> list[dict[str, Any]]:
    return prom.query(f'ALERTS{{alertname="{alert}", agent="{agent}", alertstate="firing"}}')


def test_the_bundled_alerts_fire_for_claude_code_agents(tmp_path: Path, exporter: tuple[str, Path]) -> None:
    require_binary("prometheus")
    url, config = exporter
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(load_config(config)))
    target = url.removeprefix("http://")
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            for agent in AGENTS:
                post(url, logs_request(one_turn(agent, agent == "cc-failing"), resource(agent)))
            stop.wait(0.1)

    # A turn that starts and never finishes, as a claude -p that hangs (or died).
    hung = [event("user_prompt", "hung-s", **{"prompt.id": "hung-p"}, prompt="<REDACTED>")]
    post(url, logs_request(hung, resource("cc-failing")))
    with Prometheus(SCRAPE.format(target=target), [rules], tmp=tmp_path / "prom") as prom:
        prom.wait_for('up{job="claude-exporter"} == 1', timeout=60)
        worker = threading.Thread(target=traffic, daemon=True)
        worker.start()
        try:
            expected = (
                "ClaudeErrorRateHigh",
                "ClaudeRateLimited",
                "ClaudeCodeExecutionFailing",
                "ClaudeCostBudgetBurn",
                "ClaudeExecutionTimeout",
            )
            deadline = time.monotonic() + 90  # bounds a failing run only
            missing = set(expected)
            while missing and time.monotonic() < deadline:
                missing = {alert for alert in missing if not firing(prom, alert, "cc-failing")}
                time.sleep(0.5)
            assert not missing, f"not firing for the Claude Code agent: {sorted(missing)}"
            (running,) = firing(prom, "ClaudeExecutionTimeout", "cc-failing")
            assert running["metric"]["execution"] == "running"
            # The healthy agent has the same settings (and the same spend, so only the budget fires).
            healthy = prom.query('ALERTS{agent="cc-healthy", alertstate="firing"}')
            assert {a["metric"]["alertname"] for a in healthy} <= {"ClaudeCostBudgetBurn"}, healthy
        finally:
            stop.set()
            worker.join(timeout=10)
