"""``GET /health/claude-agent``: the seed's curl | jq command, the sliding window and the status rules."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anthropic
import claude_exporter as ce
import pytest
import yaml
from claude_exporter.config import Config, parse_config
from claude_exporter.exposition.health import HealthWindow
from claude_exporter.ingest.events import Event, apply_events, parse_event
from claude_exporter.recording.state import ACTIVE
from claude_exporter.testing import Reply
from conftest import MODEL, USER
from prometheus_client import CollectorRegistry
from stack import require_binary

TOKEN = "health-test-token-6d1f0a"
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


# -- helpers -------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(agents: dict[str, Any] | None = None, window_seconds: float | None = None) -> Config:
    doc: dict[str, Any] = {"monitoring": agents or {}}
    if window_seconds is not None:
        doc["exporter"] = {"health": {"window_seconds": window_seconds}}
    return parse_config(doc)


def thresholds(
    error_percent: float | None = None, timeout_ms: float | None = None, min_requests: int = 1
) -> dict[str, Any]:
    """Alert overrides; ``min_requests`` 1 by default, so these tests judge the threshold arithmetic."""
    alerts: list[dict[str, Any]] = []
    if error_percent is not None:
        alerts.append(
            {"name": "error_rate", "threshold_percent": error_percent, "min_requests": min_requests}
        )
    if timeout_ms is not None:
        alerts.append({"name": "execution_timeout", "threshold_ms": timeout_ms})
    return {"alerts": alerts}


def window_for(cfg: Config) -> tuple[HealthWindow, FakeClock, Any]:
    """Instrument with ``cfg`` and build a window over its recorder with a fake clock, ticked by hand
    (the recorder's own window ticks from a thread in real time; this one only when the test says)."""
    rec = ce.instrument(config=cfg, registry=CollectorRegistry())
    clock = FakeClock(T0)
    window = HealthWindow(cfg, rec, clock=clock)
    window.tick()
    return window, clock, rec


def feed(rec: Any, agent: str, ok: int = 0, errors: int = 0, ms: float = 100.0) -> None:
    """Finished executions with exact durations, through the ingestion path (as POST /v1/events)."""
    lines = [{"event": "claude_execution_complete", "agent": agent, "duration_ms": ms}] * ok
    lines += [
        {"event": "claude_execution_error", "agent": agent, "duration_ms": ms, "error_type": "RateLimitError"}
    ] * errors
    events = [parse_event(line) for line in lines]
    assert all(isinstance(event, Event) for event in events)
    assert apply_events(rec, events) == ok + errors


def parse_utc(stamp: str) -> datetime:
    assert stamp.endswith("Z"), stamp
    parsed = datetime.fromisoformat(stamp[:-1] + "+00:00")
    assert parsed.utcoffset() == timedelta(0)
    return parsed


def get_json(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("CLAUDE_EXPORTER_TOKEN", raising=False)
    monkeypatch.delenv("CLAUDE_EXPORTER_CONFIG", raising=False)
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    try:
        yield
    finally:
        ce.uninstrument()


@pytest.fixture
def served(clean: None) -> Iterator[list[Any]]:
    """Servers started by a test, closed after it."""
    servers: list[Any] = []
    try:
        yield servers
    finally:
        for server in servers:
            server.close()


def write_config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- the seed's command, with real curl and jq ---------------------------------------------------------------


@pytest.mark.system
def test_seed_curl_jq_command(tmp_path, fake_anthropic, served):
    curl = require_binary("curl")
    jq = require_binary("jq")
    assert curl
    assert jq
    path = write_config(tmp_path, {"monitoring": {"claude_code_executor": {"sampling_rate": 1.0}}})
    ce.instrument(config=str(path), registry=CollectorRegistry())
    server = ce.start_http_server(0, config=str(path), token=TOKEN)
    served.append(server)

    fake_anthropic.script(
        Reply(latency=0.05), Reply(latency=0.05), Reply(status=500, latency=0.05), Reply(latency=0.05)
    )
    client = fake_anthropic.client(max_retries=0)
    with ce.execution("seed", agent="claude_code_executor"):
        client.messages.create(model=MODEL, max_tokens=16, messages=USER)
    client.messages.create(model=MODEL, max_tokens=16, messages=USER)
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model=MODEL, max_tokens=16, messages=USER)
    client.messages.create(model=MODEL, max_tokens=16, messages=USER)

    command = (
        f'curl -H "Authorization: Bearer $TOKEN" {server.url}/health/claude-agent'
        " | jq '.metrics | {avg_execution_ms, error_rate_percent, last_check}'"
    )
    before = datetime.now(timezone.utc).replace(microsecond=0)
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        env={**os.environ, "TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    after = datetime.now(timezone.utc)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert list(out) == ["avg_execution_ms", "error_rate_percent", "last_check"]
    assert out["error_rate_percent"] == 25.0  # 1 failed execution of 4
    # Four executions of one request each, every reply 50 ms late.
    assert 50.0 <= out["avg_execution_ms"] < 1000.0
    assert before <= parse_utc(out["last_check"]) <= after

    # The whole document, through the same server.
    status, doc = get_json(server.url + "/health/claude-agent", TOKEN)
    assert status == 200
    # 25% errors is over the default 5% threshold, but 4 executions are fewer than the error_rate
    # alert's min_requests (10): reported, not judged, as the alert rule does.
    assert doc["status"] == "healthy"
    assert doc["window_seconds"] == 300
    assert doc["metrics"]["executions"] == 4
    assert set(doc["agents"]) == {"claude_code_executor", "default"}
    assert doc["agents"]["claude_code_executor"]["executions"] == 1
    assert doc["agents"]["claude_code_executor"]["error_rate_percent"] == 0.0
    assert doc["agents"]["claude_code_executor"]["status"] == "healthy"
    assert doc["agents"]["default"]["executions"] == 3
    assert doc["agents"]["default"]["error_rate_percent"] == pytest.approx(100 / 3, abs=0.005)
    assert doc["agents"]["default"]["status"] == "healthy"


@pytest.mark.system
def test_seed_command_without_the_token_is_refused(fake_anthropic, served):
    require_binary("curl")
    ce.instrument(registry=CollectorRegistry())
    server = ce.start_http_server(0, token=TOKEN)
    served.append(server)
    done = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", server.url + "/health/claude-agent"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.stdout == "401"


@pytest.mark.system
def test_not_instrumented_answers_503(served):
    server = ce.start_http_server(0)
    served.append(server)
    status, doc = get_json(server.url + "/health/claude-agent")
    assert status == 503
    assert doc["status"] == "unknown"


@pytest.mark.system
def test_window_seconds_from_the_config(tmp_path, served):
    path = write_config(tmp_path, {"monitoring": {}, "exporter": {"health": {"window_seconds": 42}}})
    ce.instrument(config=str(path), registry=CollectorRegistry())
    server = ce.start_http_server(0)
    served.append(server)
    with ce.execution("t", agent="x"):
        pass
    status, doc = get_json(server.url + "/health/claude-agent")
    assert status == 200
    assert doc["window_seconds"] == 42
    assert doc["metrics"]["executions"] == 1
    assert doc["status"] == "healthy"


# -- the sliding window ----------------------------------------------------------------------------------


def tick_to(window: HealthWindow, clock: FakeClock, until: float) -> None:
    """Tick once a second (as the recorder's thread does) up to ``until``."""
    while clock.now + 1 <= until:
        clock.now += 1
        window.tick()


@pytest.mark.unit
def test_sliding_window_drops_executions_exactly_window_seconds_after_they_were_seen(clean):
    window, clock, rec = window_for(config(window_seconds=60))  # first snapshot at T0
    feed(rec, "a", ok=1, ms=100.0)
    tick_to(window, clock, T0 + 1)  # the first snapshot that holds A
    tick_to(window, clock, T0 + 30)
    feed(rec, "a", errors=1, ms=300.0)
    tick_to(window, clock, T0 + 31)  # the first snapshot that holds B

    tick_to(window, clock, T0 + 60)
    clock.now = T0 + 60.999
    window.tick()
    assert window.report()["metrics"] == {
        "avg_execution_ms": 200.0,
        "error_rate_percent": 50.0,
        "executions": 2,
        "last_check": "2023-11-14T22:14:20Z",
    }
    # A leaves the window exactly window_seconds after the snapshot that first held it ...
    clock.now = T0 + 61
    window.tick()
    assert window.report()["metrics"] == {
        "avg_execution_ms": 300.0,
        "error_rate_percent": 100.0,
        "executions": 1,
        "last_check": "2023-11-14T22:14:21Z",
    }
    # ... and so does B.
    tick_to(window, clock, T0 + 90)
    assert window.report()["metrics"]["executions"] == 1
    tick_to(window, clock, T0 + 91)
    report = window.report()
    assert report["metrics"] == {
        "avg_execution_ms": None,
        "error_rate_percent": 0.0,
        "executions": 0,
        "last_check": "2023-11-14T22:14:51Z",
    }
    assert report["status"] == "healthy"
    assert report["window_seconds"] == 60


@pytest.mark.unit
def test_executions_since_the_last_tick_count_at_once(clean):
    window, clock, rec = window_for(config(window_seconds=60))
    tick_to(window, clock, T0 + 100)
    feed(rec, "a", ok=3, ms=10.0)
    clock.now += 0.5  # no tick yet
    assert window.report()["metrics"]["executions"] == 3


@pytest.mark.unit
def test_sliding_window_per_agent_and_memory_bounded(clean):
    window, clock, rec = window_for(config(window_seconds=10))
    for second in range(1, 101):
        feed(rec, "busy", ok=1, ms=float(second))
        if second == 50:
            feed(rec, "once", ok=1, ms=5.0)
        tick_to(window, clock, T0 + second)
    # At T0 + 100 the window holds what the snapshots after T0 + 90 first saw: seconds 91..100.
    report = window.report()
    busy = report["agents"]["busy"]
    assert busy["executions"] == 10
    assert busy["avg_execution_ms"] == sum(range(91, 101)) / 10
    assert report["agents"].get("once", {"executions": 0})["executions"] == 0
    assert report["metrics"]["executions"] == 10
    # Memory follows the window, not the traffic nor the time running.
    assert len(window._snapshots) <= 12


@pytest.mark.unit
def test_figures_are_rounded(clean):
    window, _, rec = window_for(config())
    feed(rec, "a", ok=2, ms=100.0)
    feed(rec, "a", errors=1, ms=100.05)
    figures = window.report()["agents"]["a"]
    assert figures["avg_execution_ms"] == 100.0  # 300.05 / 3 = 100.0166...
    assert figures["error_rate_percent"] == 33.33


# -- status, from each agent's own thresholds ------------------------------------------------------------


def statuses(window: HealthWindow, running: dict[str, float] | None = None) -> dict[str, str]:
    report = window.report(running)
    return {"(overall)": report["status"]} | {name: a["status"] for name, a in report["agents"].items()}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("ok", "errors", "expected"),
    [
        (20, 0, "healthy"),
        (19, 1, "healthy"),  # 5%: exactly half the 10% threshold is not over it
        (16, 1, "degraded"),  # 5.88%
        (9, 1, "degraded"),  # 10%: exactly the threshold is not over it
        (8, 1, "unhealthy"),  # 11.1%
        (0, 3, "unhealthy"),
    ],
)
def test_error_rate_status(clean, ok, errors, expected):
    window, _, rec = window_for(config({"strict": thresholds(error_percent=10)}))
    feed(rec, "strict", ok=ok, errors=errors)
    assert statuses(window) == {"(overall)": expected, "strict": expected}


@pytest.mark.unit
def test_thresholds_are_each_agents_own(clean):
    window, _, rec = window_for(
        config({"strict": thresholds(error_percent=2), "lax": thresholds(error_percent=50)})
    )
    for agent in ("strict", "lax", "unnamed"):  # unnamed: the default threshold, 5%
        feed(rec, agent, ok=29, errors=1)  # 3.33% each
    assert statuses(window) == {
        "(overall)": "unhealthy",
        "lax": "healthy",
        "strict": "unhealthy",
        "unnamed": "degraded",
    }


@pytest.mark.unit
def test_error_rate_alert_disabled_ignores_errors(clean):
    window, _, rec = window_for(config({"noisy": {"alerts": [{"name": "error_rate", "enabled": False}]}}))
    feed(rec, "noisy", errors=5)
    assert statuses(window) == {"(overall)": "healthy", "noisy": "healthy"}


@pytest.mark.unit
def test_slow_executions_status(clean):
    window, _, rec = window_for(
        config({"slow": thresholds(timeout_ms=1000), "fast": thresholds(timeout_ms=5000)})
    )
    # Exactly the timeout is not over it.
    feed(rec, "slow", ok=1, ms=1000.0)
    assert statuses(window)["slow"] == "healthy"
    # One execution over the timeout, the average under it: degraded.
    feed(rec, "slow", ok=8, ms=100.0)
    feed(rec, "slow", ok=1, ms=1500.0)
    # The same traffic under a longer timeout: healthy.
    feed(rec, "fast", ok=1, ms=1000.0)
    feed(rec, "fast", ok=8, ms=100.0)
    feed(rec, "fast", ok=1, ms=1500.0)
    assert statuses(window) == {"(overall)": "degraded", "fast": "healthy", "slow": "degraded"}
    # The average over the timeout: unhealthy.
    feed(rec, "slow", ok=10, ms=2500.0)
    assert statuses(window)["slow"] == "unhealthy"


@pytest.mark.unit
def test_a_hung_execution_makes_its_agent_unhealthy(clean):
    window, _, rec = window_for(config({"hangs": thresholds(timeout_ms=200)}))
    feed(rec, "hangs", ok=5, ms=10.0)
    assert statuses(window, {"hangs": 150.0})["hangs"] == "healthy"
    assert statuses(window, {"hangs": 200.0})["hangs"] == "healthy"
    assert statuses(window, {"hangs": 250.0}) == {"(overall)": "unhealthy", "hangs": "unhealthy"}
    # An agent whose only execution is still running, with nothing finished in the window.
    report = window.report({"stuck": 40_000.0})
    assert report["agents"]["stuck"]["status"] == "unhealthy"  # default timeout, 30 s
    assert report["agents"]["stuck"]["executions"] == 0
    assert report["agents"]["stuck"]["longest_running_ms"] == 40_000.0
    assert report["status"] == "unhealthy"


@pytest.mark.unit
def test_error_rate_is_judged_only_with_min_requests(clean):
    """As the ClaudeErrorRateHigh rule: too few executions in the window to judge an error rate."""
    window, _, rec = window_for(config({"strict": thresholds(error_percent=10, min_requests=10)}))
    feed(rec, "strict", ok=0, errors=1)  # 100% of one execution: not enough to go on
    assert statuses(window)["strict"] == "healthy"
    assert window.report()["agents"]["strict"]["error_rate_percent"] == 100.0  # still reported
    feed(rec, "strict", ok=8, errors=1)  # 2 of 10: 20%, over the threshold
    assert statuses(window)["strict"] == "unhealthy"


@pytest.mark.unit
def test_overall_status_is_the_worst_agents(clean):
    window, _, rec = window_for(config({name: thresholds(error_percent=10) for name in ("a", "b", "c")}))
    assert window.report()["status"] == "healthy"  # no agents at all
    feed(rec, "a", ok=10)
    assert statuses(window) == {"(overall)": "healthy", "a": "healthy"}
    feed(rec, "b", ok=16, errors=1)
    assert statuses(window) == {"(overall)": "degraded", "a": "healthy", "b": "degraded"}
    feed(rec, "c", ok=1, errors=1)
    assert statuses(window) == {"(overall)": "unhealthy", "a": "healthy", "b": "degraded", "c": "unhealthy"}


@pytest.mark.system
def test_hung_execution_through_the_endpoint(tmp_path, served):
    """An execution left open past its agent's 200 ms timeout: unhealthy while it runs, then judged by its
    duration once it has finished."""
    doc = {
        "monitoring": {
            "hangs": {"alerts": [{"name": "execution_timeout", "threshold_ms": 200}]},
            "fine": {"sampling_rate": 1.0},
        }
    }
    path = write_config(tmp_path, doc)
    ce.instrument(config=str(path), registry=CollectorRegistry())
    server = ce.start_http_server(0)
    served.append(server)
    url = server.url + "/health/claude-agent"
    with ce.execution("quick", agent="fine"):
        pass

    entered = threading.Event()
    release = threading.Event()

    def hang() -> None:
        with ce.execution("stuck", agent="hangs"):
            entered.set()
            release.wait(5)

    thread = threading.Thread(target=hang, daemon=True)
    before = time.monotonic()  # the execution opens after this ...
    thread.start()
    try:
        assert entered.wait(5)
        opened = time.monotonic()  # ... and before this
        _, early = get_json(url)
        early_age = time.monotonic() - before  # at most this old when it was looked at
        time.sleep(max(0.0, 0.25 - (time.monotonic() - opened)))
        _, late = get_json(url)
        time.sleep(max(0.0, 0.3 - (time.monotonic() - opened)))
    finally:
        release.set()
        thread.join(5)

    if early_age < 0.2:  # the first look came before the timeout
        assert early["agents"]["hangs"]["status"] == "healthy"
        assert early["agents"]["hangs"]["longest_running_ms"] < 200
        assert early["status"] == "healthy"
    assert late["agents"]["hangs"]["status"] == "unhealthy"
    assert late["agents"]["hangs"]["longest_running_ms"] >= 250
    assert late["agents"]["hangs"]["executions"] == 0
    assert late["agents"]["fine"]["status"] == "healthy"
    assert late["status"] == "unhealthy"

    # Finished at ~300 ms: the average (one execution) is over the timeout, so still unhealthy ...
    _, done = get_json(url)
    assert done["agents"]["hangs"]["executions"] == 1
    assert done["agents"]["hangs"]["longest_running_ms"] == 0.0
    assert done["agents"]["hangs"]["avg_execution_ms"] >= 300
    assert done["agents"]["hangs"]["status"] == "unhealthy"
    # ... and once quick executions bring the average down, one slow one in the window is degraded.
    for _ in range(5):
        with ce.execution("quick", agent="hangs"):
            pass
    _, later = get_json(url)
    assert later["agents"]["hangs"]["executions"] == 6
    assert later["agents"]["hangs"]["avg_execution_ms"] < 200
    assert later["agents"]["hangs"]["status"] == "degraded"
    assert later["status"] == "degraded"
