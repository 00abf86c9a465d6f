"""Multiprocess mode never kills or fails its host (issue 18, rows 8 and 9, and the killed worker's note).

- A full file system under ``PROMETHEUS_MULTIPROC_DIR`` (a small tmpfs, filled): the instrumented
  application, a real subprocess making real SDK requests to the fake API, gets its own results and exits
  0, where it died of SIGBUS inside an mmap write; the values that found no room are counted, shown by its
  own scrape, and land in the files once the space comes back.
- Files in the directory that cannot be read (empty, header only, truncated, garbage): ``/metrics``
  answers 200 with the rest, each skipped file counted, where every scrape answered 500.
- A worker killed mid-request: its in-flight count and its running execution's age go with it at the next
  scrape, where they stayed (and the hung-execution alert would have paged) until ``mark_process_dead``.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import claude_exporter as ce
import pytest
from claude_exporter.exposition.multiprocess import MultiprocessCollector
from claude_exporter.testing import FakeAnthropic, Reply
from conftest import kw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
WEB = {"agent": "web", "model": "claude-haiku-4-5"}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _read_dir(path: Path) -> dict[Any, float]:
    """What a scrape of any other process reads from the directory's files alone."""
    reg = CollectorRegistry()
    reg.register(MultiprocessCollector(str(path)))
    return _samples(generate_latest(reg).decode())


# -- a full file system ------------------------------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, mounted for the test (root only) and unmounted after it."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a small tmpfs and needs root (it runs as root here and in CI)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (needs CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _fill(directory: Path) -> Path:
    """A file that takes every free block of ``directory``'s file system."""
    filler = directory / "filler"
    chunk = b"\xff" * 4096
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError:
            pass
    return filler


_APP = textwrap.dedent(
    """
    import json, os, sys
    import anthropic
    import claude_exporter as ce
    from claude_exporter.recording.storage import mmap as storage
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry()
    ce.instrument(registry=reg)
    client = anthropic.Anthropic(base_url=os.environ["FAKE_ANTHROPIC_URL"], api_key="k", max_retries=0)

    def calls(n):
        for _ in range(n):
            with ce.execution("handle", agent="web"):
                reply = client.messages.create(
                    model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}]
                )
            assert reply.usage.output_tokens == 20, reply  # the host's own result

    n = int(os.environ["N"])
    calls(n)
    full = generate_latest(reg).decode()
    os.remove(os.environ["FILLER"])  # the space comes back
    storage.RETRY_SECONDS = 0.0  # the next write tries for room at once
    calls(n)
    freed = generate_latest(reg).decode()
    ce.uninstrument()
    sys.stdout.write(json.dumps([full, freed]))
    """
)


@pytest.mark.system
def test_a_full_file_system_costs_metrics_never_the_application(
    tiny_tmpfs: Path, fake_anthropic: FakeAnthropic
) -> None:
    filler = _fill(tiny_tmpfs)
    n = 5
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_EXPORTER")}
    env |= {
        "PROMETHEUS_MULTIPROC_DIR": str(tiny_tmpfs),
        "FAKE_ANTHROPIC_URL": fake_anthropic.url,
        "FILLER": str(filler),
        "N": str(n),
    }
    done = subprocess.run([sys.executable, "-c", _APP], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode} (-7: SIGBUS)\n{done.stderr[-3000:]}"
    assert len(fake_anthropic.requests) == 2 * n
    full, freed = (_samples(text) for text in json.loads(done.stdout))
    # Disk full: nothing fitted, the process's own scrape still shows every request and the loss.
    assert _value(full, "claude_requests_total", **WEB, outcome="success") == n
    assert _value(full, "claude_tokens_total", **WEB, type="output") == n * 20
    assert _value(full, "claude_executions_total", agent="web", task="handle", outcome="success") == n
    lost = _value(full, "claude_exporter_internal_errors_total", stage="storage")
    assert lost > 0
    # Room again: what waited in memory landed, nothing lost or counted twice.
    assert _value(freed, "claude_requests_total", **WEB, outcome="success") == 2 * n
    on_disk = _read_dir(tiny_tmpfs)  # another process sees it all in the files now
    assert _value(on_disk, "claude_requests_total", **WEB, outcome="success") == 2 * n
    assert _value(on_disk, "claude_tokens_total", **WEB, type="input") == 2 * n * 10
    assert _value(on_disk, "claude_request_duration_seconds_count", **WEB) == 2 * n
    assert _value(on_disk, "claude_executions_total", agent="web", task="handle", outcome="success") == 2 * n
    assert _value(on_disk, "claude_requests_in_flight", agent="web") == 0
    assert _value(on_disk, "claude_exporter_internal_errors_total", stage="storage") == lost
