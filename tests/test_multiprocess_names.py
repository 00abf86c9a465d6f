"""The application's own multiprocess metrics and claude-exporter's share ``PROMETHEUS_MULTIPROC_DIR``.

prometheus_client's ``MmapedDict`` for the application's counters and the exporter's own writer each open
their process's counter file; under one name (``counter_<pid>.db``) each kept its own idea of how much of
the file was used and wrote over the other's entries, and claude_requests_total vanished. The exporter's
files have names of their own (``counter_<pid>-claude.db``) that both readers parse: a real subprocess with
an application counter and real SDK requests to the fake API, read back by the exporter's reader and by
prometheus_client's ``MultiProcessCollector``, shows both exact. Files named as before (a rolling upgrade)
are still read, and the exporter's ``mark_process_dead`` removes a dead worker's live gauges under either
name. A process that reuses a dead one's pid starts its live gauge files afresh, where it carried on the
dead one's in-flight counts (and the age of its running execution) for its whole life.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anthropic
import pytest
from claude_exporter import __version__ as ce_version
from claude_exporter.exposition.multiprocess import MultiprocessCollector, mark_process_dead
from claude_exporter.recording.storage.mmap import MmapStorage, file_name
from claude_exporter.testing import FakeAnthropic
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from test_multiprocess import _samples, _value

sdk_version = anthropic.__version__
WEB = {"agent": "web", "model": "claude-haiku-4-5"}
N = 3

_APP = textwrap.dedent(
    """
    import json, os, sys
    import anthropic
    import prometheus_client
    import claude_exporter as ce

    hits = prometheus_client.Counter("app_hits", "The application's own counter.", ["k"])
    busy = prometheus_client.Gauge("app_busy", "The app's live gauge.", multiprocess_mode="livesum")
    reg = prometheus_client.CollectorRegistry()
    ce.instrument(registry=reg)
    client = anthropic.Anthropic(base_url=os.environ["FAKE_ANTHROPIC_URL"], api_key="k", max_retries=0)
    for i in range(int(os.environ["N"])):
        hits.labels(k="a").inc()
        with ce.execution("handle", agent="web"):
            busy.inc()
            client.messages.create(
                model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
        hits.labels(k=f"b{i}").inc(2)
    own = prometheus_client.generate_latest(reg).decode()  # this process's own /metrics
    ce.uninstrument()
    sys.stdout.write(json.dumps([own, os.getpid()]))
    """
)


def _ours(path: Path) -> dict[Any, float]:
    reg = CollectorRegistry()
    reg.register(MultiprocessCollector(str(path)))
    return _samples(generate_latest(reg).decode())


def _theirs(path: Path) -> dict[Any, float]:
    reg = CollectorRegistry()
    MultiProcessCollector(reg, str(path))
    return _samples(generate_latest(reg).decode())


def _assert_claude_exact(samples: dict[Any, float], n: int) -> None:
    assert _value(samples, "claude_requests_total", **WEB, outcome="success") == n
    assert _value(samples, "claude_tokens_total", **WEB, type="input") == n * 10
    assert _value(samples, "claude_tokens_total", **WEB, type="output") == n * 20
    assert _value(samples, "claude_request_duration_seconds_count", **WEB) == n
    assert _value(samples, "claude_executions_total", agent="web", task="handle", outcome="success") == n


@pytest.mark.system
def test_the_applications_own_multiprocess_metrics_and_claudes_share_the_directory(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    path = tmp_path / "mp"
    path.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_EXPORTER")}
    env |= {"PROMETHEUS_MULTIPROC_DIR": str(path), "FAKE_ANTHROPIC_URL": fake_anthropic.url, "N": str(N)}
    done = subprocess.run(
        [sys.executable, "-c", _APP], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(fake_anthropic.requests) == N
    own_text, pid = json.loads(done.stdout)
    own = _samples(own_text)
    _assert_claude_exact(own, N)
    ours, theirs = _ours(path), _theirs(path)  # the application's collector reads its own metrics and ours
    for samples in (ours, theirs):
        _assert_claude_exact(samples, N)
    counts = {key: v for key, v in ours.items() if key[0].endswith(("_total", "_bucket", "_sum", "_count"))}
    assert len(counts) > 20 and {key: theirs.get(key) for key in counts} == counts
    # Each gauge file's mode read from its name: no pid label left on any claude_* gauge.
    build = {"version": ce_version, "anthropic_version": sdk_version}
    assert _value(theirs, "claude_exporter_build_info", **build) == 1
    assert _value(theirs, "app_hits_total", k="a") == N
    for i in range(N):
        assert _value(theirs, "app_hits_total", k=f"b{i}") == 2
    assert _value(theirs, "app_busy") == N
    assert _value(theirs, "claude_requests_in_flight", agent="web") == 0
    assert not [key for key in theirs if key[0].startswith("claude_") and "pid" in dict(key[1])]
    # The exporter's reader serves claude_* families only, the application's are left to its collector.
    assert not [key for key in _ours(path) if key[0].startswith("app_")]
    names = {p.name for p in path.iterdir()}
    assert f"counter_{pid}.db" in names and file_name("counter", pid) in names


def _write_counts(path: Path, agent: str, n: int) -> None:
    storage = MmapStorage(str(path))
    try:
        counter = storage.counter("claude_exporter_label_overflow_total")
        counter.inc((agent,), n)
    finally:
        storage.close()


@pytest.mark.integration
def test_files_named_as_before_are_still_read(tmp_path: Path) -> None:
    """A rolling upgrade: a worker of the previous release wrote ``counter_<pid>.db``; it is still summed."""
    _write_counts(tmp_path, "new", 3)
    (mine,) = [p for p in tmp_path.iterdir() if p.name.startswith("counter_")]
    old = tmp_path / "counter_4194999.db"  # the same format under the previous name, another pid
    old.write_bytes(mine.read_bytes())
    for samples in (_ours(tmp_path), _theirs(tmp_path)):
        assert _value(samples, "claude_exporter_label_overflow_total", label="new") == 6


@pytest.mark.integration
def test_mark_process_dead_removes_a_dead_workers_live_gauges_under_either_name(tmp_path: Path) -> None:
    dead = 4194998
    live = [f"gauge_livesum_{dead}.db", file_name("gauge_livesum", dead), file_name("gauge_livemax", dead)]
    kept = [file_name("counter", dead), file_name("gauge_max", dead), file_name("gauge_livesum", dead + 1)]
    for name in live + kept:
        (tmp_path / name).write_bytes(b"\x08\0\0\0\0\0\0\0")
    mark_process_dead(dead, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


@pytest.mark.integration
def test_a_reused_pid_never_carries_on_a_dead_processs_live_gauges(tmp_path: Path) -> None:
    """A process whose pid a killed worker had (or this one after ``uninstrument()``) takes the live gauge
    files and their lock: what the dead one had in flight is not its own, and is dropped, not carried on."""
    dead = MmapStorage(str(tmp_path))
    dead.running_executions[1] = _Running("web", "handle")  # in flight when the worker died
    dead.close()  # its lock goes with it, as the kernel drops a killed process's
    reborn = MmapStorage(str(tmp_path))  # the same pid, the same file names
    try:
        reborn.running_executions[2] = _Running("other", "handle")
        for samples in (_ours(tmp_path), _theirs(tmp_path)):
            assert _value(samples, "claude_executions_in_flight", agent="other", task="handle") == 1
            assert _value(samples, "claude_executions_in_flight", agent="web", task="handle") == 0
        assert _value(_ours(tmp_path), "claude_execution_longest_running_seconds", agent="web") == 0
        assert _value(_ours(tmp_path), "claude_execution_longest_running_seconds", agent="other") >= 0
        assert ("claude_execution_longest_running_seconds", (("agent", "other"),)) in _ours(tmp_path)
        reborn.running_executions.pop(2)
        assert _value(_ours(tmp_path), "claude_executions_in_flight", agent="other", task="handle") == 0
    finally:
        reborn.close()


class _Running:
    """A running execution as the recorder's map holds it: its series' agent and task, and its start."""

    def __init__(self, agent: str, task: str) -> None:
        self.series = _Series(agent, task)
        self.start = time.perf_counter()


class _Series:
    def __init__(self, agent: str, task: str) -> None:
        self.agent, self.task = agent, task
