"""Multiprocess mode under real servers: gunicorn with 4 sync workers and uvicorn with 4 workers serve
tests/multiprocess/app.py, whose handler makes a real SDK request to the fake API. N requests spread over
the workers, then one scrape of whichever worker answers shows exactly N requests, the exact token sums
and histogram counts; a worker killed mid-run loses nothing already counted.

Also in one process (a subprocess, since the mode is chosen at ``instrument()`` from the environment):
the same traffic gives the same claude_* samples as the in-memory store, family by family.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from claude_exporter.recording.storage.mmap import SUFFIX, file_name
from claude_exporter.testing import FakeAnthropic, Reply
from prometheus_client.parser import text_string_to_metric_families
from stack import free_port

pytestmark = pytest.mark.system

HERE = Path(__file__).resolve().parent / "multiprocess"
BIN = Path(sys.executable).parent
WORKERS = 4
N = 40
INPUT, OUTPUT = 10, 20  # the fake API's default usage per reply


def _get(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Server:
    """A real server process (gunicorn or uvicorn) running the app, its multiprocess dir in tmp."""

    def __init__(self, kind: str, fake: FakeAnthropic, tmp: Path) -> None:
        self.kind, self.tmp, self.fake = kind, tmp, fake
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tmp / "multiproc"
        self.dir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_EXPORTER")}
        env |= {"PROMETHEUS_MULTIPROC_DIR": str(self.dir), "FAKE_ANTHROPIC_URL": fake.url}
        if kind == "gunicorn":
            args = [
                str(BIN / "gunicorn"),
                *("--config", str(HERE / "gunicorn.conf.py"), "--pythonpath", str(HERE)),
                *("--workers", str(WORKERS), "--worker-class", "sync", "--bind", f"127.0.0.1:{self.port}"),
                # Imported once, then forked: prometheus_client's values notice the new pid and each
                # worker writes its own files (uvicorn, below, imports the app in every worker instead).
                "--preload",
                "app:wsgi_app",
            ]
        else:
            args = [
                str(BIN / "uvicorn"),
                *("--app-dir", str(HERE), "--workers", str(WORKERS), "--host", "127.0.0.1"),
                *("--port", str(self.port), "--no-access-log"),
                "app:asgi_app",
            ]
        self.log = (tmp / f"{kind}.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
        self.count = 0  # /call requests answered so far

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(self.url + "/metrics", timeout=2)
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.kind} did not start:\n{self.output()}") from None
                time.sleep(0.2)

    def output(self) -> str:
        self.log.flush()
        return (self.tmp / f"{self.kind}.log").read_text(errors="replace")

    def calls(self, n: int, concurrency: int = 8) -> list[int]:
        """``n`` requests to /call from ``concurrency`` threads; the pid of the worker that served each."""
        with ThreadPoolExecutor(concurrency) as pool:
            pids = [int(pid) for pid in pool.map(lambda _: _get(self.url + "/call"), range(n))]
        self.count += len(pids)
        return pids

    def all_workers(self) -> set[int]:
        """Calls until every worker has answered one (they start at their own pace); their pids."""
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        while len(seen) < WORKERS:
            assert time.monotonic() < deadline, f"{self.kind}: only workers {seen} answered"
            seen.update(self.calls(WORKERS * 2))
        return seen

    def scrape(self) -> dict[Any, float]:
        return _samples(_get(self.url + "/metrics"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            # gunicorn: QUIT is its quick shutdown (TERM waits out the graceful timeout).
            self.proc.send_signal(signal.SIGQUIT if self.kind == "gunicorn" else signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(params=["gunicorn", "uvicorn"])
def server(request: pytest.FixtureRequest, fake_anthropic: FakeAnthropic, tmp_path: Path) -> Iterator[Server]:
    srv = Server(request.param, fake_anthropic, tmp_path)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _assert_exact(samples: dict[Any, float], n: int) -> None:
    web = {"agent": "web", "model": "claude-haiku-4-5"}
    assert _value(samples, "claude_requests_total", **web, outcome="success") == n
    assert _value(samples, "claude_requests_total", **web, outcome="error") == 0
    assert _value(samples, "claude_tokens_total", **web, type="input") == n * INPUT
    assert _value(samples, "claude_tokens_total", **web, type="output") == n * OUTPUT
    assert _value(samples, "claude_request_duration_seconds_count", **web) == n
    assert _value(samples, "claude_request_duration_seconds_bucket", **web, le="+Inf") == n
    assert _value(samples, "claude_stop_reasons_total", **web, stop_reason="end_turn") == n
    handle = {"agent": "web", "task": "handle"}
    assert _value(samples, "claude_executions_total", **handle, outcome="success") == n
    assert _value(samples, "claude_execution_duration_seconds_count", **handle) == n
    assert _value(samples, "claude_execution_tokens_sum", **handle, type="input") == n * INPUT
    assert _value(samples, "claude_execution_tokens_sum", **handle, type="output") == n * OUTPUT
    assert _value(samples, "claude_execution_tokens_count", **handle, type="output") == n
    assert _value(samples, "claude_execution_requests_sum", **handle) == n
    assert _value(samples, "claude_requests_in_flight", agent="web") == 0
    assert _value(samples, "claude_executions_in_flight", **handle) == 0
    # One build_info series, however many workers wrote it.
    assert sum(1 for name, _ in samples if name == "claude_exporter_build_info") == 1


def test_requests_add_up_over_workers_and_survive_a_killed_worker(server: Server) -> None:
    workers = server.all_workers()
    server.calls(N)
    _assert_exact(server.scrape(), server.count)
    # Every scrape, whichever worker answers it, shows the same totals.
    for _ in range(3):
        _assert_exact(server.scrape(), server.count)
    if server.kind == "gunicorn":  # sync workers: a busy one cannot answer, so the scrape is another's
        _in_flight_over_workers(server)
        _assert_exact(server.scrape(), server.count)

    # A worker killed mid-run: what it counted stays (its files are on disk), requests go on.
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    before = server.count
    deadline = time.monotonic() + 30
    while server.count < before + N:  # the server replaces the worker meanwhile
        try:
            assert victim not in server.calls(4, concurrency=4)
        except OSError:
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.2)
    _assert_exact(server.scrape(), server.count)
    files = {p.name for p in server.dir.iterdir()}
    assert file_name("counter", victim) in files and file_name("histogram", victim) in files
    if server.kind == "gunicorn":  # child_exit -> mark_process_dead: the dead worker's live gauges go
        dead = (f"{victim}.db", f"{victim}{SUFFIX}")  # the application's names and the exporter's
        assert not [n for n in files if n.startswith("gauge_live") and n.split("_")[2] in dead], files


def _in_flight_over_workers(srv: Server) -> None:
    """Three requests held open on three workers, scraped from the fourth: the live gauges add them up.
    The fake API answers them only once the scrape saw all three (however slowly the machine starts them)."""
    release = threading.Event()

    def held(request: Any) -> Reply:
        release.wait(120)
        return Reply()

    srv.fake.responder = held
    try:
        with ThreadPoolExecutor(3) as pool:
            started = time.monotonic()
            running = [pool.submit(_get, srv.url + "/call") for _ in range(3)]
            deadline = started + 120  # bounds a failing run only
            while True:
                samples = srv.scrape()
                if _value(samples, "claude_requests_in_flight", agent="web") == 3:
                    break
                assert time.monotonic() < deadline, "in flight never reached 3"
                time.sleep(0.05)
            seen = time.monotonic() - started
            assert _value(samples, "claude_executions_in_flight", agent="web", task="handle") == 3
            assert 0 < _value(samples, "claude_execution_longest_running_seconds", agent="web") <= seen
            release.set()
            assert len({int(f.result()) for f in running}) == 3
    finally:
        release.set()
        srv.fake.responder = None
    srv.count += 3
    samples = srv.scrape()
    assert _value(samples, "claude_requests_in_flight", agent="web") == 0
    assert _value(samples, "claude_execution_longest_running_seconds", agent="web") == 0


# The same traffic through the in-memory store and through the mmap files, in fresh interpreters.
_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import claude_exporter as ce
    from claude_exporter.testing import FakeAnthropic, Reply, code_execution_blocks
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry()
    ce.instrument(registry=reg)
    limits = {"tokens": (1000, 250, "2030-01-01T00:00:00Z"), "requests": (50, 49, "2030-01-01T00:00:00Z")}
    with FakeAnthropic() as fake:
        fake.script(
            Reply(status=429, retry_after=0.01),
            Reply(input_tokens=7, output_tokens=3, ratelimit=limits),
            Reply(status=500),
            Reply(
                stop_reason="max_tokens",
                content=code_execution_blocks("nonzero_exit", "bash_code_execution"),
            ),
        )
        client = fake.client(max_retries=1)
        kw = dict(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}])
        with ce.execution("t", agent="a"):
            client.messages.create(**kw)
            try:
                client.with_options(max_retries=0).messages.create(**kw)
            except Exception:
                pass
        with client.messages.stream(**kw) as s:
            s.get_final_message()
        client.messages.create(**{**kw, "model": "claude-unknown-9"})
        batch = fake.add_batch({"r": Reply(input_tokens=5, output_tokens=5, model="claude-haiku-4-5")})
        list(client.messages.batches.results(batch))
    sys.stdout.write(generate_latest(reg).decode())
    """
)


def _run_script(tmp: Path, multiprocess: bool, config: Path | None = None) -> dict[Any, float]:
    unset = ("PROMETHEUS_MULTIPROC_DIR", "CLAUDE_EXPORTER_CONFIG")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    if config is not None:
        env["CLAUDE_EXPORTER_CONFIG"] = str(config)
    if multiprocess:
        mp = tmp / ("mp-config" if config else "mp")
        mp.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(mp)
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], check=True, capture_output=True, text=True, env=env, timeout=60
    )
    return _samples(out.stdout)


def _comparable(samples: dict[Any, float]) -> dict[Any, float]:
    # Wall times differ from run to run: compare their counts, not their sums and buckets.
    timing = ("duration_seconds", "time_to_first_token", "longest_running")
    return {
        key: round(value, 9)
        for key, value in samples.items()
        if not key[0].endswith("_created")
        and not (any(t in key[0] for t in timing) and not key[0].endswith("_count"))
    }


def test_multiprocess_exposition_matches_the_in_memory_store(tmp_path: Path) -> None:
    single = _run_script(tmp_path, multiprocess=False)
    multi = _run_script(tmp_path, multiprocess=True)
    assert _comparable(multi) == _comparable(single)
    names = {key[0] for key in multi}
    for family in (
        "claude_retries_total",
        "claude_errors_total",
        "claude_code_blocks_executed_total",
        "claude_ratelimit_remaining",
        "claude_time_to_first_token_seconds_count",
        "claude_exporter_unpriced_tokens_total",
        "claude_execution_longest_running_seconds",
        "claude_cost_by_tier_usd_total",
    ):
        assert family in names, family
    assert json.dumps(sorted(names))  # every name is plain text
    # A batch result is priced under tier "batch" in both stores (the usage path, not a request).
    assert [k for k in multi if k[0] == "claude_cost_by_tier_usd_total" and ("tier", "batch") in k[1]]
    # Agent "a" failed a request (the metrics-list test below relies on it).
    assert [k for k in multi if k[0] == "claude_errors_total" and ("agent", "a") in k[1]]


def test_multiprocess_exposition_applies_the_agents_metrics_lists(tmp_path: Path) -> None:
    # Agent "a" enables only durations and input tokens: the families and token types it leaves out are
    # hidden the same way in both modes.
    config = tmp_path / "claude-exporter.yaml"
    config.write_text("monitoring:\n  a:\n    metrics: [execution_duration_ms, tokens_used_input]\n")
    single = _run_script(tmp_path, multiprocess=False, config=config)
    multi = _run_script(tmp_path, multiprocess=True, config=config)
    assert _comparable(multi) == _comparable(single)
    a_tokens = {
        dict(k[1]).get("type") for k in multi if k[0] == "claude_tokens_total" and ("agent", "a") in k[1]
    }
    assert a_tokens == {"input", "cache_creation", "cache_read"}
    # error_rate_percent is a seed metric the list leaves out; its failed request is still counted.
    assert not [k for k in multi if k[0] == "claude_errors_total" and ("agent", "a") in k[1]]
    assert [k for k in multi if k[0] == "claude_requests_total" and ("outcome", "error") in k[1]]
