"""pytest plugin for the SDK's own test suite: the whole session runs with ``claude_exporter.instrument()``.

Loaded with ``-p shim_plugin`` (``run.py`` puts this directory on PYTHONPATH). ``pytest_sessionstart``
runs before collection, so every client the SDK's tests build, even at module level, is built with the
shim on, as in an application that instruments at start-up. Under xdist each worker is its own session.

Before ``uninstrument()`` the plugin writes what the shim recorded (requests, internal errors) to
``$SDK_SUITE_SHIM_REPORT_DIR/<worker>.json``: the runner refuses a "shim" run in which the shim saw nothing,
since such a run proves nothing.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

__all__ = ["pytest_runtest_logstart", "pytest_sessionfinish", "pytest_sessionstart"]

# Sample names from the product contract (the exposition), not from the package's internals, so the
# plugin keeps working whatever the layout.
_COUNTED = ("claude_requests_total", "claude_exporter_internal_errors_total")


class _Faults(logging.Handler):
    """With SDK_SUITE_SHIM_DEBUG=1: the shim's swallowed faults (logged at DEBUG with a traceback),
    each tagged with the test that was running, appended to `<report dir>/<worker>.faults.log`."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.DEBUG)
        self.path = path
        self.test = "(no test)"

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(f"== {self.test}\n{self.format(record)}\n")


_faults: list[_Faults] = []


def _runs_tests(config: pytest.Config) -> bool:
    """False in an xdist controller, which only hands tests out to its workers."""
    return hasattr(config, "workerinput") or getattr(config.option, "dist", "no") == "no"


def pytest_sessionstart(session: pytest.Session) -> None:
    import claude_exporter

    if not _runs_tests(session.config):
        return
    report_dir = os.environ.get("SDK_SUITE_SHIM_REPORT_DIR")
    if report_dir and os.environ.get("SDK_SUITE_SHIM_DEBUG"):
        # Opt-in only: DEBUG on the package's logger may put the shim on another path (its event log).
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        handler = _Faults(Path(report_dir, f"{worker}.faults.log"))
        logging.getLogger("claude_exporter").addHandler(handler)
        logging.getLogger("claude_exporter").setLevel(logging.DEBUG)
        _faults.append(handler)
    claude_exporter.instrument()


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    for handler in _faults:
        handler.test = nodeid


def _totals() -> dict[str, float]:
    """Requests recorded, and the shim's swallowed faults by stage (`internal_errors:<stage>`)."""
    totals = dict.fromkeys(_COUNTED, 0.0)
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == _COUNTED[0]:
                totals[sample.name] += sample.value
            elif sample.name == _COUNTED[1] and sample.value:
                totals[sample.name] += sample.value
                key = f"internal_errors:{sample.labels.get('stage', '?')}"
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def pytest_sessionfinish(session: pytest.Session) -> None:
    import claude_exporter

    if not _runs_tests(session.config):
        return
    report_dir = os.environ.get("SDK_SUITE_SHIM_REPORT_DIR")
    if report_dir:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        payload = {"worker": worker, "instrumented": claude_exporter.is_instrumented(), **_totals()}
        Path(report_dir, f"{worker}.json").write_text(json.dumps(payload))
    claude_exporter.uninstrument()
    while _faults:
        logging.getLogger("claude_exporter").removeHandler(_faults.pop())
