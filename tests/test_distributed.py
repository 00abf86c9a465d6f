"""The distributed path on real engines: three exporters, two Prometheus shards, one remote-write receiver.

    A1 (alpha) ─┐
    B1 (beta)  ─┴─ Prometheus shard="a" ─┐  remote write
    A2 (alpha) ─── Prometheus shard="b" ─┴──────────────── Prometheus receiver: the bundled rules
                                                             └─ Alertmanager ─ webhook

Three ``claude-exporter serve`` processes fed by ``POST /v1/events`` (exact, controlled counts), two of
them running the same agent. The shards evaluate no rules (alerts evaluated there would carry each
shard's external label and reach Alertmanager twice); the receiver evaluates the rules rendered by
``claude-exporter rules`` over both shards' data. Shown here:

(a) per-agent fleet figures at the receiver are exact sums over the agent's pods;
(b) an error rate spread over alpha's two pods fires although neither pod alone has the traffic the
    alert requires, and A2's restart (a counter reset) raises no token spike or latency drift, while a
    real spike afterwards does fire;
(c) the alert reaches Alertmanager once, although both shards saw alpha failing.

Windows are seconds, not minutes (the config below), so the whole run takes about forty seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from claude_exporter.config import load_config
from claude_exporter.rules import render_rules
from stack import Alertmanager, Prometheus, Webhook, free_port

pytestmark = pytest.mark.system

BIN = Path(sys.executable).parent
TICK = 0.5  # seconds between two events on each pod
WINDOW, BASELINE = 5.0, 10.0  # token spike and latency drift: recent window, baseline before it
ERROR_WINDOW, MIN_REQUESTS = 10.0, 25  # one pod sends at most 10 s / 0.5 s = 20 < 25; two send 40
CONFIG = f"""
monitoring:
  alpha: &agent
    alerts:
      - {{name: error_rate, threshold_percent: 5, window: {ERROR_WINDOW:g}s,
          min_requests: {MIN_REQUESTS}, for: 0s}}
      - {{name: token_spike, threshold_change_percent: 150, window: {WINDOW:g}s,
          baseline_window: {BASELINE:g}s, min_executions: 5, for: 0s}}
      - {{name: latency_drift, threshold_change_percent: 50, window: {WINDOW:g}s,
          baseline_window: {BASELINE:g}s, min_executions: 5, for: 0s}}
  beta: *agent
exporter:
  rules: {{evaluation_interval: 1s}}
  event_log: {{destination: file, path: events.log}}
"""


class Exporter:
    """``claude-exporter serve`` on a fixed loopback port, restartable on the same port (same instance)."""

    def __init__(self, name: str, config: Path, tmp: Path) -> None:
        self.name, self.config, self.tmp = name, config, tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0

    def start(self) -> None:
        self.generation += 1
        log = (self.tmp / f"{self.name}-{self.generation}.log").open("wb")
        env = {k: v for k, v in os.environ.items() if k != "CLAUDE_EXPORTER_TOKEN"}
        self.proc = subprocess.Popen(
            [str(BIN / "claude-exporter"), "serve", "--config", str(self.config), "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
            env=env,
        )
        log.close()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/-/healthy", timeout=1)
                return
            except OSError:
                assert self.proc is not None and self.proc.poll() is None, self.name + " exited"
                assert time.monotonic() < deadline, self.name + " not ready"
                time.sleep(0.1)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Traffic(threading.Thread):
    """Every TICK, one event per pod; counts what each pod (process generation) accepted."""

    def __init__(self, pods: dict[Exporter, str]) -> None:
        super().__init__(name="traffic", daemon=True)
        self.pods = pods
        self.tokens = 200  # input + output tokens of alpha's events
        self.accepted: Counter[tuple[str, int, str, str]] = Counter()  # (pod, generation, agent, what)
        self.stopped = threading.Event()
        self.n = 0

    def _event(self, agent: str) -> dict[str, Any]:
        tokens = self.tokens if agent == "alpha" else 200
        event: dict[str, Any] = {
            "event": "claude_execution_complete",
            "agent": agent,
            "model": "claude-sonnet-4-5",
            "duration_ms": 1000,
            "input_tokens": tokens // 2,
            "output_tokens": tokens - tokens // 2,
        }
        if agent == "alpha" and self.n % 4 == 0:  # a quarter of alpha's requests fail, on both pods
            event |= {"event": "claude_execution_error", "error_type": "InternalServerError"}
        return event

    def run(self) -> None:
        while not self.stopped.wait(TICK):
            self.n += 1
            for pod, agent in self.pods.items():
                event = self._event(agent)
                body = json.dumps(event).encode()
                try:
                    urllib.request.urlopen(
                        urllib.request.Request(pod.url + "/v1/events", data=body, method="POST"), timeout=2
                    )
                except OSError:
                    continue  # the pod is restarting: this event was never counted anywhere
                key = (pod.name, pod.generation, agent)
                self.accepted[(*key, "requests")] += 1
                self.accepted[(*key, "errors")] += event["event"] == "claude_execution_error"
                self.accepted[(*key, "tokens")] += event["input_tokens"] + event["output_tokens"]


def _shard(name: str, targets: list[Exporter], receiver: Prometheus) -> str:
    return yaml.safe_dump(
        {
            "global": {"scrape_interval": "1s", "external_labels": {"shard": name}},
            "scrape_configs": [
                {"job_name": "claude-exporter", "static_configs": [{"targets": [t.url[7:] for t in targets]}]}
            ],
            "remote_write": [
                {
                    "url": receiver.url + "/api/v1/write",
                    "queue_config": {"batch_send_deadline": "500ms", "max_shards": 1},
                    "metadata_config": {"send": False},
                }
            ],
        }
    )


def _receiver_config(alertmanager: Alertmanager) -> str:
    return yaml.safe_dump(
        {
            "global": {"evaluation_interval": "1s"},
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.url[7:]]}]}]},
        }
    )


def _alertmanager_config(webhook: Webhook) -> str:
    return yaml.safe_dump(
        {
            "route": {
                "receiver": "hook",
                "group_by": ["alertname", "agent"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "hook", "webhook_configs": [{"url": webhook.url + "/"}]}],
        }
    )


def _firing(prom: Prometheus, name: str) -> list[dict[str, Any]]:
    return [a for a in prom.alerts() if a["labels"]["alertname"] == name]


def _wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.25)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[dict[str, Any]]:
    config = tmp_path / "claude-exporter.yaml"
    config.write_text(CONFIG)
    rules = tmp_path / "claude-exporter.rules.yml"
    rules.write_text(render_rules(load_config(config)))
    pods = [Exporter(n, config, tmp_path) for n in ("a1", "a2", "b1")]
    with Webhook() as webhook, Alertmanager(_alertmanager_config(webhook), tmp=tmp_path / "am") as am:
        receiver = Prometheus(
            _receiver_config(am),
            [rules],
            tmp=tmp_path,
            name="receiver",
            extra_args=["--web.enable-remote-write-receiver"],
        )
        a1, a2, b1 = pods
        shard_a = Prometheus(_shard("a", [a1, b1], receiver), tmp=tmp_path, name="shard-a")
        shard_b = Prometheus(_shard("b", [a2], receiver), tmp=tmp_path, name="shard-b")
        try:
            for pod in pods:
                pod.start()
            for pod in pods:
                pod.wait_ready()
            with receiver, shard_a, shard_b:
                yield {"pods": pods, "receiver": receiver, "shards": (shard_a, shard_b), "webhook": webhook}
        finally:
            for pod in pods:
                pod.stop()


def test_remote_write_fleet_judges_agents_across_pods_and_shards(fleet: dict[str, Any]) -> None:
    a1, a2, b1 = fleet["pods"]
    receiver: Prometheus = fleet["receiver"]
    webhook: Webhook = fleet["webhook"]
    traffic = Traffic({a1: "alpha", a2: "alpha", b1: "beta"})
    traffic.start()
    try:
        # Both shards' samples arrive at the receiver, each with its external label.
        _wait("both shards at the receiver", lambda: len(receiver.query("count by (shard) (up)")) == 2, 60)

        # (b) alpha fails 25% on each pod, but one pod sends fewer requests than the alert needs. It fires
        # on the agent's traffic over both pods, both shards; beta, healthy, does not.
        (alert,) = _wait("ClaudeErrorRateHigh", lambda: _firing(receiver, "ClaudeErrorRateHigh"), 90)
        assert alert["state"] == "firing"
        assert alert["labels"]["agent"] == "alpha"
        assert not {"instance", "shard"} & set(alert["labels"])
        per_pod = receiver.query(
            f'sum by (instance) (rate(claude_requests_total{{agent="alpha"}}[{ERROR_WINDOW:g}s])) '
            f"* {ERROR_WINDOW:g}"
        )
        assert len(per_pod) == 2 and all(float(s["value"][1]) < MIN_REQUESTS for s in per_pod), per_pod
        seen = receiver.query('count by (shard) (claude_requests_total{agent="alpha"})')
        assert {s["metric"]["shard"] for s in seen} == {"a", "b"}  # both shards saw alpha

        # (b) A2 restarts (its counters start again from zero) once spike and drift can be judged.
        # The spike rule judges alpha once its recent value and its adaptive band both exist.
        signal = '{agent="alpha", signal="tokens_per_execution"}'
        judged = (
            f"agent:claude_anomaly_signal:rate{WINDOW:g}s{signal}"
            f" and on (job, agent, signal) agent:claude_anomaly_signal:upper{signal}"
        )
        _wait("spike and drift judged for alpha", lambda: receiver.query(judged), 120)
        a2.stop()
        a2.start()
        a2.wait_ready()
        quiet_until = time.monotonic() + WINDOW + BASELINE
        while time.monotonic() < quiet_until:
            for name in ("ClaudeTokenSpike", "ClaudeLatencyDrift"):
                assert not _firing(receiver, name), f"{name} after a restart: {_firing(receiver, name)}"
            time.sleep(0.25)
        resets = receiver.query(f'resets(claude_requests_total{{instance="{a2.url[7:]}"}}[30s]) > 0')
        assert resets, "A2's counters were not reset"
        assert receiver.query(judged), "the spike rule could not judge alpha across the restart"

        # A real spike on alpha (ten times the tokens) does fire: the quiet above was not blindness.
        traffic.tokens = 2000
        (spike,) = _wait("ClaudeTokenSpike", lambda: _firing(receiver, "ClaudeTokenSpike"), 90)
        assert spike["labels"]["agent"] == "alpha"
    finally:
        traffic.stopped.set()
        traffic.join()

    # (a) Exact per-agent figures: the counters of each agent's live processes, summed over pods and shards.
    def expected(agent: str, what: str) -> float:
        live = {p.name: p.generation for p in (a1, a2, b1)}
        return sum(
            n
            for (pod, gen, a, w), n in traffic.accepted.items()
            if a == agent and w == what and live[pod] == gen
        )

    def exact() -> bool:
        requests = receiver.query("sum by (agent) (claude_requests_total)")
        got = {s["metric"]["agent"]: float(s["value"][1]) for s in requests}
        return got == {"alpha": expected("alpha", "requests"), "beta": expected("beta", "requests")}

    _wait("exact request totals at the receiver", exact, 10)
    errors = receiver.query('sum by (agent) (claude_requests_total{outcome="error"})')
    assert {s["metric"]["agent"]: float(s["value"][1]) for s in errors} == {
        "alpha": expected("alpha", "errors"),
        "beta": 0,
    }
    tokens_total = receiver.query("sum by (agent) (claude_tokens_total)")
    assert {s["metric"]["agent"]: float(s["value"][1]) for s in tokens_total} == {
        "alpha": expected("alpha", "tokens"),
        "beta": expected("beta", "tokens"),
    }
    executions = receiver.query('sum by (agent) (claude_execution_tokens_count{type="input"})')
    assert {s["metric"]["agent"]: float(s["value"][1]) for s in executions} == {
        "alpha": expected("alpha", "requests"),
        "beta": expected("beta", "requests"),
    }

    # (c) Alertmanager got alpha's error-rate alert once: one alert, one fingerprint, no shard label.
    _wait("the alert at the webhook", lambda: webhook.alerts("ClaudeErrorRateHigh"), 10)
    received = webhook.alerts("ClaudeErrorRateHigh")
    assert {a["fingerprint"] for a in received} == {received[0]["fingerprint"]}
    assert received[0]["labels"]["agent"] == "alpha" and "shard" not in received[0]["labels"]
    assert not webhook.alerts("ClaudeLatencyDrift")
