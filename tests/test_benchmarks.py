"""The benchmarks' own checks, on tiny runs in the project's venv (no peers' venv, no figures asserted).

peers.py must flag a configuration that records nothing and report one that cannot start, rather than
time either silently; scrape.py must build the series it says it measures, without folding any, and
compare /metrics before and after the exposition writer on the same fleet.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.benchmark

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_peers_flags_silent_and_missing_configurations(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    run = _run(
        "peers.py", "--configs", "ours,passthrough,otel-metrics", "--rounds", "2", "--requests", "8",
        "--processes", "1", "--python", sys.executable, "--json", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())["rows"]

    ours = rows["ours"]
    assert not ours["recorded_nothing"] and ours["error"] is None
    for case in ("non-streaming", "50-event stream"):
        # overhead.py's reply: 12 input + 34 output + 5 cache read; the stream: 12 input + 45 output.
        assert ours["recorded"][case]["metric measurements"] == 1
        assert ours["cases"][case]["tokens"] is True
    assert ours["recorded"]["non-streaming"]["metric tokens"] == 51
    assert ours["recorded"]["50-event stream"]["metric tokens"] == 57
    assert len(rows["bare"]["cases"]["non-streaming"]) > 0  # the baseline was timed

    silent = rows["passthrough"]
    assert silent["recorded_nothing"] is True
    assert "RECORDED NOTHING" in run.stdout and "**nothing**" in run.stdout
    assert "passthrough" in run.stderr.splitlines()[-1]

    otel = rows["otel-metrics"]
    if not _installed("opentelemetry.instrumentation.anthropic"):
        assert otel["error"] and "ModuleNotFoundError" in otel["error"]
        assert otel["cases"] == {}
        assert "did not start" in run.stdout


def test_scrape_builds_the_series_it_measures(tmp_path: Path) -> None:
    out = tmp_path / "scrape.json"
    run = _run("scrape.py", "--sizes", "300", "--json", str(out))
    assert run.returncode == 0, run.stderr
    (size,) = json.loads(out.read_text())["sizes"]
    assert size["series"] >= 300
    assert size["overflowed"] == 0
    assert size["executions"] >= 2
    assert size["bytes_per_series"] > 0 and size["scrape_ms"] > 0


def test_scrape_fleets_time_both_paths_on_the_same_series(tmp_path: Path) -> None:
    out = tmp_path / "scrape.json"
    run = _run("scrape.py", "--fleets", "2x2x1s", "--repeat", "2", "--json", str(out))
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["sizes"] == []
    (fleet,) = result["fleets"]
    assert fleet["executions"] == 4 and fleet["streamed"] is True
    assert fleet["identical"] is True and fleet["overflowed"] == 0
    assert set(fleet["ms"]) >= {"before_metrics_om_gzip", "after_metrics_om_gzip", "after_metrics_text"}
    assert 0 < fleet["gzip_bytes"] < fleet["openmetrics_bytes"]
    assert "-> **" in run.stdout  # the before/after table
