"""A local Prometheus and Alertmanager for the demo, on loopback, with the demo's rules.

The Debian binaries, the rules rendered from the demo's configuration, and a webhook receiver that prints
each alert as it arrives."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from claude_exporter.config import Config
from claude_exporter.rules import render_rules

__all__ = ["LocalStack", "binaries_present"]

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"  # the Debian name of the alertmanager binary
# Where Prometheus shows its alerts, newest UI first: 2.x upstream and 3.x serve /alerts; Debian's 2.42
# ships only the classic UI, at /classic/alerts (its /alerts is a 404). The first that answers is printed.
ALERTS_PAGES = ("/alerts", "/classic/alerts")
# Debian's Alertmanager has no web UI (its / is a page saying so); the API answers on every build.
ALERTMANAGER_PAGE = "/api/v2/alerts"
# util-linux's setpriv sets the children's parent-death signal (PR_SET_PDEATHSIG) before it executes them:
# Popen's preexec_fn could too, but is not safe in a process with threads, as the demo is.
_SETPRIV = shutil.which("setpriv")


def binaries_present() -> bool:
    return shutil.which(PROMETHEUS) is not None and shutil.which(ALERTMANAGER) is not None


def _port(preferred: int) -> int:
    """``preferred`` when it is free on loopback, else any free port."""
    for candidate in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


class _Webhook(BaseHTTPRequestHandler):
    on_alert: Callable[[dict[str, Any]], None]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.end_headers()
        for alert in json.loads(body or b"{}").get("alerts", []):
            self.on_alert(alert)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the alerts themselves are printed."""


def _first_answering(base: str, paths: tuple[str, ...]) -> str:
    """``base + path`` for the first of ``paths`` that answers 200 (redirects followed), else ``base``."""
    for path in paths:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as response:
                if response.status == 200:
                    return base + path
        except OSError:  # HTTPError (the 404) and connection errors alike: try the next
            continue
    return base


class LocalStack:
    """Prometheus scraping ``target`` with the config's rules, Alertmanager routing to a printing webhook."""

    def __init__(
        self,
        config: Config,
        target: str,
        workdir: Path,
        on_alert: Callable[[dict[str, Any]], None],
        *,
        spawning: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
    ):
        """``spawning``: a context in which each child is started and recorded, for a caller whose signal
        handlers raise (the demo's defer a signal over it, so no child is started without being recorded
        for :meth:`stop`)."""
        self.config = config
        self._spawning = spawning
        self.target = target
        self.workdir = workdir
        self.on_alert = on_alert
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._webhook: ThreadingHTTPServer | None = None
        self.prometheus_url = ""
        self.alertmanager_url = ""
        self.alerts_page = ""
        """The URL of Prometheus's alerts page, as the running Prometheus serves it (see ALERTS_PAGES)."""

    def start(self) -> LocalStack:
        handler = type("Webhook", (_Webhook,), {"on_alert": staticmethod(self.on_alert)})
        self._webhook = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._webhook.serve_forever, name="demo-webhook", daemon=True).start()
        hook = f"http://127.0.0.1:{self._webhook.server_address[1]}/"
        am_port, prom_port = _port(9093), _port(9090)
        interval = self.config.rules_evaluation_interval
        (self.workdir / "rules.yml").write_text(render_rules(self.config))
        (self.workdir / "alertmanager.yml").write_text(
            "route: {receiver: print, group_by: [alertname, agent], group_wait: 1s, group_interval: 5s,"
            " repeat_interval: 1h}\n"
            f"receivers: [{{name: print, webhook_configs: [{{url: '{hook}', send_resolved: true}}]}}]\n"
        )
        (self.workdir / "prometheus.yml").write_text(
            f"global: {{scrape_interval: {interval}, evaluation_interval: {interval}}}\n"
            "rule_files: [rules.yml]\n"
            f"alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]}}\n"
            f"scrape_configs: [{{job_name: {self.config.rules_job},"
            f" static_configs: [{{targets: ['{self.target}']}}]}}]\n"
        )
        self._spawn(
            "alertmanager",
            [ALERTMANAGER, "--config.file=alertmanager.yml", "--storage.path=am-data",
             f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
            "alertmanager.log",
        )  # fmt: skip
        self._spawn("prometheus", self.prometheus_argv(prom_port), "prometheus.log")
        self.alertmanager_url = f"http://127.0.0.1:{am_port}"
        self.prometheus_url = f"http://127.0.0.1:{prom_port}"
        for url in (self.alertmanager_url, self.prometheus_url):
            self._wait_ready(url)
        self.alerts_page = _first_answering(self.prometheus_url, ALERTS_PAGES)
        return self

    def links(self) -> dict[str, str]:
        """What the demo prints for people to open: {what: URL}, each answering 200 once started."""
        return {
            "prometheus": self.alerts_page,
            "alertmanager": self.alertmanager_url + ALERTMANAGER_PAGE,
        }

    def pids(self) -> dict[str, int]:
        """{name: pid} of the processes started (prometheus, alertmanager)."""
        return {name: proc.pid for name, proc in self._procs}

    def prometheus_argv(self, port: int) -> list[str]:
        """The Prometheus command line; its retention is the configuration's ``retention_days``."""
        return [
            PROMETHEUS,
            "--config.file=prometheus.yml",
            "--storage.tsdb.path=prom-data",
            f"--storage.tsdb.retention.time={self.config.retention_days}d",
            f"--web.listen-address=127.0.0.1:{port}",
        ]

    def _spawn(self, name: str, argv: list[str], log: str) -> None:
        # Each child leads a session of its own: the terminal's Ctrl-C and hang-up reach the demo alone,
        # which stops the children in order, and stop() signals a child's whole group. A child started
        # from the main thread also gets SIGTERM if the demo dies without a cleanup (SIGKILL): the kernel
        # sends it when the thread that started the child ends, which for the main thread is the process.
        if _SETPRIV is not None and threading.current_thread() is threading.main_thread():
            argv = [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]
        with open(self.workdir / log, "wb") as out, self._spawning():
            proc = subprocess.Popen(
                argv, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            self._procs.append((name, proc))

    def _wait_ready(self, url: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{url} did not become ready; see the logs in {self.workdir}")

    def stop(self, say: Callable[[str], None] = lambda line: None) -> None:
        """Terminate every process at once (so their shutdowns overlap), then wait for each, calling
        ``say`` with what happens; one that ignores SIGTERM for 10 s is killed. Each signal goes to the
        child's process group, so anything it started goes with it."""
        for _, proc in self._procs:
            _signal_group(proc, signal.SIGTERM)
        for name, proc in self._procs:
            try:
                proc.wait(timeout=10)
                say(f"{name} (pid {proc.pid}) stopped")
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
                say(f"{name} (pid {proc.pid}) killed: it ignored SIGTERM for 10 s")
            _signal_group(proc, signal.SIGKILL)  # what the child left of its group, if anything
        if self._webhook is not None:
            self._webhook.shutdown()
            self._webhook.server_close()


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    # The group outlives its leader while a member lives, and its id is not reused meanwhile: once the
    # group is empty, ProcessLookupError says there is nothing left to signal.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)
