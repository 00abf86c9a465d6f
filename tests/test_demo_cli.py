"""What a person sees of ``claude-exporter demo``: every link its banner prints opens on the Prometheus and
Alertmanager it started (the Debian binaries the Makefile installs), and stopping it says what it stops."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from lines import read_until

pytestmark = pytest.mark.system

PROMETHEUS, ALERTMANAGER = "/usr/bin/prometheus", "/usr/bin/prometheus-alertmanager"
URL = re.compile(r"https?://[^\s)]+")


@contextmanager
def demo(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """``claude-exporter demo --port 0`` with its temporary files under ``tmp_path``; killed if still up."""
    for binary in (PROMETHEUS, ALERTMANAGER):
        if not Path(binary).exists():
            pytest.fail(f"{binary} is missing: make debs installs it (the demo starts it)")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "claude_exporter", "demo", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "TMPDIR": str(tmp)},
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:  # a failed test: its Prometheus and Alertmanager must not outlive it
            kids = children(proc.pid)
            proc.kill()
            for pid in kids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s live child processes, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_every_link_the_demo_prints_answers_200(tmp_path):
    with demo(tmp_path) as proc:
        banner = read_until(proc, lambda line: line.startswith("Press Ctrl-C"))
        urls = [url for line in banner for url in URL.findall(line)]
        try:
            answers = {url: status_of(url) for url in urls}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=40)
    text = "".join(banner)
    assert any("/metrics" in url for url in urls), text
    assert any("alerts" in url and "/api/" not in url for url in urls), text  # Prometheus's alerts page
    assert len(urls) >= 4, text  # metrics, health, Prometheus, Alertmanager
    assert answers == dict.fromkeys(urls, 200)


def test_ctrl_c_says_what_it_stops_and_exits_130(tmp_path):
    with demo(tmp_path) as proc:
        banner = read_until(proc, lambda line: line.startswith("Press Ctrl-C"))
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=40)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    pids = dict(re.findall(r"(prometheus|alertmanager) \(pid (\d+)\)", out))
    steps = [
        "claude-exporter demo: stopping (Ctrl-C)",
        "stopping the 4 simulated agents and the fake API",
        f"stopping alertmanager (pid {pids.get('alertmanager')}), prometheus (pid {pids.get('prometheus')})",
        *(f"{name} (pid {pid}) stopped" for name, pid in pids.items()),
        "claude-exporter demo: stopped",
    ]
    assert set(pids) == {"prometheus", "alertmanager"}, out
    # Each step once, in the order it runs, the last line last.
    assert [line for line in lines if line in steps] == steps, "".join(banner) + out
    assert lines[-1] == "claude-exporter demo: stopped"
    assert any(line.startswith("stopping the exporter at http://127.0.0.1:") for line in lines), out
    assert proc.returncode == 130
