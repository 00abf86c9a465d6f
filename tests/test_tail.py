"""The log follower behind ``serve --tail``: driven poll by poll on real files, like ``tail -F``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from claude_exporter.ingest.tail import MAX_LINE, LogFollower
from conftest import val, wait_for
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.unit


def complete(duration_ms: int = 1000, input_tokens: int = 10, output_tokens: int = 5, **extra: Any) -> str:
    """A seed-shaped success line."""
    event = {
        "event": "claude_execution_complete",
        "execution_id": "e-1",
        "duration_ms": duration_ms,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "stop_reason": "end_turn",
        "timestamp": "2026-01-01T00:00:00.000Z",
        **extra,
    }
    return json.dumps(event) + "\n"


def error(error_type: str = "RateLimitError", duration_ms: int = 20) -> str:
    event = {
        "event": "claude_execution_error",
        "execution_id": "e-2",
        "error_type": error_type,
        "error_message": "429 rate limited",
        "duration_ms": duration_ms,
    }
    return json.dumps(event) + "\n"


def append(path: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    with open(path, "ab") as f:
        f.write(data)


def counts(reg: CollectorRegistry) -> tuple[float, float]:
    """(accepted, rejected) of claude_exporter_events_total{source="tail"}."""
    return (
        val(reg, "claude_exporter_events_total", source="tail", result="accepted"),
        val(reg, "claude_exporter_events_total", source="tail", result="rejected"),
    )


def requests(reg: CollectorRegistry, outcome: str = "success", agent: str = "default") -> float:
    return val(reg, "claude_requests_total", agent=agent, model="unknown", outcome=outcome)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "agent.log"
    path.write_text("")
    return path


@pytest.fixture
def rec(instrumented: tuple[CollectorRegistry, Any]) -> Any:
    return instrumented[1]


def test_starts_at_the_end_and_reads_what_is_appended(reg, rec, log):
    append(log, complete() + complete())
    follower = LogFollower(log, rec)
    assert follower.poll_once() == 0
    append(log, complete(input_tokens=7, output_tokens=3) + error())

    assert follower.poll_once() == 2
    assert counts(reg) == (2, 0)
    assert requests(reg) == 1
    assert requests(reg, "error") == 1
    assert val(reg, "claude_tokens_total", agent="default", model="unknown", type="input") == 7
    assert val(reg, "claude_tokens_total", agent="default", model="unknown", type="output") == 3
    assert (
        val(
            reg,
            "claude_errors_total",
            agent="default",
            model="unknown",
            error_type="RateLimitError",
            error_code="none",
        )
        == 1
    )
    assert val(reg, "claude_request_duration_seconds_sum", agent="default", model="unknown") == 1.02
    assert follower.poll_once() == 0  # nothing new, nothing counted twice
    assert counts(reg) == (2, 0)
    follower.stop()


def test_from_start_reads_the_existing_lines(reg, rec, log):
    append(log, complete() + complete(agent="billing", task="invoice"))
    follower = LogFollower(log, rec, from_start=True)
    assert follower.poll_once() == 2
    assert requests(reg) == 1
    assert val(reg, "claude_executions_total", agent="billing", task="invoice", outcome="success") == 1
    follower.stop()


def test_a_partial_last_line_waits_for_its_newline(reg, rec, log):
    follower = LogFollower(log, rec)
    line = complete()
    append(log, line[:25])
    assert follower.poll_once() == 0
    append(log, line[25:-1])
    assert follower.poll_once() == 0
    assert counts(reg) == (0, 0)
    append(log, "\n")
    assert follower.poll_once() == 1
    assert counts(reg) == (1, 0)
    follower.stop()


def test_other_output_is_ignored_and_bad_events_are_counted_rejected(reg, rec, log):
    follower = LogFollower(log, rec)
    append(
        log,
        "Server listening on :3000\n"
        "\n"
        "   at Object.<anonymous> (/app/index.js:12:3)\n"
        '{"level": "info", "msg": "not an event of ours"}\n'
        '["a", "list"]\n'
        "42\n"
        '{"event": "user_signed_up", "duration_ms": 3}\n'
        '{"event": "claude_execution_complete", "duration_ms": "slow"}\n'  # ours, bad field: rejected
        '{"event": "claude_execution_error", "duration_ms": 5}\n'  # ours, error_type missing: rejected
        '{"event": "claude_execution_complete", "duration_ms": 12, "input_tokens": -1}\n',
    )
    append(log, b"\xff\xfe not utf-8\n" + complete().encode())

    assert follower.poll_once() == 1
    assert counts(reg) == (1, 3)
    assert requests(reg) == 1
    assert follower.rejected == 3
    follower.stop()


def test_rotation_by_rename_reads_the_old_file_to_its_end_then_the_new_one(reg, rec, log):
    follower = LogFollower(log, rec, drain_grace=0)
    append(log, complete())
    assert follower.poll_once() == 1
    # logrotate's default: the file is renamed (the writer may still append to it) and a new one created.
    rotated = log.with_name("agent.log.1")
    os.rename(log, rotated)
    append(rotated, complete())
    assert follower.poll_once() == 1  # the renamed file is still followed while no new one exists
    append(rotated, error() + '{"event": "claude_execution_complete", "duration_ms": 7}')  # no newline
    append(log, complete() + complete())

    assert follower.poll_once() == 3  # the old file's end, then the new
    assert follower.draining == 1
    # Unchanged for drain_grace (0 here): finished, with its unterminated last line.
    assert follower.poll_once() == 1
    assert follower.draining == 0
    assert counts(reg) == (6, 0)
    assert requests(reg) == 5
    assert requests(reg, "error") == 1
    append(log, complete())
    assert follower.poll_once() == 1
    assert counts(reg) == (7, 0)
    follower.stop()


def test_rotation_by_delete_and_recreate(reg, rec, log):
    follower = LogFollower(log, rec)
    append(log, complete())
    assert follower.poll_once() == 1
    log.unlink()
    assert follower.poll_once() == 0
    append(log, complete() + error())
    assert follower.poll_once() == 2
    assert counts(reg) == (3, 0)
    follower.stop()


def test_truncation_restarts_from_the_beginning(reg, rec, log):
    follower = LogFollower(log, rec)
    append(log, complete() * 3)
    assert follower.poll_once() == 3
    # copytruncate: same file, cut to zero, then written again (shorter than before).
    with open(log, "r+b") as f:
        f.truncate(0)
    append(log, error())
    assert follower.poll_once() == 1
    assert counts(reg) == (4, 0)
    assert requests(reg, "error") == 1
    follower.stop()


def test_a_file_that_appears_later_is_read_from_its_start(reg, rec, tmp_path):
    path = tmp_path / "later.log"
    follower = LogFollower(path, rec)
    assert follower.poll_once() == 0
    append(path, complete() + complete())
    assert follower.poll_once() == 2
    follower.stop()


def test_an_over_long_line_is_dropped_and_the_next_one_read(reg, rec, log):
    follower = LogFollower(log, rec)
    append(log, "x" * (MAX_LINE + 10))
    assert follower.poll_once() == 0
    append(log, "y" * 100 + "\n" + complete())
    assert follower.poll_once() == 1
    assert counts(reg) == (1, 0)
    follower.stop()


def test_the_thread_follows_until_stopped(reg, rec, log):
    follower = LogFollower(log, rec).start(interval=0.02)
    try:
        append(log, complete() + error())
        assert wait_for(lambda: counts(reg) == (2, 0), timeout=5)
        os.rename(log, log.with_name("agent.log.1"))
        append(log, complete())
        assert wait_for(lambda: counts(reg) == (3, 0), timeout=5)
    finally:
        follower.stop()
    append(log, complete())
    assert follower.poll_once() == 0  # stopped for good
    assert counts(reg) == (3, 0)


def test_a_big_backlog_is_read_in_bounded_steps(reg, rec, log, monkeypatch):
    monkeypatch.setattr("claude_exporter.ingest.tail._MAX_READ", 1000)
    append(log, complete() * 30)  # about 6 kB
    follower = LogFollower(log, rec, from_start=True)
    polls = [follower.poll_once()]
    while follower.behind and len(polls) < 100:
        polls.append(follower.poll_once())
    assert len(polls) > 3
    assert max(polls) < 30
    assert sum(polls) == 30
    assert counts(reg) == (30, 0)
    # Rotation is still noticed once the old file has been read to its end.
    os.rename(log, log.with_name("agent.log.1"))
    append(log, complete())
    assert follower.poll_once() == 1
    follower.stop()
