"""A restarted ``claude-exporter serve`` and Claude Code's cumulative metrics (issue 19, finding 8): with
``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=cumulative`` every export carries each series' total
since the CLI started, and the CLI sends them again, in full, to the new process. With
``exporter.otlp.state_dir`` the new process knows each writer's last point and adds only what is new.

Real ``serve`` processes (SIGTERM and SIGKILL), sums shaped like the CLI's (``otlp_payloads.py``) over
HTTP, figures worked by hand: over both processes' lifetimes, the increments add up to the true totals.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from claude_exporter.ingest.otlp_state import FILE, StateError, read_writers, write_writers
from otlp_payloads import CUMULATIVE, T0, resource, sums_request
from test_serve import http, poll, samples, serving, value

AGENT = "claude-code"
MODEL = "claude-sonnet-4-5"
SECOND = 1_000_000_000


def config(tmp_path: Path, state: bool = True) -> Path:
    path = tmp_path / "exporter.yaml"
    otlp: dict[str, Any] = {"enabled": True, "usage_from": "metrics"}
    if state:
        otlp["state_dir"] = str(tmp_path / "state")
        (tmp_path / "state").mkdir(exist_ok=True)
    path.write_text(json.dumps({"monitoring": {}, "exporter": {"otlp": otlp}}))
    return path


def export(url: str, at: int, input_tokens: float) -> None:
    """What three CLI processes send at ``at``: a session each (started at T0) and the first one's input
    tokens, as cumulative totals."""
    points: list[tuple[str, dict[str, Any], int, int, float]] = [
        ("claude_code.session.count", {"session.id": f"s{n}"}, T0, at, 1.0) for n in range(3)
    ]
    points.append(
        (
            "claude_code.token.usage",
            {"session.id": "s0", "type": "input", "model": MODEL},
            T0,
            at,
            input_tokens,
        )
    )
    body = sums_request(points, temporality=CUMULATIVE, res=resource())
    status, answer = http("POST", f"{url}/v1/metrics", body, {"Content-Type": "application/x-protobuf"})
    assert status == 200, answer


def figures(url: str) -> tuple[float, float]:
    table = samples(url)
    return (
        value(table, "claude_code_sessions_total", agent=AGENT),
        value(table, "claude_tokens_total", agent=AGENT, model=MODEL, type="input"),
    )


@pytest.mark.system
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_a_restarted_serve_adds_only_what_is_new(tmp_path, stop):
    path = config(tmp_path)
    with serving("--config", str(path), "--port", "0", workdir=tmp_path) as first:
        export(first.url, T0 + SECOND, 1000)
        assert figures(first.url) == (3, 1000)
        if stop == "SIGTERM":
            assert first.stop()[0] == 0
        else:  # a crash: what was written after the batch is all there is
            state = tmp_path / "state" / FILE
            assert poll(lambda: state.exists() and len(read_writers(state)) == 4)
            first.proc.kill()
            first.proc.wait(timeout=10)
    with serving("--config", str(path), "--port", "0", workdir=tmp_path) as second:
        export(second.url, T0 + 2 * SECOND, 1500)  # the same totals again, and 500 more input tokens
        # Three sessions and 1,500 tokens over both lifetimes: 3 + 0 and 1,000 + 500.
        assert figures(second.url) == (0, 500)
        assert second.stop()[0] == 0


@pytest.mark.system
def test_without_a_state_dir_a_restart_counts_the_totals_again(tmp_path):
    # What the state_dir is for, and the README's advice (delta temporality) when there is none.
    path = config(tmp_path, state=False)
    for _ in range(2):
        with serving("--config", str(path), "--port", "0", workdir=tmp_path) as served:
            export(served.url, T0 + SECOND, 1000)
            assert figures(served.url) == (3, 1000)
            assert served.stop()[0] == 0


@pytest.mark.system
def test_a_state_file_that_cannot_be_read_is_counted_and_serve_goes_on(tmp_path):
    path = config(tmp_path)
    (tmp_path / "state" / FILE).write_text('{"version": 1, "writers": [["zz", 1, 2]]}')
    with serving("--config", str(path), "--port", "0", workdir=tmp_path) as served:
        export(served.url, T0 + SECOND, 1000)
        table = samples(served.url)
        assert value(table, "claude_exporter_internal_errors_total", stage="otlp_state") == 1
        assert figures(served.url) == (3, 1000)
        assert served.stop()[0] == 0
    assert "writers[0]: must be [32 hex digits" in served.stderr.read_text()
    assert len(read_writers(tmp_path / "state" / FILE)) == 4  # replaced by a good one at the stop


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not JSON"),
        ('{"version": 2, "writers": []}', "not a state file of version 1"),
        ('{"version": 1, "writers": [[1, 2]]}', "writers[0]: must be"),
        ('{"version": 1, "writers": [["' + "ab" * 16 + '", 1.5, 2]]}', "writers[0]: must be"),
        ('{"version": 1, "writers": [["' + "ab" * 16 + '", 1, -2]]}', "writers[0]: must be"),
    ],
)
def test_state_files_are_read_whole_or_refused_by_name(tmp_path, text, problem):
    path = tmp_path / FILE
    path.write_text(text)
    with pytest.raises(StateError, match=re.escape(problem)) as caught:
        read_writers(path)
    assert str(path) in str(caught.value)


@pytest.mark.unit
def test_state_files_round_trip(tmp_path):
    writers = [(bytes([n]) * 16, T0 + n, float(n) / 3) for n in range(50)]
    write_writers(tmp_path / FILE, writers)
    assert read_writers(tmp_path / FILE) == writers
    assert [p.name for p in tmp_path.iterdir()] == [FILE]  # no temporary file left behind


@pytest.mark.unit
def test_a_state_dir_not_made_yet_is_made_at_start(tmp_path):
    # As a data directory: the scenario matrix's restart double counted because the directory was missing
    # and every write failed ("No such file or directory").
    from claude_exporter.ingest.otlp_counting import Deltas
    from claude_exporter.ingest.otlp_state import WriterState

    faults: list[str] = []
    deltas = Deltas(100, on_evict=lambda: None)
    state = WriterState(str(tmp_path / "not" / "yet"), deltas, faults.append)
    deltas.changed = True
    state.save(force=True)
    assert faults == []
    assert read_writers(tmp_path / "not" / "yet" / FILE) == []
