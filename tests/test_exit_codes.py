"""One rule for how the long-running commands end (README, docs/reliability.md): Ctrl-C (SIGINT) exits 130,
SIGTERM exits 0 (a requested stop), ``demo`` takes SIGHUP as SIGTERM, and ``run`` exits with the program's
own status. Real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from lines import read_until

pytestmark = pytest.mark.system

EXPORTER = [sys.executable, "-m", "claude_exporter"]
# The demo without its Prometheus and Alertmanager (not on this PATH): test_demo_cli.py runs it with them.
BARE_PATH = str(Path(sys.executable).parent)


@contextmanager
def started(
    argv: list[str], ready: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """``argv`` running, once it has printed a line starting with ``ready``; killed at the end if still up."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}
    )
    try:
        read_until(proc, lambda line: line.startswith(ready))
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def stopped_by(proc: subprocess.Popen[str], signum: int) -> int:
    proc.send_signal(signum)
    proc.communicate(timeout=40)
    return proc.returncode


COMMANDS = {
    "serve": ([*EXPORTER, "serve", "--port", "0"], "claude-exporter serve: listening on", {}),
    "demo": ([*EXPORTER, "demo", "--port", "0"], "Press Ctrl-C", {"PATH": BARE_PATH}),
}


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)], ids=["SIGINT-130", "SIGTERM-0"]
)
def test_serve_exits_130_on_ctrl_c_and_0_on_sigterm(tmp_path, signum, status):
    # The demo's own codes (INT 130, TERM 0, HUP 0) are checked where it runs with its Prometheus and
    # Alertmanager: test_demo_cli.py::test_the_demo_stops_on_any_signal_at_any_moment_and_leaves_nothing.
    argv, ready, env = COMMANDS["serve"]
    with started(argv, ready, {**env, "TMPDIR": str(tmp_path)}) as proc:
        assert stopped_by(proc, signum) == status


def test_demo_under_nohup_keeps_running_through_sighup(tmp_path):
    # nohup's way: SIGHUP ignored before the exec, which the demo must leave as it found it.
    nohup = "import os, signal as s, sys; s.signal(s.SIGHUP, s.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"
    argv, ready, env = COMMANDS["demo"]
    with started([sys.executable, "-c", nohup, *argv], ready, {**env, "TMPDIR": str(tmp_path)}) as proc:
        proc.send_signal(signal.SIGHUP)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=40)
    assert "claude-exporter demo: stopping (SIGTERM)" in out
    assert proc.returncode == 0


PROGRAM = """
import signal, sys, time
if sys.argv[1] == "handles-sigterm":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(
    ("behaviour", "signum", "status"),
    [
        # An unhandled KeyboardInterrupt: Python ends by SIGINT itself, which the shell shows as 130.
        ("default", signal.SIGINT, -signal.SIGINT),
        ("default", signal.SIGTERM, -signal.SIGTERM),
        ("handles-sigterm", signal.SIGTERM, 7),
    ],
)
def test_run_exits_with_the_programs_own_status(tmp_path, behaviour, signum, status):
    app = tmp_path / "app.py"
    app.write_text(PROGRAM)
    argv = [*EXPORTER, "run", "--port", "0", "--", sys.executable, str(app), behaviour]
    with started(argv, "ready") as proc:
        assert stopped_by(proc, signum) == status
