"""pytest plugin loaded in both runs (bare and shim): one JSON line per test phase, keyed by node id.

Exact node ids are what the comparison needs; junit XML only gives a dotted class name. Only the process
that sees every report writes: the xdist controller, or pytest itself without xdist.
"""

from __future__ import annotations

import json
import os
from typing import IO, Any

import pytest

__all__ = ["pytest_collectreport", "pytest_configure", "pytest_runtest_logreport", "pytest_unconfigure"]

_out: list[IO[str]] = []


def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get("SDK_SUITE_OUTCOMES")
    if path and not hasattr(config, "workerinput"):  # xdist workers carry `workerinput`
        _out.append(open(path, "w", encoding="utf-8"))  # noqa: SIM115 (closed in pytest_unconfigure)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _out:
        _out.pop().close()


def _message(report: Any) -> str:
    if report.passed:
        return ""
    if report.skipped and isinstance(report.longrepr, tuple):  # (path, line, reason)
        return str(report.longrepr[2])
    text = str(getattr(report, "longreprtext", "") or report.longrepr or "")
    lines = [line for line in text.splitlines() if line.strip()]
    # The first "E   ..." line names the exception and the assertion; later ones are diff details.
    # Without one (xdist crash reports, collection errors), the last line says most.
    errors = [line for line in lines if line.startswith("E ")]
    return (errors[0] if errors else lines[-1] if lines else "")[:300]


def _write(nodeid: str, when: str, outcome: str, message: str, seconds: float = 0.0) -> None:
    if _out:
        entry = {"nodeid": nodeid, "when": when, "outcome": outcome, "message": message, "seconds": seconds}
        # One write per line, flushed: the runner reads the file while the run goes on, for progress.
        _out[0].write(json.dumps(entry) + "\n")
        _out[0].flush()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    outcome: str = report.outcome
    if hasattr(report, "wasxfail"):
        outcome = "xfailed" if report.skipped else "xpassed"
    _write(report.nodeid, report.when, outcome, _message(report), report.duration)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _write(report.nodeid, "collect", "failed", _message(report))
