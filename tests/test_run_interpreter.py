"""``claude-exporter run -- python ...`` runs the interpreter claude-exporter was installed with, not the
first ``python`` on ``PATH``: with the system Python first (no claude_exporter there), the program and the
Pythons it starts by name are still instrumented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

SYSTEM_PYTHON = Path("/usr/bin/python3")
# Prints whether this process is instrumented (the bootstrap's instrument() set the active recorder).
REPORT = (
    "from claude_exporter.recording.state import ACTIVE; print('instrumented', ACTIVE.recorder is not None)"
)


@pytest.fixture
def path_with_the_system_python_first(tmp_path: Path) -> str:
    """A PATH whose ``python`` and ``python3`` are the system's, which cannot import claude_exporter."""
    if not SYSTEM_PYTHON.exists():
        pytest.fail(f"{SYSTEM_PYTHON} is missing: this test needs a Python without claude_exporter")
    probe = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import claude_exporter"], capture_output=True, check=False
    )
    assert probe.returncode != 0, "the system Python imports claude_exporter: the test would prove nothing"
    first = tmp_path / "bin"
    first.mkdir()
    for name in ("python", "python3"):
        (first / name).symlink_to(SYSTEM_PYTHON)
    return os.pathsep.join([str(first), "/usr/bin", "/bin"])


def run(path: str, *command: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "claude_exporter", "run", "--port", "0", "--", *command]
    return subprocess.run(
        argv, check=False, env={**os.environ, "PATH": path}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("python", ["python", "python3"])
def test_python_in_the_command_is_the_interpreter_claude_exporter_runs_on(
    path_with_the_system_python_first, python
):
    done = run(path_with_the_system_python_first, python, "-c", REPORT)
    assert done.returncode == 0, done.stderr
    assert "instrumentation is off" not in done.stderr
    assert done.stdout == "instrumented True\n"


def test_pythons_the_program_starts_by_name_are_instrumented_too(path_with_the_system_python_first):
    child = f"import subprocess; subprocess.run(['python', '-c', {REPORT!r}], check=True)"
    done = run(path_with_the_system_python_first, "python", "-c", child)
    assert done.returncode == 0, done.stderr
    assert "instrumentation is off" not in done.stderr
    assert done.stdout == "instrumented True\n"
