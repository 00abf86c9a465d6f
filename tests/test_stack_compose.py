"""The Compose stack for real (`make test-stack`): images built here, the stack brought up with the compose
this machine has (docker-compose v1 on Debian; `docker compose` v2 where that is what is installed).

Two projects run side by side from deploy/compose/ exactly as users run it, host ports moved to free ones:

- ``serve``: the standalone exporter. Its target is up, every rule rendered from the stack's configuration
  is loaded, an execution posted to ``/v1/events`` that ran past the timeout fires ClaudeExecutionTimeout,
  Alertmanager routes it to ``page`` and delivers it to the stack's ``alert-receiver``; a restart of the
  exporter container is seen by Prometheus as a counter reset, not a spike.
- ``demo``: ``CLAUDE_EXPORTER_COMMAND=demo`` with ``claude-exporter.demo.yaml``: the simulated fleet drives
  the real, instrumented SDK inside the container, and its alerts reach the receiver too.

``down -v`` then leaves no container, volume or network behind. The engine is the one that answers, else a
dockerd this module starts and stops (tools/stack/engine.py). Not part of `make test`: marked ``stack``.
A machine where docker cannot run fails these tests; it never skips them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from claude_exporter.config import load_config
from claude_exporter.rules import render_rules
from conftest import repo_tool
from stack import free_port
from test_deploy_kubernetes import disagreements, render_manifests

pytestmark = [pytest.mark.system, pytest.mark.stack]

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "deploy" / "compose"
PORTS = (
    "CLAUDE_EXPORTER_PORT",
    "PROMETHEUS_PORT",
    "ALERTMANAGER_PORT",
    "ALERT_RECEIVER_PORT",
    "GRAFANA_PORT",
)
# Bounds for a warm machine under other work: the stack's own intervals (scrape 15 s, rule evaluation
# 30 s, Alertmanager group_wait 30 s) are kept, so an alert takes up to about 80 s to arrive (52 to 68 s
# seen). Every wait is bounded, and the demo's runs alongside the others', so a warm run stays under 8 min.
ALERT_TIMEOUT = 120.0
DEMO_ALERT_TIMEOUT = 300.0  # from the demo's start: its fleet degrades over its first minutes (100 to 217 s)


engine_tool = repo_tool("tools/stack/engine.py")


def compose_command() -> list[str]:
    """The compose this machine has: docker-compose (v1), else the docker CLI's compose plugin (v2)."""
    v1 = shutil.which("docker-compose")
    if v1:
        return [v1]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0
    ):
        return [docker, "compose"]
    pytest.fail("no compose: install docker-compose (make stack-debs)", pytrace=False)


def _http(url: str, data: bytes | None = None, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def _wait(what: str, probe: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    """Calls ``probe`` until it returns something truthy; fails naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except (OSError, ValueError, urllib.error.URLError) as err:
            last = err
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f} s (last: {str(last)[:2000]})", pytrace=False)
        time.sleep(every)


@dataclass
class Stack:
    """One Compose project from deploy/compose/, its host ports on free loopback ports."""

    eng: Any
    project: str
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    started: float = 0.0

    def __post_init__(self) -> None:
        self.ports = {name: free_port() for name in PORTS}

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        ports = {k: str(v) for k, v in self.ports.items()}
        env = {**self.eng.env, **self.eng.images, **self.env, **ports}
        done = subprocess.run(
            [*compose_command(), "--project-name", self.project, *args],
            cwd=COMPOSE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"compose {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
            )
        return done

    def url(self, port: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    def prom(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        body = _http(f"{self.url('PROMETHEUS_PORT')}/api/v1/{path}" + (f"?{query}" if query else ""))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.prom("query", query=expr)["result"])

    def received(self) -> list[dict[str, Any]]:
        """Every alert the stack's alert-receiver got, each with the path Alertmanager posted it to."""
        payloads = _http(self.url("ALERT_RECEIVER_PORT") + "/alerts")
        return [{**alert, "path": p["path"]} for p in payloads for alert in p.get("alerts", [])]

    def container(self, service: str) -> dict[str, Any]:
        (cid,) = self.compose("ps", "-q", service).stdout.split()
        return dict(json.loads(self.eng.docker("inspect", cid).stdout)[0])

    def services(self) -> dict[str, str]:
        """The project's containers as the engine sees them: ``{service: state}``."""
        out = self.eng.docker(
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--format",
            '{{.Label "com.docker.compose.service"}} {{.State}}',
        ).stdout
        return dict(line.split() for line in out.splitlines())

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        return {
            kind: self.eng.docker(*cmd, "--filter", label).stdout.split()
            for kind, cmd in (
                ("containers", ("ps", "-a", "-q")),
                ("volumes", ("volume", "ls", "-q")),
                ("networks", ("network", "ls", "-q")),
            )
        }

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", check=False).stdout[-6000:]


@pytest.fixture(scope="module")
def eng(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The engine (started here when none answers, stopped at the end) with every image built."""
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    try:
        with engine_tool.engine(log=log) as engine:
            engine.images = engine_tool.build_images(engine)  # the Compose variables that select them
            yield engine
    except RuntimeError as err:
        pytest.fail(f"docker cannot run here: {err}", pytrace=False)


def _remove_projects_left_by_killed_runs(eng: Any) -> None:
    # `restart: unless-stopped` brings them back with the daemon, holding their ports and memory.
    out = eng.docker("ps", "-a", "--format", '{{.Label "com.docker.compose.project"}}').stdout
    for project in sorted({p for p in out.split() if p.startswith("cestack-")}):
        Stack(eng, project).compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False)


@pytest.fixture(scope="module")
def stacks(eng: Any) -> Iterator[dict[str, Stack]]:
    """Both projects up (no build: the images are the ones just built); down -v at the end in any case."""
    tag = f"{os.getpid()}"
    serve = Stack(eng, f"cestack-serve-{tag}")
    demo = Stack(
        eng,
        f"cestack-demo-{tag}",
        env={"CLAUDE_EXPORTER_COMMAND": "demo", "CLAUDE_EXPORTER_CONFIG": "./claude-exporter.demo.yaml"},
    )
    both = {"serve": serve, "demo": demo}
    _remove_projects_left_by_killed_runs(eng)
    try:
        for name, stack in both.items():
            with engine_tool.timed(f"stack up ({name})"):
                stack.compose("up", "-d", "--no-build")
                stack.started = time.monotonic()
        yield both
    finally:
        for stack in both.values():
            stack.compose("down", "-v", "--remove-orphans", "--timeout", "10", check=False)


def test_compose_reads_the_file_and_grafana_waits_for_its_profile(stacks: dict[str, Stack]) -> None:
    stack = stacks["serve"]
    config = yaml.safe_load(stack.compose("config").stdout)
    assert config["services"]["grafana"]["profiles"] == ["grafana"]
    services = {"exporter", "rules", "prometheus", "alertmanager", "alert-receiver"}
    assert set(config["services"]) == {*services, "grafana"}
    # Started without the profile: everything but Grafana (which cannot run here: no image reachable).
    assert set(stack.services()) == services, stack.logs()
    running = {name for name, state in stack.services().items() if state == "running"}
    assert running == services - {"rules"}, stack.logs()  # rules ran once and exited
    assert stack.services()["rules"] == "exited"


def test_exporter_runs_non_root_read_only_and_healthy(eng: Any, stacks: dict[str, Stack]) -> None:
    image = json.loads(eng.docker("image", "inspect", engine_tool.EXPORTER_IMAGE).stdout)[0]["Config"]
    assert image["User"] == "10001:10001"
    assert image["ExposedPorts"] == {"9466/tcp": {}}
    assert "/-/healthy" in " ".join(image["Healthcheck"]["Test"])
    # The image built here is the one deploy/kubernetes/ runs: port, user, read-only root, probes, token.
    assert disagreements(image, render_manifests()) == []
    stack = stacks["serve"]
    container = stack.container("exporter")
    assert container["Config"]["User"] == "10001:10001"
    assert container["HostConfig"]["ReadonlyRootfs"] is True
    assert container["HostConfig"]["CapDrop"] == ["ALL"]
    bindings = container["HostConfig"]["PortBindings"]["9466/tcp"]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(stack.ports["CLAUDE_EXPORTER_PORT"])}]

    def healthy() -> bool:
        return stack.container("exporter")["State"]["Health"]["Status"] == "healthy"

    _wait("exporter container healthy", healthy, timeout=60)
    sizes = {tag: f"{size / 1e6:.0f} MB" for tag, size in engine_tool.image_sizes(eng).items()}
    print(f"stack: image sizes {sizes}", file=sys.stderr)


def _rendered(config: Path) -> dict[str, list[str]]:
    groups = yaml.safe_load(render_rules(load_config(config)))["groups"]
    return {g["name"]: [r.get("alert") or r["record"] for r in g["rules"]] for g in groups}


@pytest.mark.parametrize(
    ("name", "config"), [("serve", "claude-exporter.yaml"), ("demo", "claude-exporter.demo.yaml")]
)
def test_target_is_up_and_every_rule_is_loaded(stacks: dict[str, Stack], name: str, config: str) -> None:
    stack = stacks[name]
    (up,) = _wait(
        "exporter target up", lambda: stack.query('up{job="claude-exporter"} == 1'), timeout=60, every=2
    )
    assert up["metric"]["instance"] == "exporter:9466"
    groups = stack.prom("rules")["groups"]
    loaded = {g["name"]: [r["name"] for r in g["rules"]] for g in groups}
    assert loaded == _rendered(COMPOSE_DIR / config)
    assert sum(map(len, loaded.values())) > 20
    bad = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
    assert not bad


def _firing(alerts: list[dict[str, Any]], name: str, **labels: str) -> list[dict[str, Any]]:
    return [
        a
        for a in alerts
        if a["status"] == "firing"
        and a["labels"].get("alertname") == name
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def _event(duration_ms: int, n: int) -> bytes:
    return json.dumps(
        {
            "event": "claude_execution_complete",
            "execution_id": f"stack-test-{n}",
            "duration_ms": duration_ms,
            "input_tokens": 1200,
            "output_tokens": 300,
            "stop_reason": "end_turn",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "agent": "claude_code_executor",
            "task": "nightly-build",
            "model": "claude-sonnet-5-5",
        }
    ).encode()


def test_a_slow_execution_pages_through_the_receiver_in_the_stack(stacks: dict[str, Stack]) -> None:
    stack = stacks["serve"]
    exporter = stack.url("CLAUDE_EXPORTER_PORT")
    for n in range(5):
        _http(exporter + "/v1/events", _event(1500, n))
    _http(exporter + "/v1/events", _event(45_000, 99))  # past the configuration's 30000 ms
    began = time.monotonic()
    (alert, *_) = _wait(
        "ClaudeExecutionTimeout at the alert-receiver",
        lambda: _firing(stack.received(), "ClaudeExecutionTimeout", agent="claude_code_executor"),
        timeout=ALERT_TIMEOUT,
        every=2,
    )
    print(f"stack: slow execution to the receiver: {time.monotonic() - began:.0f} s", file=sys.stderr)
    assert alert["path"] == "/page"  # severity high pages (deploy/alertmanager.yml)
    assert alert["labels"]["severity"] == "high" and alert["labels"]["task"] == "nightly-build"
    # The receiver's log line says it too, for a user watching `docker compose logs alert-receiver`.
    logged = stack.compose("logs", "--no-color", "alert-receiver").stdout
    assert '"alertname": "ClaudeExecutionTimeout"' in logged


def test_a_restart_of_the_exporter_is_a_reset_not_a_spike(stacks: dict[str, Stack]) -> None:
    stack = stacks["serve"]
    exporter = stack.url("CLAUDE_EXPORTER_PORT")
    total = 'sum(claude_executions_total{job="claude-exporter"})'
    (before,) = _wait("executions scraped", lambda: stack.query(f"{total} >= 6"), timeout=60, every=2)
    counted = float(before["value"][1])
    started = 'process_start_time_seconds{job="claude-exporter"}'
    (first,) = stack.query(started)
    stack.compose("restart", "exporter")
    _wait(
        "exporter back", lambda: urllib.request.urlopen(exporter + "/-/healthy", timeout=2).status == 200, 30
    )
    for n in range(3):
        _http(exporter + "/v1/events", _event(1500, 100 + n))
    # The restarted process is scraped: a new start time, and the counter from zero plus the 3 new ones.
    _wait(
        "the restarted exporter scraped",
        lambda: stack.query(f"{started} > {first['value'][1]}") and stack.query(f"{total} == 3"),
        timeout=60,
        every=2,
    )
    (resets,) = stack.query('sum(resets(claude_executions_total{job="claude-exporter"}[10m]))')
    assert float(resets["value"][1]) >= 1
    # increase() across the restart counts the 3 executions after it although the counter is lower than
    # before (a reset, not a drop), and never more than ever happened (give or take its extrapolation).
    (increase,) = stack.query('sum(increase(claude_executions_total{job="claude-exporter"}[10m]))')
    assert 3 <= float(increase["value"][1]) <= 2 * (counted + 3)
    # Nor does any minute hold more than ever happened (increase() extrapolates a little past its samples).
    (peak,) = stack.query(
        'max_over_time(sum(increase(claude_executions_total{job="claude-exporter"}[1m]))[10m:5s])'
    )
    assert float(peak["value"][1]) <= 2 * (counted + 3)
    firing = {a["labels"]["alertname"] for a in stack.prom("alerts")["alerts"] if a["state"] == "firing"}
    assert firing <= {"ClaudeExecutionTimeout"}, firing


DEMO_ALERTS = {
    # alert: (agent, receiver path); the demo fleet's agents as cli/demo.py describes them
    "ClaudeRateLimited": ("batch-summariser", "/ticket"),
    "ClaudeErrorRateHigh": ("batch-summariser", "/page"),
    "ClaudeExecutionTimeout": ("code-runner", "/page"),
}


def test_the_demo_fleets_sdk_traffic_fires_its_alerts_at_the_receiver(stacks: dict[str, Stack]) -> None:
    stack = stacks["demo"]
    # Real SDK requests, instrumented, from every agent of the fleet inside the container.
    agents = _wait(
        "the fleet's requests scraped",
        lambda: (
            {
                r["metric"]["agent"]
                for r in stack.query('sum by (agent) (claude_requests_total{job="claude-exporter"}) > 0')
            }
            >= {"support-bot", "code-runner", "research-agent", "batch-summariser"}
        ),
        timeout=90,
        every=2,
    )
    assert agents
    remaining = DEMO_ALERT_TIMEOUT - (time.monotonic() - stack.started)

    seen: dict[str, float] = {}

    def arrived() -> dict[str, dict[str, Any]]:
        alerts = stack.received()
        found = {name: _firing(alerts, name, agent=agent) for name, (agent, _) in DEMO_ALERTS.items()}
        for name, hits in found.items():
            if hits and name not in seen:
                seen[name] = time.monotonic() - stack.started
        return {name: hits[0] for name, hits in found.items() if hits} if all(found.values()) else {}

    found = _wait("the demo's alerts at the alert-receiver", arrived, timeout=max(remaining, 30), every=3)
    when = ", ".join(f"{name} {t:.0f} s" for name, t in sorted(seen.items(), key=lambda kv: kv[1]))
    print(f"stack: demo alerts at the receiver after up: {when}", file=sys.stderr)
    for name, (_, path) in DEMO_ALERTS.items():
        assert found[name]["path"] == path, (name, found[name])


def test_down_leaves_nothing_running(eng: Any, stacks: dict[str, Stack]) -> None:
    for stack in stacks.values():
        with engine_tool.timed(f"stack down -v ({stack.project})"):
            stack.compose("down", "-v", "--remove-orphans", "--timeout", "10")
        assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
        for port in stack.ports.values():
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
