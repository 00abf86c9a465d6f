"""End to end: agents on the real SDK -> exporter -> Prometheus -> Alertmanager -> a webhook.

The Debian ``prometheus`` and ``prometheus-alertmanager`` run on loopback with ``deploy/``'s configs, only
addresses and intervals substituted; the rules are ``claude-exporter rules`` output for a config whose
windows and thresholds are shrunk so the whole run takes well under a minute:

- ``slow``: one execution of 3 s against a 2 s timeout -> ClaudeExecutionTimeout (finished), paged;
- ``hung``: an execution that runs until its alert arrived -> ClaudeExecutionTimeout (running), paged;
- ``spiky``: tokens per execution up 4x -> ClaudeTokenSpike, ticketed;
- ``drifting``: the API's latency up 4x (0.4 s to 1.6 s) -> ClaudeLatencyDrift, ticketed;
- ``spent``: its workspace hits its spend limit (429 ``enforced_spend_limit_reached`` on every request)
  -> ClaudeSpendLimitReached, paged on the first one, and never ClaudeRateLimited;
- ``cached``: its prompt-cache prefix breaks (reads fall, writes rise) -> ClaudeCacheHitRatioDrop;
- ``healthy``: the same settings, steady traffic -> nothing, ever.

Nothing here depends on how loaded the machine is. The sick agents break when their bands exist (not after
a fixed number of seconds), the hung execution ends only once its alert arrived, and every duration the
rules judge is dominated by the fake API's latency: the healthy agent's executions take 0.4 s of API time,
so a load that adds even 0.3 s to each of them stays below the latency alert's 200 % threshold (+75 %),
while the drifting agent's 4x (+300 %) is above it by as much.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import claude_exporter as ce
import pytest
import yaml
from claude_exporter.config import load_config
from claude_exporter.rules import render_rules
from claude_exporter.testing import FakeAnthropic, Reply
from prometheus_client import CollectorRegistry
from stack import Alertmanager, Prometheus, Webhook, require_binary

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 2.0
# Every agent gets the same shrunk settings, so "nothing fires for healthy" is a real check.
ALERTS: list[dict[str, Any]] = [
    {"name": "execution_timeout", "threshold_ms": int(TIMEOUT_S * 1000)},
    # The band learns from 20 s ending 5 s ago, once 10 s of it were recorded.
    {
        "name": "token_spike",
        "window": "5s",
        "baseline_window": "20s",
        "min_executions": 3,
        "for": "2s",
        "min_history": "10s",
    },
    {
        "name": "latency_drift",
        "window": "5s",
        "baseline_window": "20s",
        "min_executions": 3,
        "for": "2s",
        "min_history": "10s",
        "threshold_change_percent": 200,  # +300 % for "drifting", +75 % for "healthy" at worst
    },
    {"name": "error_rate", "window": "5s", "min_requests": 3, "for": "2s"},
    {"name": "rate_limited", "window": "5s", "for": "2s"},
    {"name": "code_execution_failures", "window": "5s", "min_blocks": 3, "for": "2s"},
    {"name": "truncated_responses", "window": "5s", "min_requests": 3, "for": "2s"},
    {"name": "spend_limit", "window": "20s"},
    {"name": "cache_hit_drop", "window": "5s", "baseline_window": "20s", "min_requests": 3, "for": "2s"},
]
AGENTS = ("slow", "hung", "spiky", "drifting", "spent", "cached", "healthy")
SPEND_LIMIT_AFTER = 8.0
API_LATENCY = 0.4  # seconds, of every call of "healthy" and of "drifting" before it drifts
DRIFTED_LATENCY = 4 * API_LATENCY  # below the 2 s execution timeout
# The bands the breaks wait for: tokens per execution of "spiky", execution time of "drifting" (the cache
# alert's own baseline, a plain rate over 20 s ending 5 s ago, exists well before either).
BANDS_READY = (
    'count(agent:claude_anomaly_signal:upper{agent="spiky", signal="tokens_per_execution"})'
    ' and count(agent:claude_anomaly_signal:upper{agent="drifting", signal="execution_duration"})'
)


def _substitute(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"deploy config no longer contains {old!r}: update this test"
        text = text.replace(old, new)
    return text


class Traffic:
    """Agent threads driving the real SDK through the fake API until ``stop``."""

    def __init__(self, fake: FakeAnthropic) -> None:
        self.fake = fake
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.t0 = time.monotonic()
        self.marks: dict[str, float] = {}
        self.broken = threading.Event()  # set once the bands exist: "spiky", "drifting", "cached" break
        self.hung_released = threading.Event()  # set once the hung execution's alert arrived
        self.errors: list[BaseException] = []
        self.clients: dict[str, Any] = {}

    def spawn(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as e:  # surfaced by the test, not lost in a thread
                self.errors.append(e)

        thread = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def call(self, agent: str, task: str) -> None:
        client = self.clients.get(agent) or self.clients.setdefault(
            agent, self.fake.client(key=agent, max_retries=0)
        )
        with ce.execution(task, agent=agent):
            client.messages.create(
                model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
            )

    def loop(self, agent: str, task: str, pause: float) -> None:
        while not self.stop.is_set():
            self.call(agent, task)
            self.stop.wait(pause)

    def slow(self) -> None:
        # Fast executions first, so the slow one lands on a series Prometheus already knows.
        while time.monotonic() - self.t0 < 6 and not self.stop.is_set():
            self.call("slow", "plan")
            self.stop.wait(0.3)
        self.marks["slow_start"] = time.monotonic()
        self.call("slow", "plan")  # 3 s: the responder answers the fourth "slow" phase slowly
        self.marks["slow_end"] = time.monotonic()
        self.loop("slow", "plan", 0.3)

    def hung(self) -> None:
        self.stop.wait(3)
        with ce.execution("stuck", agent="hung"):
            self.marks["hung_start"] = time.monotonic()
            self.hung_released.wait(120)
        self.marks["hung_end"] = time.monotonic()

    def spent(self) -> None:
        while not self.stop.is_set():
            try:
                self.call("spent", "bill")
            except anthropic.RateLimitError as err:  # the spend limit: what the agent would see
                assert err.error_code == "enforced_spend_limit_reached"
                self.marks.setdefault("spent", time.monotonic())
            self.stop.wait(0.2)

    def reply(self, request: Any) -> Reply:
        if request.key == "spent" and time.monotonic() - self.t0 >= SPEND_LIMIT_AFTER:
            return Reply(status=429, error_code="enforced_spend_limit_reached")
        if request.key == "cached":
            if not self.broken.is_set():
                return Reply(latency=0.05, input_tokens=50, cache_read_input_tokens=2000, output_tokens=100)
            self.marks.setdefault("cache_break", time.monotonic())
            miss = {"cache_miss_reason": {"type": "system_changed", "cache_missed_input_tokens": 2000}}
            return Reply(
                latency=0.05,
                input_tokens=50,
                cache_creation_input_tokens=2000,
                output_tokens=100,
                diagnostics=miss,
            )
        if request.key == "spiky":
            if not self.broken.is_set():
                return Reply(latency=0.05, input_tokens=400, output_tokens=600)
            self.marks.setdefault("spike", time.monotonic())
            return Reply(latency=0.05, input_tokens=1600, output_tokens=2400)
        if request.key == "drifting" and self.broken.is_set():
            self.marks.setdefault("drift", time.monotonic())
            return Reply(latency=DRIFTED_LATENCY, input_tokens=500, output_tokens=500)
        if request.key == "slow" and "slow_start" in self.marks and "slow_end" not in self.marks:
            return Reply(latency=TIMEOUT_S + 1.0, input_tokens=500, output_tokens=500)
        if request.key in ("healthy", "drifting"):
            return Reply(latency=API_LATENCY, input_tokens=500, output_tokens=500)
        return Reply(latency=0.1, input_tokens=500, output_tokens=500)


@pytest.fixture
def exporter_config(tmp_path: Path) -> Path:
    path = tmp_path / "claude-exporter.yaml"
    config = {
        "monitoring": {agent: {"alerts": ALERTS} for agent in AGENTS},
        "exporter": {"rules": {"evaluation_interval": "1s"}},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def instrumented(exporter_config: Path) -> Iterator[str]:
    config = load_config(exporter_config)
    registry = CollectorRegistry()
    ce.instrument(config=config, registry=registry)
    server = ce.start_http_server(port=0, addr="127.0.0.1", config=config, registry=registry)
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.close()
        ce.uninstrument()


def _first(alerts: list[dict[str, Any]], **labels: str) -> dict[str, Any] | None:
    for alert in alerts:
        if alert["status"] == "firing" and all(alert["labels"].get(k) == v for k, v in labels.items()):
            return alert
    return None


def test_alerts_reach_the_webhook(tmp_path: Path, exporter_config: Path, instrumented: str) -> None:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    rules = tmp_path / "claude-exporter.rules.yml"
    rules.write_text(render_rules(load_config(exporter_config)))
    with Webhook() as webhook, FakeAnthropic() as fake:
        am_config = _substitute(
            (ROOT / "deploy/alertmanager.yml").read_text(),
            {
                "http://alert-receiver:5001": webhook.url,
                "group_wait: 30s": "group_wait: 1s",
                "group_interval: 5m": "group_interval: 1s",
            },
        )
        with Alertmanager(am_config, tmp=tmp_path / "am") as am:
            prom_config = _substitute(
                (ROOT / "deploy/prometheus.yml").read_text(),
                {
                    "scrape_interval: 15s": "scrape_interval: 1s",
                    "evaluation_interval: 30s": "evaluation_interval: 1s",
                    '"127.0.0.1:9466"': f'"{instrumented}"',
                    '"127.0.0.1:9093"': f'"127.0.0.1:{am.port}"',
                },
            )
            with Prometheus(prom_config, [rules], tmp=tmp_path / "prom") as prom:
                prom.wait_for('up{job="claude-exporter"} == 1', timeout=60)
                traffic = Traffic(fake)
                fake.responder = traffic.reply
                traffic.spawn("healthy", functools.partial(traffic.loop, "healthy", "chat", 0.2))
                traffic.spawn("spiky", functools.partial(traffic.loop, "spiky", "chat", 0.2))
                traffic.spawn("slow", traffic.slow)
                traffic.spawn("hung", traffic.hung)
                traffic.spawn("spent", traffic.spent)
                traffic.spawn("cached", functools.partial(traffic.loop, "cached", "chat", 0.2))
                for _ in range(2):  # two at a time: >= 3 executions per 5 s window even at 1.6 s each
                    traffic.spawn("drifting", functools.partial(traffic.loop, "drifting", "chat", 0.2))
                try:
                    _check(webhook, prom, traffic)
                finally:
                    traffic.stop.set()
                    traffic.hung_released.set()
                    for thread in traffic.threads:
                        thread.join(timeout=10)
                assert not traffic.errors, traffic.errors


# Generous waits: they bound a failing run, never a passing one (each returns when its alert arrives).
WAIT = 90


def _check(webhook: Webhook, prom: Prometheus, traffic: Traffic) -> None:
    # A hung execution alerts while it still runs, paged (severity high); it ends only after that.
    hung = webhook.wait_for(
        lambda alerts: _first(alerts, alertname="ClaudeExecutionTimeout", agent="hung", execution="running"),
        WAIT,
    )
    assert hung["labels"]["severity"] == "high" and hung["receiver_path"] == "/page"
    assert "hung_end" not in traffic.marks
    traffic.hung_released.set()
    hung_delay = hung["received"] - (traffic.marks["hung_start"] + TIMEOUT_S)

    # The sick agents break once their bands were learned from healthy traffic.
    prom.wait_for(BANDS_READY, WAIT)
    traffic.broken.set()

    # The slow execution's end to the webhook.
    slow = webhook.wait_for(
        lambda alerts: _first(alerts, alertname="ClaudeExecutionTimeout", agent="slow", execution="finished"),
        WAIT,
    )
    assert slow["labels"]["severity"] == "high" and slow["receiver_path"] == "/page"
    assert slow["labels"]["task"] == "plan"
    slow_delay = slow["received"] - traffic.marks["slow_end"]
    assert slow_delay > 0

    # The spike, ticketed (severity medium).
    spike = webhook.wait_for(lambda alerts: _first(alerts, alertname="ClaudeTokenSpike", agent="spiky"), WAIT)
    assert spike["labels"]["severity"] == "medium" and spike["receiver_path"] == "/ticket"
    spike_delay = spike["received"] - traffic.marks["spike"]

    # The latency drift, ticketed: 4x the API's latency against a 200 % threshold.
    drift = webhook.wait_for(
        lambda alerts: _first(alerts, alertname="ClaudeLatencyDrift", agent="drifting"), WAIT
    )
    assert drift["labels"]["severity"] == "medium" and drift["receiver_path"] == "/ticket"
    drift_delay = drift["received"] - traffic.marks["drift"]

    # The spend limit pages on its first failure, and ClaudeRateLimited stays quiet about it.
    spent = webhook.wait_for(
        lambda alerts: _first(alerts, alertname="ClaudeSpendLimitReached", agent="spent"), WAIT
    )
    assert spent["labels"]["severity"] == "high" and spent["receiver_path"] == "/page"
    assert spent["labels"]["error_code"] == "enforced_spend_limit_reached"
    spent_delay = spent["received"] - traffic.marks["spent"]
    assert prom.query('agent:claude_rate_limited:rate5m{agent="spent"} > 0') == []
    assert prom.query('sum(claude_rate_limited_total{agent="spent"}) > 5')  # many 429s, none counted there

    # The broken cache prefix, ticketed, with the API's diagnosis beside it.
    cache = webhook.wait_for(
        lambda alerts: _first(alerts, alertname="ClaudeCacheHitRatioDrop", agent="cached"), WAIT
    )
    assert cache["labels"]["severity"] == "medium" and cache["receiver_path"] == "/ticket"
    cache_delay = cache["received"] - traffic.marks["cache_break"]
    assert prom.query('claude_cache_misses_total{agent="cached", reason="system_changed"} > 0')

    # Never ClaudeRateLimited for the spend limit, nor anything for the healthy agent.
    assert not [a for a in webhook.alerts("ClaudeRateLimited") if a["labels"].get("agent") == "spent"]
    assert prom.query('count_over_time(ALERTS{alertname="ClaudeRateLimited", agent="spent"}[10m])') == []
    # Nothing for the healthy agent: not at the webhook, and never even pending in Prometheus.
    assert not [a for a in webhook.alerts() if a["labels"].get("agent") == "healthy"]
    assert prom.query('count_over_time(ALERTS{agent="healthy"}[10m])') == []
    assert prom.query('agent:claude_execution_tokens:avg_rate5m{agent="healthy"} > 0')  # it did run
    # ... and it was judged all along: its execution-time band existed, so the quiet above is a verdict.
    assert prom.query('agent:claude_anomaly_signal:upper{agent="healthy", signal="execution_duration"}')
    print(
        f"\nslow execution end -> webhook: {slow_delay:.1f} s; hung execution past its {TIMEOUT_S:.0f} s "
        f"timeout -> webhook: {hung_delay:.1f} s (still running); token spike -> webhook: "
        f"{spike_delay:.1f} s; latency drift -> webhook: {drift_delay:.1f} s; "
        f"first spend-limit error -> webhook: {spent_delay:.1f} s; "
        f"cache break -> webhook: {cache_delay:.1f} s"
    )
