"""deploy/compose/, validated offline (`make test-stack`, tests/test_stack_compose.py, runs it in a real
engine): the compose file against the compose-spec schema, every path it mounts or builds from exists,
the Dockerfile is pinned and non-root, the Prometheus and Alertmanager configs pass promtool and amtool,
and the very Prometheus configuration and command line of the stack, hosts rewritten to loopback, scrapes
a running demo and loads the rules that the `rules` service renders.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from stack import Prometheus, free_port, require_binary

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
BIN = Path(sys.executable).parent


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _env() -> dict[str, str]:
    """deploy/compose/.env, which Compose reads for ${...} interpolation."""
    out = {}
    for line in (COMPOSE_DIR / ".env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:-default}`` and ``${VAR}``, enough for this file."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


@pytest.mark.system
def test_compose_file_passes_the_compose_spec_schema() -> None:
    checker = BIN / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.system
def test_compose_schema_check_can_fail(tmp_path: Path) -> None:
    bad = _compose()
    bad["services"]["prometheus"]["restart"] = {"policy": "always"}  # must be a string
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(bad))
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0


@pytest.mark.unit
def test_every_mounted_and_built_path_exists() -> None:
    compose = _compose()
    named = set(compose["volumes"])
    binds = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = _interpolate(volume, {}).split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
                binds += 1
            else:
                assert source in named, f"{name}: volume {source} is not declared"
        build = service.get("build")
        if build:
            context = COMPOSE_DIR / build["context"]
            assert (context / build["dockerfile"]).is_file()
            # Everything the Dockerfile copies from the context is there.
            for line in (context / build["dockerfile"]).read_text().splitlines():
                if line.startswith("COPY") and "--from" not in line:
                    for src in line.split()[1:-1]:
                        assert (context / src).exists(), f"COPY {src}: missing"
    assert binds >= 8


@pytest.mark.unit
def test_dockerfile_is_slim_pinned_and_non_root() -> None:
    text = (COMPOSE_DIR / "Dockerfile").read_text()
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert re.search(r"^USER 10001:10001$", text, re.M)  # the uid the Kubernetes Deployment runs as
    deployment = yaml.safe_load((ROOT / "deploy/kubernetes/deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    # Images of the other services are pinned to a version, never "latest".
    for name, service in _compose()["services"].items():
        image = _interpolate(service.get("image", ""), {})  # the default when no registry is set
        assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name}: {image}"


@pytest.mark.unit
def test_prometheus_retention_is_the_configs_retention_days() -> None:
    from claude_exporter.config import load_config

    config = load_config(COMPOSE_DIR / "claude-exporter.yaml")
    days = max(a.retention_days for a in config.agents.values())
    command = _interpolate(" ".join(_compose()["services"]["prometheus"]["command"]), _env())
    assert f"--storage.tsdb.retention.time={days}d" in command


@pytest.mark.system
def test_alertmanager_config_passes_amtool() -> None:
    mounted = next(v for v in _compose()["services"]["alertmanager"]["volumes"] if v.startswith("."))
    path = COMPOSE_DIR / mounted.split(":")[0]
    result = subprocess.run(
        [require_binary("amtool"), "check-config", str(path)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _render_rules(tmp: Path) -> Path:
    """What the `rules` service does, run here: the same command line and configuration."""
    command = _compose()["services"]["rules"]["command"]
    out = tmp / "rules" / Path(command[command.index("-o") + 1]).name
    out.parent.mkdir()
    args = [a for a in command[: command.index("-o")]]
    args[args.index("--config") + 1] = str(COMPOSE_DIR / "claude-exporter.yaml")
    subprocess.run(
        [str(BIN / "claude-exporter"), *args, "-o", str(out)], check=True, capture_output=True, timeout=60
    )
    return out


def _loopback_config(rules: Path, targets: dict[str, str]) -> str:
    """The stack's prometheus.yml with service hosts rewritten to loopback and the rules' real path."""
    text = (COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text()
    for service, address in targets.items():
        text = text.replace(service, address)
    config = yaml.safe_load(text)
    assert config["rule_files"] == ["/etc/prometheus/rules/*.rules.yml"]
    config["rule_files"] = [str(rules.parent / "*.rules.yml")]
    return yaml.safe_dump(config, sort_keys=False)


@pytest.mark.system
def test_prometheus_config_and_rendered_rules_pass_promtool(tmp_path: Path) -> None:
    rules = _render_rules(tmp_path)
    path = tmp_path / "prometheus.yml"
    path.write_text(_loopback_config(rules, {"alertmanager:9093": "127.0.0.1:9093"}))
    result = subprocess.run(
        [require_binary("promtool"), "check", "config", str(path)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and rules.name in result.stdout


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[int]:
    """`claude-exporter demo` with the stack's configuration, on a free loopback port."""
    port = free_port()
    log = (tmp_path / "demo.log").open("wb")
    # PATH without /usr/bin: with Prometheus installed the demo would start its own, and here the stack's
    # Prometheus is the one under test.
    proc = subprocess.Popen(
        [
            str(BIN / "claude-exporter"),
            *("demo", "--port", str(port), "--addr", "127.0.0.1"),
            *("--config", str(COMPOSE_DIR / "claude-exporter.yaml")),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PATH": str(BIN)},
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthy", timeout=1)
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "demo.log").read_text()
                assert time.monotonic() < deadline, "demo did not start"
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.system
def test_stack_prometheus_scrapes_a_running_demo(tmp_path: Path, demo: int) -> None:
    rules = _render_rules(tmp_path)
    text = _loopback_config(
        rules, {"exporter:9466": f"127.0.0.1:{demo}", "alertmanager:9093": f"127.0.0.1:{free_port()}"}
    )
    # The stack's Prometheus command line, minus what the test harness sets itself (paths and address).
    flags = _interpolate(" ".join(_compose()["services"]["prometheus"]["command"]), _env()).split()
    own = ("--config.file", "--storage.tsdb.path", "--web.enable-lifecycle")
    extra = [f for f in flags if not f.startswith(own)]
    assert extra == ["--storage.tsdb.retention.time=30d"]
    config = yaml.safe_load(text)
    config["global"]["scrape_interval"] = "1s"  # seconds, not the stack's 15 s, to keep the test short
    with Prometheus(yaml.safe_dump(config), tmp=tmp_path / "prom", extra_args=extra) as prom:
        (up,) = prom.wait_for('up{job="claude-exporter"} == 1', timeout=20)
        assert up["metric"]["instance"] == f"127.0.0.1:{demo}"
        assert prom.wait_for('sum(claude_requests_total{job="claude-exporter"}) > 0', timeout=20)
        groups = prom.api("rules")["groups"]
        rendered = yaml.safe_load(rules.read_text())["groups"]
        assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in rendered)
        assert all(g["file"] == str(rules) for g in groups)
        flags_seen = prom.api("status/flags")
        assert flags_seen["storage.tsdb.retention.time"] == "30d"


@pytest.mark.unit
def test_compose_v1_and_v2_read_the_file() -> None:
    compose = _compose()
    # Compose v1 (docker-compose 1.29, Debian's) refuses a top-level `name:`; .env names the project.
    assert set(compose) <= {"services", "volumes", "networks", "x-exporter-image"}
    assert _env()["COMPOSE_PROJECT_NAME"] == "claude-exporter"
    # Grafana cannot run where no image registry is reachable: the stack runs without it unless asked.
    assert compose["services"]["grafana"]["profiles"] == ["grafana"]
    assert not any("profiles" in s for n, s in compose["services"].items() if n != "grafana")


@pytest.mark.unit
def test_every_port_is_published_on_loopback_only() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert _interpolate(port, {}).startswith("127.0.0.1:"), f"{name}: {port}"


@pytest.mark.unit
def test_alertmanager_delivers_to_a_service_not_to_its_own_loopback() -> None:
    compose = _compose()
    config = yaml.safe_load((ROOT / "deploy/alertmanager.yml").read_text())
    urls = [w["url"] for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert urls
    for url in urls:
        host = urllib.parse.urlsplit(url).hostname
        assert host in compose["services"], url  # inside a container 127.0.0.1 is the container itself
    receiver = compose["services"]["alert-receiver"]
    script = next(v for v in receiver["volumes"] if v.startswith("./alert-receiver.py:"))
    assert script.split(":")[1] in receiver["entrypoint"]


@pytest.mark.unit
def test_legacy_builders_ignore_what_buildkit_ignores() -> None:
    # BuildKit reads Dockerfile.dockerignore; compose v1 and the legacy builder read only the context's
    # .dockerignore, and without it would send the whole checkout (venvs, node_modules) as the context.
    assert (ROOT / ".dockerignore").read_text() == (COMPOSE_DIR / "Dockerfile.dockerignore").read_text()
