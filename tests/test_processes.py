"""Processes and files (issue 9, sections 9 and 10): every child the CLI starts is stopped on SIGTERM,
SIGINT and normal exit, its temporary directory removed; no test writes outside its temporary directory;
one error style for the command line."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from claude_exporter import cli as cli_module
from claude_exporter.config import ConfigError, load_config
from conftest import ROOT, STARTED, data_outside_tmp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PROMETHEUS, ALERTMANAGER = "/usr/bin/prometheus", "/usr/bin/prometheus-alertmanager"


def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``: {pid: command name}."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if int(rest[1]) == pid and rest[0] != "Z":
            out[int(entry.name)] = name
    return out


def reap(proc: subprocess.Popen[str], kids: dict[int, str]) -> None:
    """Whatever the test found, leave nothing running: the demo, then any child it left behind."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in kids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_demo(tmp: Path, *extra: str) -> subprocess.Popen[str]:
    for binary in (PROMETHEUS, ALERTMANAGER):
        if not Path(binary).exists():
            pytest.fail(
                f"{binary} is missing: the demo starts it "
                "(apt-get install prometheus prometheus-alertmanager)"
            )
    tmp.mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "claude_exporter", "demo", "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp)},
    )  # fmt: skip


def wait_for_stack(proc: subprocess.Popen[str]) -> dict[int, str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if line.startswith("  alertmanager:"):
            break
        if not line and proc.poll() is not None:
            break
    else:
        pytest.fail("the demo never said its stack was up:\n" + "".join(seen))
    kids = children(proc.pid)
    assert {"prometheus", "prometheus-aler"} <= set(kids.values()), ("".join(seen), kids)
    # Keep reading what it prints: a full pipe would block the demo's next write, and so its exit.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return kids


# A demo stopped by a signal: tests/test_demo_cli.py (every signal, during start-up and while running).


@pytest.mark.system
def test_a_demo_that_ends_by_itself_leaves_nothing_behind(tmp_path):
    tmp = tmp_path / "tmp"
    proc = start_demo(tmp, "--duration", "1")
    kids: dict[int, str] = {}
    try:
        kids = wait_for_stack(proc)
        assert proc.wait(timeout=40) == 0
        left = [pid for pid in kids if alive(pid)]
    finally:
        reap(proc, kids)
    assert left == []
    assert list(tmp.iterdir()) == []


# -- one error style --------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``claude-exporter ARGS`` run in this process: (status, out, err)."""
    capsys.readouterr()
    status = cli_module.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("monitoring:\n  a:\n    sampling_rate: 2\n")
    return path


PROBLEM = "  monitoring.a.sampling_rate: must be a number from 0 to 1, got 2"


@pytest.mark.unit
@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--port", "0", "--duration", "1", "--config"],
        ["serve", "--port", "0", "--config"],
        ["rules", "--config"],
        ["check-config"],
        ["run", "--config"],
    ],
    ids=["demo", "serve", "rules", "check-config", "run"],
)
def test_a_bad_config_is_one_report_and_exit_2_for_every_command(capsys, bad_config, argv):
    command = argv[0]
    tail = ["--", sys.executable, "-c", "print('ran')"] if command == "run" else []
    status, out, err = cli(capsys, *argv, str(bad_config), *tail)
    assert status == 2, err
    assert err.splitlines() == [
        f"claude-exporter {command}: {bad_config}: 1 problem in the configuration:",
        PROBLEM,
    ]
    assert "ran" not in out


@pytest.mark.unit
@pytest.mark.parametrize("command", ["demo", "serve"])
def test_a_busy_port_is_one_line_naming_the_address_and_exit_1(capsys, command):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        extra = ["--duration", "1"] if command == "demo" else []
        status, _, err = cli(capsys, command, "--port", str(port), *extra)
    assert status == 1, err
    assert err == f"claude-exporter {command}: cannot listen on 127.0.0.1:{port}: Address already in use\n"


@pytest.mark.unit
@pytest.mark.parametrize(
    "command", ["serve --config", "rules --config", "check-config", "demo --duration 1 --config"]
)
def test_a_missing_config_file_is_named(capsys, tmp_path, command):
    missing = tmp_path / "nope.yaml"
    status, _, err = cli(capsys, *command.split(), str(missing))
    assert status == 2
    assert err == f"claude-exporter {command.split()[0]}: {missing}: no such file\n"


@pytest.mark.unit
def test_rules_output_that_cannot_be_written_is_exit_1_naming_the_file(capsys, tmp_path):
    target = tmp_path / "no-such-dir" / "rules.yml"
    status, _, err = cli(capsys, "rules", "-o", str(target))
    assert status == 1
    assert err == f"claude-exporter rules: {target}: No such file or directory\n"


@pytest.mark.unit
def test_an_empty_token_file_is_a_config_error(capsys, tmp_path):
    token = tmp_path / "token"
    token.write_text("\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"monitoring: {{}}\nexporter:\n  server:\n    token_file: {token}\n")
    status, _, err = cli(capsys, "serve", "--port", "0", "--config", str(config))
    assert status == 2
    assert err.splitlines() == [
        "claude-exporter serve: 1 problem in the configuration:",
        f"  exporter.server.token_file: {token} is empty",
    ]


@pytest.mark.unit
def test_the_docstring_states_the_exit_codes():
    doc = cli_module.__doc__ or ""
    assert "claude-exporter CMD: FILE: problem" in doc
    assert re.search(r"1 a failure while running", doc) and re.search(r"2 bad usage or a configuration", doc)


# -- isolation: no server binary a test starts writes outside the temporary directories --------------------


@pytest.mark.unit
def test_a_server_binary_must_keep_its_data_in_a_temporary_directory(tmp_path):
    """Every Prometheus, Alertmanager and Pushgateway a test starts keeps its data in a temporary directory
    (their defaults are /var/lib/prometheus/...): conftest's guard on subprocess.Popen fails the test that
    starts one otherwise, before the process exists. (No new files in the checkout is checked once the
    whole session finished, in conftest's pytest_sessionfinish.)"""
    assert data_outside_tmp(["prometheus", f"--storage.tsdb.path={tmp_path}/data"], str(ROOT)) is None
    assert data_outside_tmp(["/usr/bin/alertmanager", "--storage.path=data"], str(tmp_path)) is None
    assert "without --storage.tsdb.path" in str(data_outside_tmp(["prometheus"], str(tmp_path)))
    assert "outside the temporary directories" in str(
        data_outside_tmp(["prometheus-pushgateway", "--persistence.file=state"], str(ROOT))
    )
    with pytest.raises(AssertionError, match=r"without --storage\.path"):
        subprocess.Popen(["prometheus-alertmanager", "--version"])
    assert all(data_outside_tmp(argv, cwd) is None for argv, cwd in STARTED)


@pytest.mark.system
def test_a_real_process_prints_no_traceback_for_a_bad_config(bad_config):
    done = subprocess.run(
        [sys.executable, "-m", "claude_exporter", "serve", "--port", "0", "--config", str(bad_config)],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[1:] == [PROBLEM]


_bad_values = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True),
    st.text(max_size=10),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@pytest.mark.unit
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["sampling_rate", "retention_days", "metrics", "alerts", "code_tools", "nonsense"]),
    _bad_values,
    st.sampled_from(["check-config", "rules", "serve"]),
)
def test_any_bad_config_is_one_report_never_a_traceback(capsys, tmp_path_factory, key, value, command):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump({"monitoring": {"a": {key: value}}}))
    argv = [command, str(path)] if command == "check-config" else [command, "--config", str(path)]
    if command == "serve":
        argv += ["--port", "0"]
    try:
        load_config(path)
    except ConfigError:
        status, out, err = cli(capsys, *argv)
        assert status == 2
        assert err.startswith(f"claude-exporter {command}: {path}: ")
        assert "Traceback" not in err and out == ""
