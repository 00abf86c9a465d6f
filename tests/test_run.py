"""``claude-exporter run -- python app.py``: an unchanged program, measured from outside.

The programs are written here into tmp_path; they use the real SDK against the fake API and know nothing
of claude-exporter. Metrics are read where a user would read them: from a real Pushgateway after the
program exits, or from the exporter port while it runs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from claude_exporter.cli.run import BOOTSTRAP_DIR
from claude_exporter.testing import Reply
from test_serve import exporter_command, free_port, http, poll, samples, value

pytestmark = pytest.mark.system

PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"
MODEL = "claude-haiku-4-5"

# A short-lived program: three requests (two succeed, one fails with a 500), then exit status 3.
BATCH_APP = """\
import sys
import anthropic

client = anthropic.Anthropic(base_url=sys.argv[1], api_key="sk-ant-test", max_retries=0)
messages = [{"role": "user", "content": "summarise the report"}]
for _ in range(3):
    try:
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=messages)
    except anthropic.InternalServerError:
        print("one request failed", file=sys.stderr)
sys.exit(3)
"""

# A long-lived program: one request, then it waits (bounded) for the test to say it may exit.
WAITING_APP = """\
import os, sys, time
import anthropic

base_url, ready, go = sys.argv[1:4]
client = anthropic.Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0)
client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
open(ready, "w").close()
deadline = time.monotonic() + 20
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.02)
"""


def run_exporter(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*exporter_command(), "run", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Pushgateway on a free loopback port."""
    if not Path(PUSHGATEWAY).exists():
        pytest.fail(f"{PUSHGATEWAY} is missing: apt-get install prometheus-pushgateway")
    log = tmp_path_factory.mktemp("pushgateway") / "pushgateway.log"
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                PUSHGATEWAY,
                f"--web.listen-address=127.0.0.1:{port}",
                f"--persistence.file={log.parent / 'pushgateway.data'}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return http("GET", f"{url}/-/ready")[0] == 200
            except OSError:
                return proc.poll() is not None  # exited: stop waiting, fail below

        assert poll(ready, timeout=10) and proc.poll() is None, log.read_text()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def script_batch(fake) -> None:
    fake.script(
        Reply(input_tokens=120, output_tokens=30, stop_reason="end_turn"),
        Reply(status=500),
        Reply(input_tokens=80, output_tokens=20, stop_reason="max_tokens"),
    )


def test_a_short_lived_program_pushes_its_final_metrics(tmp_path, fake_anthropic, pushgateway):
    app = tmp_path / "app.py"
    app.write_text(BATCH_APP)
    script_batch(fake_anthropic)

    done = run_exporter(
        "--pushgateway", pushgateway, "--job", "nightly-report", "--instance", "runner-1",
        "--", sys.executable, str(app), fake_anthropic.url,
    )  # fmt: skip

    assert done.returncode == 3, done.stderr  # the program's own status
    assert done.stderr.count("one request failed") == 1
    assert "claude-exporter" not in done.stderr  # no warnings: the push worked
    table = samples(pushgateway)
    group = {"job": "nightly-report", "instance": "runner-1"}
    labels = {**group, "agent": "default", "model": MODEL}
    assert value(table, "claude_requests_total", **labels, outcome="success") == 2
    assert value(table, "claude_requests_total", **labels, outcome="error") == 1
    assert value(table, "claude_tokens_total", **labels, type="input") == 200
    assert value(table, "claude_tokens_total", **labels, type="output") == 50
    assert (
        value(table, "claude_errors_total", **labels, error_type="InternalServerError", error_code="none")
        == 1
    )
    assert value(table, "claude_stop_reasons_total", **labels, stop_reason="max_tokens") == 1
    assert value(table, "claude_request_duration_seconds_count", **labels) == 3
    executions = {**group, "agent": "default", "task": "default"}
    assert value(table, "claude_executions_total", **executions, outcome="success") == 2
    assert value(table, "claude_executions_total", **executions, outcome="error") == 1
    assert value(table, "push_time_seconds", **group) > 0


def test_the_default_instance_is_host_and_pid_and_the_config_applies(tmp_path, fake_anthropic, pushgateway):
    app = tmp_path / "app.py"
    app.write_text(BATCH_APP)
    config = tmp_path / "claude-exporter.yaml"
    config.write_text("monitoring:\n  reporter: {}\nexporter:\n  default_agent: reporter\n")
    script_batch(fake_anthropic)
    proc = subprocess.Popen(
        [*exporter_command(), "run", "--config", str(config), "--pushgateway", pushgateway,
         "--", sys.executable, str(app), fake_anthropic.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 3, err

    # run replaces itself with the program (exec), so the program's pid is the one started here.
    group = {"job": "claude-exporter", "instance": f"{socket.gethostname()}:{proc.pid}"}
    table = samples(pushgateway)
    labels = {**group, "agent": "reporter", "model": MODEL}
    assert value(table, "claude_requests_total", **labels, outcome="success") == 2
    assert value(table, "claude_requests_total", **labels, outcome="error") == 1


def test_an_unchanged_program_is_scraped_while_it_runs(tmp_path, fake_anthropic):
    app = tmp_path / "app.py"
    app.write_text(WAITING_APP)
    ready, go = tmp_path / "ready", tmp_path / "go"
    fake_anthropic.script(Reply(input_tokens=9, output_tokens=4))
    port = free_port()
    proc = subprocess.Popen(
        [*exporter_command(), "run", "--port", str(port),
         "--", sys.executable, str(app), fake_anthropic.url, str(ready), str(go)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert poll(lambda: ready.exists() or proc.poll() is not None, timeout=90)
        assert proc.poll() is None, proc.communicate(timeout=5)
        url = f"http://127.0.0.1:{port}"
        table = samples(url)
        labels = {"agent": "default", "model": MODEL}
        assert value(table, "claude_requests_total", **labels, outcome="success") == 1
        assert value(table, "claude_tokens_total", **labels, type="input") == 9
        assert value(table, "claude_tokens_total", **labels, type="output") == 4
        executions = {"agent": "default", "task": "default"}
        assert value(table, "claude_executions_total", **executions, outcome="success") == 1
        status, body = http("GET", f"{url}/health/claude-agent")
        assert status == 200
        assert json.loads(body)["agents"]["default"]["executions"] == 1
        go.touch()
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert err == ""  # nothing added to the program's output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)


def test_an_existing_sitecustomize_still_runs(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("import os\nos.environ['THEIR_SITECUSTOMIZE'] = 'ran'\n")
    probe = (
        "import json, os, sys, claude_exporter\n"
        "print(json.dumps({'theirs': os.environ.get('THEIR_SITECUSTOMIZE'),"
        " 'instrumented': claude_exporter.is_instrumented(),"
        " 'bootstrap_on_path': any('_bootstrap' in p for p in sys.path)}))\n"
    )
    done = run_exporter("--port", "0", "--", sys.executable, "-c", probe, env={"PYTHONPATH": str(theirs)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"theirs": "ran", "instrumented": True, "bootstrap_on_path": False}


def test_exit_statuses_and_a_pushgateway_that_is_down(tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    done = run_exporter("--pushgateway", down, "--", sys.executable, "-c", "import sys; sys.exit(7)")
    assert done.returncode == 7
    assert "claude-exporter: could not push metrics to" in done.stderr  # a warning, not a new status

    assert run_exporter("--", "claude-exporter-no-such-command").returncode == 127
    assert run_exporter().returncode == 2  # no command at all
    bad = tmp_path / "bad.yaml"
    bad.write_text("monitoring: [1]\n")
    done = run_exporter("--config", str(bad), "--", sys.executable, "-c", "print('ran')")
    assert done.returncode == 2
    assert "ran" not in done.stdout


def test_the_bootstrap_directory_holds_the_sitecustomize():
    assert (BOOTSTRAP_DIR / "sitecustomize.py").is_file()
    # Started by hand (PYTHONPATH and the variables alone), without the run command.
    done = subprocess.run(
        [sys.executable, "-c", "import claude_exporter; print(claude_exporter.is_instrumented())"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(BOOTSTRAP_DIR), "CLAUDE_EXPORTER_PORT": "0"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
