"""``serve --tail`` under what log files really do: rewritten within one poll, NUL holes, other encodings,
hostile lines, rotation under a writer that keeps writing. Each test reproduces a finding of issue 9
(section 8, and 1-2 through the tail) or issue 18 (rows 17 and 18); the property test checks that no line
costs another line its place."""

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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

pytestmark = pytest.mark.unit


def line(**extra: Any) -> str:
    return (
        json.dumps({"event": "claude_execution_complete", "duration_ms": 10, "input_tokens": 1, **extra})
        + "\n"
    )


def counts(reg: CollectorRegistry) -> tuple[float, float]:
    return (
        val(reg, "claude_exporter_events_total", source="tail", result="accepted"),
        val(reg, "claude_exporter_events_total", source="tail", result="rejected"),
    )


@pytest.fixture
def rec(instrumented: tuple[CollectorRegistry, Any]) -> Any:
    return instrumented[1]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "agent.log"
    path.write_text("")
    return path


def test_truncated_and_regrown_past_the_old_size_within_one_poll_loses_nothing(reg, rec, log):
    follower = LogFollower(log, rec)
    log.write_text(line(task="before") * 100)
    assert follower.poll_once() == 100
    # Rewritten (truncated, then three times as much written) between two polls.
    log.write_text(line(task="after") * 300)
    assert follower.poll_once() == 300
    assert counts(reg) == (400, 0)


def test_copytruncate_with_a_writer_that_does_not_append(reg, rec, log):
    follower = LogFollower(log, rec)
    writer = open(log, "r+b")  # noqa: SIM115 - a writer without O_APPEND, as many loggers are
    try:
        writer.write(line().encode() * 10)
        writer.flush()
        assert follower.poll_once() == 10
        os.truncate(log, 0)  # logrotate's copytruncate
        assert follower.poll_once() == 0  # seen truncated: reading restarts at 0
        writer.write(line(task="after-rotation").encode())  # at its old offset: a hole of NULs before it
        writer.flush()
        assert log.read_bytes().startswith(b"\0")
        assert follower.poll_once() == 1
    finally:
        writer.close()
    assert val(reg, "claude_executions_total", agent="default", task="after-rotation", outcome="success") == 1


def test_a_hole_bigger_than_the_line_limit_is_skipped_not_the_line_after_it(reg, rec, log):
    follower = LogFollower(log, rec)
    with open(log, "r+b") as writer:
        writer.seek(3 << 20)
        writer.write(line().encode())
    assert follower.poll_once() == 1


def test_only_utf8_lines_are_read(reg, rec, log):
    follower = LogFollower(log, rec)
    with open(log, "ab") as f:
        f.write(line().rstrip("\n").encode("utf-16-le") + b"\n")
        f.write(line().rstrip("\n").encode("utf-32") + b"\n")
        f.write(line().encode())
    assert follower.poll_once() == 1
    assert counts(reg) == (1, 0)


@pytest.mark.parametrize(
    "bad",
    [
        '{"event":"claude_execution_complete","duration_ms":1,"input_tokens":' + "9" * 400 + "}",
        '{"event":"claude_execution_complete","duration_ms":1,"input_tokens":' + "9" * 5000 + "}",
        '{"event":"claude_execution_complete","duration_ms":1,"requests":' + "9" * 400 + "}",
        '{"event":"claude_execution_complete","duration_ms":1,"agent":"\\udc80"}',
        '{"event":"claude_execution_complete","duration_ms":1e999}',
    ],
    ids=["tokens-400-digits", "tokens-5000-digits", "requests-400-digits", "lone-surrogate", "infinite"],
)
def test_one_bad_line_loses_nothing_else_read_in_the_same_poll(reg, rec, log, bad):
    follower = LogFollower(log, rec)
    with open(log, "a") as f:
        f.write(line() * 50 + bad + "\n" + line() * 49)
    assert follower.poll_once() == 99
    accepted, rejected = counts(reg)
    assert accepted == 99
    assert rejected <= 1  # a line over the conversion limit is not JSON we read: skipped, not counted
    generate_latest(reg)  # the scrape still renders


def test_deeply_nested_json_is_skipped(reg, rec, log):
    follower = LogFollower(log, rec)
    with open(log, "a") as f:
        f.write("[" * 100_000 + "]" * 100_000 + "\n" + line())
    assert follower.poll_once() == 1


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# (the line's bytes, whether it is a good event): junk too short to be an event, token counts in and out
# of range, agent names with and without lone surrogates.
_lines = st.one_of(
    st.binary(max_size=40).filter(lambda b: b"\n" not in b).map(lambda b: (b, False)),
    st.integers(min_value=-(10**30), max_value=10**30).map(
        lambda n: (line(input_tokens=n).rstrip("\n").encode(), 0 <= n <= 10**12)
    ),
    st.text(max_size=8).map(
        lambda t: (line(agent=t).rstrip("\n").encode("utf-8", "surrogatepass"), t != "" and _encodable(t))
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_lines, max_size=12))
def test_good_lines_are_all_counted_whatever_is_between_them(instrumented, tmp_path, lines):
    reg, rec = instrumented
    path = tmp_path / f"prop-{os.urandom(4).hex()}.log"
    path.write_bytes(b"")
    follower = LogFollower(path, rec)
    try:
        before = counts(reg)[0]
        with open(path, "ab") as f:
            f.write(b"".join(data + b"\n" for data, _ in lines))
        follower.poll_once()
        assert counts(reg)[0] - before == sum(good for _, good in lines)
        generate_latest(reg)
    finally:
        follower.stop()


# -- rotation under a writer that keeps writing (issue 18, rows 17 and 18) --------------------------------
# A file cut and regrown with lines identical to the old ones, and a file renamed and re-created while its
# writer still appends to the old one: every line written is ingested exactly once.

# Every line the same bytes: nothing in the file's content tells a cut and regrown file from an append.
LINE = (
    json.dumps({"event": "claude_execution_complete", "duration_ms": 10, "input_tokens": 1}) + "\n"
).encode()


def accepted(reg: CollectorRegistry) -> float:
    return counts(reg)[0]


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


def run(writer: Writer, follower: LogFollower, done: Callable[[], bool], handles: list[Any]) -> None:
    """Run the writer to its end, wait until the follower has ingested everything, stop both."""
    try:
        writer.start()
        writer.join(timeout=30)
        assert writer.error is None, writer.error
        assert wait_for(done, timeout=10)
    finally:
        follower.stop()
        for handle in handles:
            handle.close()


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
    run(writer, follower, lambda: accepted(reg) == 180, [handle])
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
    run(writer, follower, lambda: accepted(reg) == 130, handles)
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
