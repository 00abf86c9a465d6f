"""``serve --tail`` under what log files really do: rewritten within one poll, NUL holes, other encodings,
hostile lines. Each test reproduces a finding of issue 9 (section 8, and 1-2 through the tail); the
property test checks that no line costs another line its place."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from claude_exporter.ingest.tail import LogFollower
from conftest import val
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
