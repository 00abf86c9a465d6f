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

import fcntl
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
from claude_exporter.recording.storage import mmap as mmap_storage
from claude_exporter.recording.storage.mmap import MmapStorage
from claude_exporter.testing import FakeAnthropic, Reply
from conftest import kw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from test_multiprocess import _samples, _value

WEB = {"agent": "web", "model": "claude-haiku-4-5"}


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
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        check=False,
        capture_output=True,
        text=True,
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
    done = subprocess.run(
        [sys.executable, "-c", _APP], check=False, capture_output=True, text=True, env=env, timeout=120
    )
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


@pytest.mark.integration
def test_a_file_that_cannot_grow_keeps_its_values_until_it_can(
    tiny_tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = MmapStorage(str(tiny_tmpfs))
    overflow = storage.counter("claude_exporter_label_overflow_total")
    overflow.inc(("first",))  # the counter file made (64 KiB) while there is room
    filler = _fill(tiny_tmpfs)
    n = 1000  # about 150 bytes each: the file must double, and cannot
    for i in range(n):
        overflow.inc((f"label{i}",), i)
    overflow.inc(("first",))
    try:
        full = _read_dir(tiny_tmpfs)
        placed = [
            i for i in range(n) if ("claude_exporter_label_overflow_total", (("label", f"label{i}"),)) in full
        ]
        assert 0 < len(placed) < n  # the first fitted, the rest wait in memory
        assert _value(full, "claude_exporter_label_overflow_total", label="first") == 2
        assert (
            _value(full, "claude_exporter_internal_errors_total", stage="storage") == 0
        )  # no room for it either
        held = {key: value for _, key, value, _ in storage.held()}
        assert len(held) == n - len(placed) + 1  # and the count of them, waiting too
        filler.unlink()
        monkeypatch.setattr(mmap_storage, "RETRY_SECONDS", 0.0)
        overflow.inc(("first",))  # the next write finds room for every one
        assert storage.held() == []
        freed = _read_dir(tiny_tmpfs)
        for i in range(n):
            assert _value(freed, "claude_exporter_label_overflow_total", label=f"label{i}") == i
        assert _value(freed, "claude_exporter_label_overflow_total", label="first") == 3
        assert _value(freed, "claude_exporter_internal_errors_total", stage="storage") == n - len(placed) + 1
    finally:
        storage.close()


# -- files that cannot be read -------------------------------------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def mp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: None) -> Iterator[Path]:
    """This process instrumented in multiprocess mode, its files in tmp; uninstrumented after."""
    path = tmp_path / "mp"
    path.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(path))
    for name in [k for k in os.environ if k.startswith("CLAUDE_EXPORTER")]:
        monkeypatch.delenv(name)
    yield path


def _entry(key: str, value: float) -> bytes:
    encoded = key.encode()
    padded = encoded + b" " * (8 - (len(encoded) + 4) % 8)
    return struct.pack(f"i{len(padded)}sdd", len(encoded), padded, value, 0.0)


def _file(*entries: bytes, used: int | None = None, size: int = 4096) -> bytes:
    body = b"".join(entries)
    data = struct.pack("ii", 8 + len(body) if used is None else used, 0) + body
    return data + b"\0" * max(0, size - len(data))


_KEY = json.dumps(["claude_requests", "claude_requests_total", {**WEB, "outcome": "success"}, "h"])


def _bad_files(dead_pid: int) -> dict[str, bytes]:
    """Files no scrape can read, each a way a file comes to be so: name -> bytes."""
    good = _file(_entry(_KEY, 1000.0))
    return {
        f"counter_{dead_pid}0.db": b"",  # made, never written (a crash between open and truncate)
        f"counter_{dead_pid}1.db": b"\x08\0\0",  # shorter than the header
        f"counter_{dead_pid}2.db": _file(used=4000, size=8),  # header only, claiming entries
        f"counter_{dead_pid}3.db": good[: len(good) // 2][:60],  # truncated mid-entry
        f"histogram_{dead_pid}4.db": bytes(range(256)) * 8,  # garbage
        f"counter_{dead_pid}5.db": _file(_entry("not json", 1.0)),  # a key that is no key
        f"counter_{dead_pid}6.db": _file(_entry(json.dumps(["claude_requests", "claude_requests_total",
                                                             {"agent": "x", "bad\nlabel": "y"}, "h"]), 5.0)),
        f"gauge_max_{dead_pid}7.db": _file(_entry(_KEY, 1000.0)),  # a counter's key in a gauge file
        f"gauge_{dead_pid}8.db": _file(),  # no mode in the name
    }  # fmt: skip


@pytest.mark.integration
def test_files_that_cannot_be_read_are_skipped_and_counted_and_the_rest_served(
    mp_dir: Path, fake_anthropic: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    reg = CollectorRegistry()
    ce.instrument(registry=reg)
    client = fake_anthropic.client(max_retries=0)
    with ce.execution("handle", agent="web"):
        for _ in range(3):
            client.messages.create(**kw())
    # Another worker's readable file (counted) and an empty one made but not yet written (not a fault).
    (mp_dir / "counter_8888880.db").write_bytes(_file(_entry(_KEY.replace('"web"', '"other"'), 2.0)))
    (mp_dir / "counter_8888881.db").write_bytes(b"\0" * 4096)
    bad = _bad_files(9999999)
    for name, data in bad.items():
        (mp_dir / name).write_bytes(data)

    server = make_server("127.0.0.1", 0, ce.make_wsgi_app(reg), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        for scrape in (1, 2):
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.status == 200
                samples = _samples(resp.read().decode())
            assert _value(samples, "claude_requests_total", **WEB, outcome="success") == 3
            assert (
                _value(samples, "claude_requests_total", **{**WEB, "agent": "other"}, outcome="success") == 2
            )
            assert _value(samples, "claude_tokens_total", **WEB, type="output") == 3 * 20
            assert (
                _value(samples, "claude_executions_total", agent="web", task="handle", outcome="success") == 1
            )
            # Every bad file skipped and counted, in this scrape already, once per scrape that skips it.
            assert _value(
                samples, "claude_exporter_internal_errors_total", stage="scrape_file"
            ) == scrape * len(bad)
            assert not [name for name, _ in samples if "bad" in name or name == "x"]
    finally:
        server.shutdown()
        server.server_close()
    # Each named once, with why, however many scrapes skip it.
    warned = [r.getMessage() for r in caplog.records if "PROMETHEUS_MULTIPROC_DIR" in r.getMessage()]
    assert sorted(m.split("'")[1] for m in warned) == sorted(bad), warned
    assert all(m.split(": ", 1)[1] for m in warned)


_GOOD = {**WEB, "agent": "good"}


def _flip(at: int, byte: int) -> bytes:
    """A well-formed file of one entry with the byte at ``at`` replaced."""
    good = _file(_entry(_KEY, 3.0), size=0)
    return good[:at] + bytes([byte]) + good[at + 1 :]


def _minimal_dir(path: Path) -> None:
    """One worker's readable counter file, written by hand (agent "good", 7 requests)."""
    (path / "counter_1.db").write_bytes(_file(_entry(_KEY.replace('"web"', '"good"'), 7.0)))


@pytest.mark.integration
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=300),
        # A plausible header before random bytes: the reader goes past the first check.
        st.tuples(st.integers(-(2**31), 2**31 - 1), st.binary(max_size=300)).map(
            lambda t: struct.pack("ii", t[0], 0) + t[1]
        ),
        # A well-formed entry with its bytes flipped here and there.
        st.tuples(st.integers(0, 200), st.integers(0, 255)).map(lambda t: _flip(*t)),
    ),
    name=st.sampled_from(["counter_2.db", "gauge_livesum_2.db", "gauge_max_2.db", "histogram_2.db", "x.db"]),
)
def test_no_bytes_in_a_file_make_the_scrape_fail(tmp_path: Path, data: bytes, name: str) -> None:
    path = tmp_path / "prop"
    path.mkdir(exist_ok=True)
    for old in path.iterdir():
        old.unlink()
    _minimal_dir(path)
    (path / name).write_bytes(data)
    counted: list[str] = []
    reg = CollectorRegistry()
    reg.register(MultiprocessCollector(str(path), fault=counted.append))
    with (path / name).open("rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # a live writer's lock, so a live gauge file is read too
        samples = _samples(generate_latest(reg).decode())  # never raises, and parses
    # The good file always served, whatever the other one holds (a flipped byte may leave it valid).
    assert _value(samples, "claude_requests_total", **_GOOD, outcome="success") == 7.0
    assert counted in ([], ["scrape_file"])
    if counted:
        assert [key for key in samples if key[0].startswith("claude_requests")] == [
            ("claude_requests_total", tuple(sorted({**_GOOD, "outcome": "success"}.items())))
        ]


# -- a worker killed mid-request -----------------------------------------------------------------------

_HELD = textwrap.dedent(
    """
    import os
    import anthropic
    import claude_exporter as ce

    ce.instrument()
    client = anthropic.Anthropic(base_url=os.environ["FAKE_ANTHROPIC_URL"], api_key="k", max_retries=0)
    with ce.execution("handle", agent="web"):
        with ce.execution("warmup", agent="web"):
            pass  # a finished execution: its counts stay on disk after the kill
        client.messages.create(
            model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    """
)


@pytest.mark.system
def test_a_killed_workers_in_flight_counts_go_with_it(tmp_path: Path, fake_anthropic: FakeAnthropic) -> None:
    path = tmp_path / "mp"
    path.mkdir()
    arrived, release = threading.Event(), threading.Event()

    def held(request: Any) -> Reply:
        arrived.set()
        release.wait(60)
        return Reply()

    fake_anthropic.responder = held
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_EXPORTER")}
    env |= {"PROMETHEUS_MULTIPROC_DIR": str(path), "FAKE_ANTHROPIC_URL": fake_anthropic.url}
    worker = subprocess.Popen([sys.executable, "-c", _HELD], env=env, stderr=subprocess.PIPE)
    try:
        assert arrived.wait(60), "the worker's request never reached the fake API"
        running = _read_dir(path)
        assert _value(running, "claude_requests_in_flight", agent="web") == 1
        assert _value(running, "claude_executions_in_flight", agent="web", task="handle") == 1
        assert _value(running, "claude_execution_longest_running_seconds", agent="web") > 0
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(30) == -signal.SIGKILL
        # No mark_process_dead: the kernel dropped the dead worker's lock, and that is enough.
        assert any(p.name.startswith("gauge_live") for p in path.iterdir())
        dead = _read_dir(path)
        assert _value(dead, "claude_requests_in_flight", agent="web") == 0
        assert _value(dead, "claude_executions_in_flight", agent="web", task="handle") == 0
        assert _value(dead, "claude_execution_longest_running_seconds", agent="web") == 0
        # What it had counted stays.
        assert _value(dead, "claude_executions_total", agent="web", task="warmup", outcome="success") == 1
    finally:
        release.set()
        fake_anthropic.responder = None
        if worker.poll() is None:
            worker.kill()
        worker.wait()
        assert worker.stderr is not None
        worker.stderr.close()
