"""``claude-exporter serve``: the real command in a subprocess, fed over real HTTP and through followed files.

The helpers here (starting ``serve``, HTTP calls, reading samples from ``/metrics``) are shared with
``test_node_seed.py`` and ``test_run.py``.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from claude_exporter.ingest.events import MAX_BODY
from conftest import expected_cost, is_close
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.system

SEED_CONFIG = """\
monitoring:
  claude_code_executor:
    metrics:
      - execution_duration_ms
      - tokens_used_input
      - tokens_used_output
      - code_blocks_executed
      - error_rate_percent
    alerts:
      - name: execution_timeout
        threshold_ms: 30000
        severity: high
      - name: token_spike
        threshold_change_percent: 150
        severity: medium
    sampling_rate: 1.0
    retention_days: 30
"""
MODEL = "claude-haiku-4-5"


# -- helpers shared with the other process tests -----------------------------------------------------------


def exporter_command() -> list[str]:
    """The installed ``claude-exporter`` script of this interpreter's environment."""
    script = Path(sys.executable).parent / "claude-exporter"
    return [str(script)] if script.exists() else [sys.executable, "-m", "claude_exporter"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str
    stderr: Path

    def stop(self, timeout: float = 10.0) -> tuple[int, str]:
        """SIGTERM, then the exit status and the rest of standard output."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out


def _read_url(proc: subprocess.Popen[str], stderr: Path, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            if "listening on " in line:
                return line.split("listening on ", 1)[1].split()[0]
    proc.kill()
    pytest.fail(f"serve did not start (status {proc.wait(5)}): {stderr.read_text()}")


@contextmanager
def serving(*args: str, workdir: Path, env: dict[str, str] | None = None) -> Iterator[Served]:
    """``claude-exporter serve ARGS`` (add ``--port 0`` for a free port); killed at the end if still up."""
    stderr = workdir / f"serve-{time.monotonic_ns()}.stderr"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            [*exporter_command(), "serve", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, **(env or {})},
        )
    try:
        yield Served(proc, _read_url(proc, stderr, timeout=20), stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def post_events(url: str, body: str | bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body.encode() if isinstance(body, str) else body
    status, answer = http("POST", f"{url}/v1/events", data, headers)
    return status, json.loads(answer)


def samples(url: str, headers: dict[str, str] | None = None) -> dict[tuple[str, frozenset[Any]], float]:
    """Every sample of ``url``/metrics, by (name, label items)."""
    status, body = http("GET", f"{url}/metrics", headers=headers)
    assert status == 200, body
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(table: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    """A sample's value; 0.0 when it does not exist."""
    return table.get((name, frozenset(labels.items())), 0.0)


def poll(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def delta(
    before: dict[tuple[str, frozenset[Any]], float],
    after: dict[tuple[str, frozenset[Any]], float],
    name: str,
    **labels: str,
) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def event_line(kind: str = "claude_execution_complete", **fields: Any) -> str:
    event: dict[str, Any] = {"event": kind, "execution_id": "x", "duration_ms": 100, **fields}
    if kind == "claude_execution_error":
        event.setdefault("error_type", "InternalServerError")
        event.setdefault("error_message", "500 boom")
    return json.dumps(event)


# -- one exporter for most tests here (each test uses its own agent names, so values stay exact) -----------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("serve")
    config = workdir / "claude-exporter.yaml"
    config.write_text(SEED_CONFIG)
    with serving("--config", str(config), "--port", "0", workdir=workdir) as server:
        yield server


def test_one_event_and_ndjson_become_exact_metrics(served):
    url = served.url
    before = samples(url)
    status, answer = post_events(
        url,
        event_line(
            agent="post-one",
            model=MODEL,
            duration_ms=1500,
            input_tokens=100,
            output_tokens=40,
            cache_read_input_tokens=1000,
            stop_reason="end_turn",
        ),
    )
    assert (status, answer) == (200, {"accepted": 1})
    ndjson = "\n".join(
        [
            event_line(agent="post-one", model=MODEL, duration_ms=500, input_tokens=10, output_tokens=2),
            "",  # blank lines are allowed
            event_line("claude_execution_error", agent="post-one", model=MODEL, duration_ms=250,
                       error_type="RateLimitError", task="triage"),
        ]
    )  # fmt: skip
    assert post_events(url, ndjson + "\n") == (200, {"accepted": 2})

    after = samples(url)
    labels = {"agent": "post-one", "model": MODEL}
    assert value(after, "claude_requests_total", **labels, outcome="success") == 2
    assert value(after, "claude_requests_total", **labels, outcome="error") == 1
    assert value(after, "claude_tokens_total", **labels, type="input") == 110
    assert value(after, "claude_tokens_total", **labels, type="output") == 42
    assert value(after, "claude_tokens_total", **labels, type="cache_read") == 1000
    assert value(after, "claude_errors_total", **labels, error_type="RateLimitError", error_code="none") == 1
    assert value(after, "claude_stop_reasons_total", **labels, stop_reason="end_turn") == 1
    assert value(after, "claude_request_duration_seconds_count", **labels) == 3
    assert is_close(value(after, "claude_request_duration_seconds_sum", **labels), 2.25)
    assert is_close(
        value(after, "claude_cost_usd_total", **labels),
        expected_cost(MODEL, input=110, output=42, cache_read=1000),
    )
    assert value(after, "claude_executions_total", agent="post-one", task="default", outcome="success") == 2
    assert value(after, "claude_executions_total", agent="post-one", task="triage", outcome="error") == 1
    assert value(after, "claude_execution_tokens_sum", agent="post-one", task="default", type="input") == 1110
    assert delta(before, after, "claude_exporter_events_total", source="http", result="accepted") == 3


def test_bad_lines_are_named_and_nothing_is_applied(served):
    url = served.url
    before = samples(url)
    body = "\n".join(
        [
            event_line(agent="post-bad"),
            "this is not json",
            event_line(agent="post-bad"),
            event_line(agent="post-bad", duration_ms=-5, input_tokens="many"),
            event_line("claude_execution_begin", agent="post-bad"),
        ]
    )
    status, answer = post_events(url, body)

    assert status == 400
    assert answer["error"] == "no event applied"
    problems = answer["problems"]
    assert [p.split(":", 1)[0] for p in problems] == ["line 2", "line 4", "line 4", "line 5"]
    assert "duration_ms" in problems[1]
    assert "input_tokens" in problems[2]
    after = samples(url)
    assert value(after, "claude_requests_total", agent="post-bad", model="unknown", outcome="success") == 0
    assert delta(before, after, "claude_exporter_events_total", source="http", result="rejected") == 3
    # A body with no event at all is a 400 too.
    assert post_events(url, "\n\n")[0] == 400


def test_body_limit(served):
    url = served.url
    # Exactly 1 MiB of valid NDJSON is accepted.
    line = event_line(agent="post-big", duration_ms=1) + "\n"
    count = MAX_BODY // len(line)
    body = (line * count).encode()
    body += b" " * (MAX_BODY - len(body))  # trailing blanks: still exactly the limit
    assert len(body) == MAX_BODY
    assert post_events(url, body) == (200, {"accepted": count})
    # One byte over it: the whole body is sent, as a real client does, and the answer is 413.
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-ndjson\r\n"
            f"Content-Length: {MAX_BODY + 1}\r\nConnection: close\r\n\r\n".encode()
            + body
            + b"\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 413") or answer.startswith(b"HTTP/1.1 413"), answer[:100]
    big = {"agent": "post-big", "model": "unknown"}
    assert value(samples(url), "claude_requests_total", **big, outcome="success") == count


def test_health_and_liveness(served):
    url = served.url
    lines = [event_line(agent="health-a", duration_ms=ms) for ms in (100, 300)]
    lines.append(event_line("claude_execution_error", agent="health-a", duration_ms=200))
    assert post_events(url, "\n".join(lines))[0] == 200

    status, body = http("GET", f"{url}/health/claude-agent")
    assert status == 200
    report = json.loads(body)
    assert {"avg_execution_ms", "error_rate_percent", "last_check"} <= set(report["metrics"])
    agent = report["agents"]["health-a"]
    assert agent["executions"] == 3
    assert agent["avg_execution_ms"] == 200.0
    assert agent["error_rate_percent"] == pytest.approx(33.33, abs=0.01)
    assert http("GET", f"{url}/-/healthy") == (200, b"OK\n")
    assert http("GET", f"{url}/v1/events")[0] == 405
    assert http("GET", f"{url}/nope")[0] == 404


# -- own processes: configuration, token, signals, files ----------------------------------------------------


def test_config_address_token_and_sigterm(tmp_path):
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        SEED_CONFIG + f"exporter:\n  default_agent: claude_code_executor\n"
        f"  server:\n    address: 127.0.0.1\n    port: {port}\n    token_file: {token_file}\n"
    )
    with serving("--config", str(config), workdir=tmp_path) as server:
        assert server.url == f"http://127.0.0.1:{port}"  # no --port: the configuration's
        auth = {"Authorization": "Bearer s3cret-token"}
        assert http("GET", f"{server.url}/metrics")[0] == 401
        assert http("POST", f"{server.url}/v1/events", event_line().encode())[0] == 401
        wrong = {"Authorization": "Bearer no"}
        assert http("GET", f"{server.url}/health/claude-agent", headers=wrong)[0] == 401
        assert http("GET", f"{server.url}/-/healthy")[0] == 200  # liveness never asks
        assert post_events(server.url, event_line(), auth) == (200, {"accepted": 1})
        table = samples(server.url, auth)
        # Events without an agent belong to the configured default agent.
        seed_agent = {"agent": "claude_code_executor", "model": "unknown"}
        assert value(table, "claude_requests_total", **seed_agent, outcome="success") == 1
        # The execution-timeout threshold (30 s) is a bucket, as for an instrumented application.
        assert ("claude_execution_duration_seconds_bucket", frozenset(
            {"agent": "claude_code_executor", "task": "default", "le": "30.0"}.items()
        )) in table  # fmt: skip

        status, out = server.stop()
        assert status == 0
        assert "stopping" in out
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_tails_several_files_from_start(tmp_path):
    existing = tmp_path / "a.log"
    existing.write_text(
        "booting\n" + event_line(agent="tail-a", duration_ms=10) + "\n" + event_line(agent="tail-a") + "\n"
    )
    later = tmp_path / "b.log"  # does not exist yet
    args = ["--port", "0", "--tail", str(existing), "--tail", str(later), "--tail-from-start"]
    with serving(*args, workdir=tmp_path) as server:
        with open(later, "a") as f:
            f.write(event_line("claude_execution_error", agent="tail-b", duration_ms=10) + "\n")
            f.write('{"event": "claude_execution_error", "duration_ms": 10}\n')  # no error_type: rejected
        with open(existing, "a") as f:
            f.write(event_line(agent="tail-a") + "\n" + '{"level": "debug"}\n')

        def tail_counts() -> tuple[float, float]:
            table = samples(server.url)
            return (
                value(table, "claude_exporter_events_total", source="tail", result="accepted"),
                value(table, "claude_exporter_events_total", source="tail", result="rejected"),
            )

        assert poll(lambda: tail_counts() == (4, 1)), tail_counts()
        table = samples(server.url)
        assert value(table, "claude_requests_total", agent="tail-a", model="unknown", outcome="success") == 3
        assert value(table, "claude_requests_total", agent="tail-b", model="unknown", outcome="error") == 1
        assert server.stop()[0] == 0


def test_a_bad_configuration_starts_nothing(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("monitoring:\n  a:\n    sampling_rate: 2\n")
    done = subprocess.run(
        [*exporter_command(), "serve", "--config", str(config), "--port", "0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2
    assert "monitoring.a.sampling_rate: must be a number from 0 to 1, got 2" in done.stderr
    assert "listening" not in done.stdout


def test_a_taken_port_is_an_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [*exporter_command(), "serve", "--port", str(port)],
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert done.returncode == 1
    assert "Address already in use" in done.stderr


def test_serve_neither_imports_nor_patches_the_sdk(tmp_path: Path) -> None:
    """The standalone exporter records ingested events through a recorder of its own: the SDK is never
    imported, so never patched (defect 6 of the core v2 issue)."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys, threading, io\n"
        "from claude_exporter.cli.serve import serve\n"
        "from claude_exporter.config import default_config\n"
        "stop = threading.Event()\n"
        "out = io.StringIO()\n"
        "kwargs = {'port': 0, 'stop': stop, 'out': out}\n"
        "t = threading.Thread(target=serve, args=(default_config(),), kwargs=kwargs)\n"
        "t.start()\n"
        "import time\n"
        "deadline = time.time() + 10\n"
        "while 'listening' not in out.getvalue() and time.time() < deadline: time.sleep(0.02)\n"
        "print('listening' in out.getvalue(), 'anthropic' in sys.modules, 'httpx2' in sys.modules)\n"
        "stop.set(); t.join(10)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "False"]
