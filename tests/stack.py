"""A real Prometheus, Alertmanager and webhook receiver on loopback, for end-to-end tests.

Usage::

    with Prometheus(config_text, rule_files=[rules], tmp=tmp_path) as prom:
        prom.wait_for('up{job="claude-exporter"} == 1', timeout=10)

Every process is stopped on exit (terminate, wait, kill). A missing binary fails the test rather than
skipping it: a skipped end-to-end test looks like a passing one in CI.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest
import yaml

__all__ = ["Alertmanager", "Prometheus", "Webhook", "free_port", "require_binary"]

READY_TIMEOUT = 60.0  # bounds a failing start only (a loaded machine starts slowly)
_P = TypeVar("_P", bound="_Process")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_binary(name: str) -> str:
    """The path of ``name`` (a command or an absolute path); fails the test when it is missing."""
    path = name if Path(name).is_absolute() and Path(name).exists() else shutil.which(name)
    if not path:
        pytest.fail(f"{name} is not installed (make debs installs it)", pytrace=False)
    return path


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


class _Process:
    """A server binary on 127.0.0.1, its output in a log file, stopped on exit."""

    binary = ""
    name = ""

    def __init__(self, tmp: Path) -> None:
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.tmp / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _args(self) -> list[str]:
        raise NotImplementedError

    def log(self) -> str:
        """The process's output so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        binary = require_binary(self.binary)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen([binary, *self._args()], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self._proc.returncode}:\n{self.log()}")
            try:
                _get(self.url + "/-/ready", timeout=1.0)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self: _P) -> _P:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Prometheus(_Process):
    """``/usr/bin/prometheus`` with ``config_text``; ``rule_files`` replace the config's ``rule_files``;
    ``extra_args`` are added to the command line (e.g. ``--web.enable-remote-write-receiver``)."""

    binary = "prometheus"
    name = "prometheus"

    def __init__(
        self,
        config_text: str,
        rule_files: Sequence[Path] = (),
        *,
        tmp: Path,
        extra_args: Sequence[str] = (),
        name: str = "prometheus",
    ) -> None:
        self.name = name  # also the log file's name, so several can share a tmp dir
        super().__init__(tmp)
        self.extra_args = list(extra_args)
        if rule_files:
            # Absolute paths: Prometheus resolves relative ones against the config file's directory.
            config = yaml.safe_load(config_text) or {}
            config["rule_files"] = [str(Path(p).resolve()) for p in rule_files]
            config_text = yaml.safe_dump(config, sort_keys=False)
        self.config_path = self.tmp / f"{name}.yml"
        self.config_path.write_text(config_text)

    def _args(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.tmp / (self.name + '-data')}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            *self.extra_args,
        ]

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; returns ``data`` or raises with the API's error text."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            body = json.loads(_get(url))
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (or a one-element list for a scalar)."""
        data = self.api("query", query=expr)
        result = data["result"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        return list(result)

    def wait_for(self, expr: str, timeout: float) -> list[dict[str, Any]]:
        """Polls ``expr`` until it returns something; raises TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr!r} still empty after {timeout} s")
            time.sleep(0.25)

    def targets_up(self) -> bool:
        """True when there is at least one active target and every one is up."""
        active = self.api("targets", state="active")["activeTargets"]
        return bool(active) and all(t.get("health") == "up" for t in active)

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus's own view of pending and firing alerts."""
        return list(self.api("alerts")["alerts"])

    def reload(self) -> None:
        """POST ``/-/reload`` (needs --web.enable-lifecycle, which is always on)."""
        urllib.request.urlopen(urllib.request.Request(self.url + "/-/reload", method="POST"), timeout=5)


class Alertmanager(_Process):
    """``/usr/bin/prometheus-alertmanager`` with ``config_text``, no cluster gossip."""

    binary = "prometheus-alertmanager"
    name = "alertmanager"

    def __init__(self, config_text: str, *, tmp: Path) -> None:
        super().__init__(tmp)
        self.config_path = self.tmp / "alertmanager.yml"
        self.config_path.write_text(config_text)

    def _args(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.path={self.tmp / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
        ]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (API v2)."""
        return list(json.loads(_get(self.url + "/api/v2/alerts")))


class Webhook:
    """An Alertmanager webhook receiver: every POSTed payload, with its receive time.

    ``payloads`` holds ``(time.monotonic(), payload)`` pairs; ``alerts(name)`` flattens them into alerts
    with a ``received`` key added.
    """

    def __init__(self) -> None:
        self.payloads: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received = time.monotonic()
                try:
                    payload = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    payload = {"invalid": True}
                payload["_path"] = self.path
                with owner._cond:
                    owner.payloads.append((received, payload))
                    owner._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    def __enter__(self) -> Webhook:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def alerts(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every alert received (optionally only ``alertname == name``), each with ``received`` added."""
        out = []
        with self._lock:
            for received, payload in self.payloads:
                for alert in payload.get("alerts", []):
                    if name is None or alert.get("labels", {}).get("alertname") == name:
                        out.append({**alert, "received": received, "receiver_path": payload["_path"]})
        return out

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], Any], timeout: float) -> Any:
        """Waits until ``predicate(self.alerts())`` is truthy and returns it; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self.alerts())
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"webhook: condition not met after {timeout} s; got {self.alerts()}")
            with self._cond:
                self._cond.wait(min(remaining, 0.25))
