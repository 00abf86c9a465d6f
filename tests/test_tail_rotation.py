"""``serve --tail`` under rotation with a writer that keeps writing (issue 18, rows 17 and 18): a file cut
and regrown with lines identical to the old ones, and a file renamed and re-created while its writer still
appends to the old one. Every line written is ingested exactly once."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from claude_exporter.ingest.tail import LogFollower
from conftest import val, wait_for
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.unit

# Every line the same bytes: nothing in the file's content tells a cut and regrown file from an append.
LINE = (
    json.dumps({"event": "claude_execution_complete", "duration_ms": 10, "input_tokens": 1}) + "\n"
).encode()


def accepted(reg: CollectorRegistry) -> float:
    return val(reg, "claude_exporter_events_total", source="tail", result="accepted")


@pytest.fixture
def rec(instrumented: tuple[CollectorRegistry, Any]) -> Any:
    return instrumented[1]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "agent.log"
    path.write_bytes(b"")
    return path


def write_lines(handle: Any, count: int) -> None:
    for _ in range(count):  # one write a line, as a logger does
        handle.write(LINE)
        handle.flush()


class Writer(threading.Thread):
    """A real writer thread running ``steps`` in order; each step may wait on the follower first."""

    def __init__(self, steps: list[Callable[[], None]]) -> None:
        super().__init__(daemon=True)
        self.steps = steps
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for step in self.steps:
                step()
        except BaseException as err:  # reported by the test's join
            self.error = err


def until(predicate: Callable[[], bool]) -> Callable[[], None]:
    def step() -> None:
        assert wait_for(predicate, timeout=10), "the follower did not get there"

    return step


def test_truncated_and_regrown_with_the_same_lines_loses_nothing(reg, rec, log):
    # A poll interval longer than the test: only the size watch between polls makes the follower look.
    follower = LogFollower(log, rec).start(interval=60)
    handle = open(log, "ab")  # noqa: SIM115 - the writer's own handle, closed below
    writer = Writer(
        [
            lambda: write_lines(handle, 50),
            until(lambda: accepted(reg) == 50),
            lambda: os.truncate(log, 0),  # copytruncate's cut; the writer appends on from 0
            until(lambda: follower.truncations == 1),  # seen by its size, whatever the lines
            lambda: write_lines(handle, 130),  # past the old read position, the same bytes as before
        ]
    )
    try:
        writer.start()
        writer.join(timeout=30)
        assert writer.error is None, writer.error
        assert wait_for(lambda: accepted(reg) == 180, timeout=10)
    finally:
        follower.stop()
        handle.close()
    assert accepted(reg) == 180  # each line once: none lost, none read twice
    assert follower.truncations == 1


def test_the_cut_is_seen_by_size_when_polled_between_cut_and_regrowth(reg, rec, log):
    follower = LogFollower(log, rec)
    with open(log, "ab") as handle:
        write_lines(handle, 50)
        assert follower.poll_once() == 50
        os.truncate(log, 0)
        assert follower.poll_once() == 0
        write_lines(handle, 130)
        assert follower.poll_once() == 130
    assert follower.truncations == 1
    follower.stop()


def test_renamed_and_recreated_while_the_writer_still_appends_to_the_old_file(reg, rec, log):
    follower = LogFollower(log, rec)
    old = open(log, "ab")  # noqa: SIM115 - the writer's handle on the old file, closed below
    try:
        write_lines(old, 80)
        assert follower.poll_once() == 80
        os.rename(log, log.with_name("agent.log.1"))  # logrotate: rename, create
        log.write_bytes(b"")
        assert follower.poll_once() == 0  # the rotation seen: the new file followed, the old one kept open
        write_lines(old, 20)  # the writer has not reopened its file yet
        assert follower.poll_once() == 20  # the old file drained
        assert (follower.rotations, follower.draining) == (1, 1)
        with open(log, "ab") as new:  # now it has
            write_lines(new, 30)
        assert follower.poll_once() == 30
    finally:
        old.close()
        follower.stop()
    assert accepted(reg) == 130


def test_a_writer_thread_that_reopens_late_loses_nothing(reg, rec, log):
    follower = LogFollower(log, rec).start(interval=0.02)
    handles: list[Any] = [open(log, "ab")]  # noqa: SIM115 - closed below

    def rotate() -> None:
        os.rename(log, log.with_name("agent.log.1"))
        log.write_bytes(b"")

    def reopen() -> None:
        handles.append(open(log, "ab"))  # noqa: SIM115 - closed below

    writer = Writer(
        [
            lambda: write_lines(handles[0], 80),
            until(lambda: accepted(reg) == 80),
            rotate,
            until(lambda: follower.rotations == 1),  # the follower reads the new file now
            lambda: write_lines(handles[0], 20),  # and the writer still appends to the old one
            reopen,  # (on SIGHUP, say)
            lambda: write_lines(handles[1], 30),
        ]
    )
    try:
        writer.start()
        writer.join(timeout=30)
        assert writer.error is None, writer.error
        assert wait_for(lambda: accepted(reg) == 130, timeout=10)
    finally:
        follower.stop()
        for handle in handles:
            handle.close()
    assert accepted(reg) == 130


def test_rotated_files_read_at_once_are_bounded(reg, rec, log):
    follower = LogFollower(log, rec, drain_grace=3600)
    handles = []
    try:
        for i in range(7):
            handle = open(log, "ab")  # noqa: SIM115 - closed below
            handles.append(handle)
            write_lines(handle, 1)
            follower.poll_once()
            os.rename(log, log.with_name(f"agent.log.{i}"))
            log.write_bytes(b"")
        follower.poll_once()
        assert follower.draining == 4  # the oldest finished early, their lines read
        for handle in handles[-4:]:
            write_lines(handle, 1)
        assert follower.poll_once() == 4
    finally:
        follower.stop()
        for handle in handles:
            handle.close()
    assert accepted(reg) == 11
