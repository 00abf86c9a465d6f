"""The ``claude-exporter`` command as a user runs it: a real subprocess, real output, real exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from claude_exporter import __version__
from claude_exporter.config import load_config
from claude_exporter.rules import render_rules

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "tests" / "data" / "seed.yaml"


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "claude_exporter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def test_check_config_says_the_seed_file_is_valid() -> None:
    done = cli("check-config", str(SEED))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{SEED}: valid (1 agent(s): claude_code_executor)\n"


def test_check_config_prints_every_problem_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "monitoring:\n"
        "  claude_code_executor:\n"
        "    metrics: [execution_duration_ms, tokens_used_sideways]\n"
        "    alerts:\n"
        "      - name: execution_timeout\n"
        "        threshold_ms: soon\n"
        "    sampling_rate: 2\n"
    )
    done = cli("check-config", str(bad))
    assert done.returncode == 2  # a configuration that cannot be used, as for every command
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == f"claude-exporter check-config: {bad}: 3 problems in the configuration:"
    assert any(line.startswith("  monitoring.claude_code_executor.metrics[1]:") for line in lines)
    path = "monitoring.claude_code_executor.alerts[0].threshold_ms"
    assert f'  {path}: must be a number from 1 to 86400000, got "soon"' in lines
    assert any(line.startswith("  monitoring.claude_code_executor.sampling_rate:") for line in lines)


def test_rules_prints_what_the_generator_renders(tmp_path: Path) -> None:
    done = cli("rules", "--config", str(SEED))
    assert done.returncode == 0, done.stderr
    assert done.stdout == render_rules(load_config(SEED))
    out = tmp_path / "rules.yml"
    assert cli("rules", "--config", str(SEED), "-o", str(out)).returncode == 0
    assert out.read_text() == done.stdout


def test_rules_link_the_runbook_given(tmp_path: Path) -> None:
    url = "https://wiki.example.internal/claude/RUNBOOK.md"
    done = cli("rules", "--config", str(SEED), "--runbook-url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == render_rules(load_config(SEED), runbook_url=url)
    assert f"runbook_url: {url}#" in done.stdout


def test_version() -> None:
    done = cli("--version")
    assert done.stdout.strip() == f"claude-exporter {__version__}"


def test_demo_exports_a_fleet_of_agents() -> None:
    """``make demo`` in short: real SDK calls from four agents, scraped from the port it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "claude_exporter", "demo", "--port", "0", "--duration", "12"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + 90  # bounds a failing run only
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            found = re.search(r"metrics:\s+(http://\S+)/metrics", line)
            url = found.group(1) if found else None
        assert url is not None, "the demo never printed its metrics address"
        # Keep reading what it prints: a full pipe would block the demo's next write, and so its exit.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        agents: set[str] = set()
        while len(agents) < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
                text = response.read().decode()
            served = r'claude_requests_total\{agent="([^"]+)"[^}]*outcome="success"\} [1-9]'
            agents = set(re.findall(served, text))
        assert agents >= {"support-bot", "code-runner", "research-agent", "batch-summariser"}
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
