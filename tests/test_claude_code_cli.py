"""The real Claude Code CLI (``@anthropic-ai/claude-code``, pinned in tests/claude_code/package-lock.json)
run several times in parallel with ``claude -p`` against the fake API, exporting its telemetry to a real
``claude-exporter serve`` over http/json and http/protobuf, with its ``http`` hooks pointed at the same
server; one scrape then shows exactly the requests, tokens, cost, errors, retries, tool results and
executions the fake served.

Node and npm are required (a missing one fails the test: CI must provide them); ``make test`` installs the
CLI with ``npm ci``, and the fixture does too when it is missing. Each CLI gets a throwaway HOME and
working directory under tmp_path and only the environment it needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from claude_exporter.testing import FakeAnthropic, Reply
from conftest import expected_cost
from test_serve import poll, samples, serving, value

pytestmark = pytest.mark.system

CLI_DIR = Path(__file__).parent / "claude_code"
MODEL = "claude-sonnet-4-5"
AGENT = "cc-fleet"
TOKEN = "cli-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _version(path: Path, key: str) -> str | None:
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    return str(doc["packages"][key]["version"] if key else doc["version"])


@pytest.fixture(scope="module")
def claude() -> str:
    """The pinned ``claude`` binary, installed with ``npm ci`` when missing or not the locked version."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.fail("node and npm are required for the Claude Code CLI tests (install Node.js)")
    locked = _version(CLI_DIR / "package-lock.json", "node_modules/@anthropic-ai/claude-code")
    manifest = CLI_DIR / "node_modules" / "@anthropic-ai" / "claude-code" / "package.json"
    if _version(manifest, "") != locked:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CLI_DIR,
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    binary = CLI_DIR / "node_modules" / ".bin" / "claude"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert version.stdout.startswith(f"{locked} "), (version.stdout, version.stderr)
    return str(binary)


def bash_use(use_id: str, command: str) -> Reply:
    return Reply(
        content=[{"type": "tool_use", "id": use_id, "name": "Bash", "input": {"command": command}}],
        stop_reason="tool_use",
        input_tokens=60,
        output_tokens=15,
    )


@dataclass(frozen=True)
class Session:
    """One ``claude -p`` run: its protocol and the replies the fake serves it (its own keyed queue)."""

    key: str
    protocol: str
    replies: tuple[Reply, ...]
    retries: int = 2
    gzip: bool = False

    def served(self) -> list[Reply]:
        return [reply for reply in self.replies if not reply.is_error]


SESSIONS = (
    Session(
        "plain-json",
        "http/json",
        (
            Reply(
                input_tokens=100, output_tokens=20, cache_read_input_tokens=7, cache_creation_input_tokens=5
            ),
        ),
    ),
    Session("plain-proto", "http/protobuf", (Reply(input_tokens=40, output_tokens=8),), gzip=True),
    Session(
        "bash-ok",
        "http/json",
        (bash_use("toolu_ok", "echo hi-from-bash"), Reply(input_tokens=90, output_tokens=12)),
    ),
    Session(
        "bash-fails",
        "http/protobuf",
        (bash_use("toolu_fail", "ls missing-dir"), Reply(input_tokens=91, output_tokens=13)),
    ),
    Session(
        "retry-429",
        "http/json",
        (Reply(status=429, retry_after=0.01), Reply(input_tokens=11, output_tokens=3)),
    ),
    Session(
        "overloaded", "http/protobuf", (Reply(status=529), Reply(status=529), Reply(status=529)), retries=2
    ),
)


def cli_env(session: Session, home: Path, fake: FakeAnthropic, exporter: str) -> dict[str, str]:
    compression = {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"} if session.gzip else {}
    return {
        **compression,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": fake.url,
        "ANTHROPIC_API_KEY": "sk-ant-test-key",
        "ANTHROPIC_CUSTOM_HEADERS": f"X-Fake-Key: {session.key}",
        "CLAUDE_CODE_MAX_RETRIES": str(session.retries),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": session.protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": exporter,
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer {TOKEN}",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_LOGS_EXPORT_INTERVAL": "500",
        "OTEL_RESOURCE_ATTRIBUTES": f"agent={AGENT}",
        "HOOK_TOKEN": TOKEN,
    }


def write_settings(home: Path, exporter: str, agent: str = AGENT) -> None:
    """Claude Code's user settings: both tool hooks POST to the exporter (the second channel), and the Stop
    and SessionEnd hooks, which say when a turn is over."""
    hook = {
        "type": "http",
        "url": f"{exporter}/v1/hooks?agent={agent}",
        "headers": {"Authorization": "Bearer $HOOK_TOKEN"},
        "allowedEnvVars": ["HOOK_TOKEN"],
        "timeout": 10,
    }
    hooks: dict[str, Any] = {
        name: [{"matcher": "*", "hooks": [hook]}] for name in ("PostToolUse", "PostToolUseFailure")
    }
    hooks.update({name: [{"hooks": [hook]}] for name in ("Stop", "SessionEnd")})
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / "settings.json").write_text(json.dumps({"hooks": hooks}))


def run_all(
    claude: str, tmp_path: Path, fake: FakeAnthropic, exporter: str
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every session's ``claude -p`` at once; their exit status, standard output and error."""
    command = [claude, "-p", "do the task", "--model", MODEL, "--allowedTools", "Bash(echo:*) Bash(ls:*)"]
    procs: dict[str, subprocess.Popen[str]] = {}
    with contextlib.ExitStack() as stack:
        for session in SESSIONS:
            home, work = tmp_path / f"home-{session.key}", tmp_path / f"work-{session.key}"
            write_settings(home, exporter)
            work.mkdir()
            out = stack.enter_context(open(tmp_path / f"{session.key}.out", "w"))
            err = stack.enter_context(open(tmp_path / f"{session.key}.err", "w"))
            env = cli_env(session, home, fake, exporter)
            procs[session.key] = subprocess.Popen(
                command, cwd=work, env=env, stdout=out, stderr=err, text=True
            )
        try:
            codes = {key: proc.wait(timeout=120) for key, proc in procs.items()}
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
    return {
        key: subprocess.CompletedProcess(
            command, code, (tmp_path / f"{key}.out").read_text(), (tmp_path / f"{key}.err").read_text()
        )
        for key, code in codes.items()
    }


def expected_figures() -> dict[str, float]:
    served = [reply for session in SESSIONS for reply in session.served()]
    return {
        "success": len(served),
        "input": sum(r.input_tokens for r in served),
        "output": sum(r.output_tokens for r in served),
        "cache_read": sum(r.cache_read_input_tokens for r in served),
        "cache_creation": sum(r.cache_creation_input_tokens for r in served),
        "cost": sum(
            expected_cost(
                MODEL,
                input=r.input_tokens,
                output=r.output_tokens,
                cache_5m=r.cache_creation_input_tokens,
                cache_read=r.cache_read_input_tokens,
            )
            for r in served
        ),
    }


def figures(table: Mapping[Any, float]) -> dict[str, float]:
    labels = {"agent": AGENT, "model": MODEL}
    return {
        "success": value(table, "claude_requests_total", **labels, outcome="success"),
        **{
            kind: value(table, "claude_tokens_total", **labels, type=kind)
            for kind in ("input", "output", "cache_read", "cache_creation")
        },
        "cost": value(table, "claude_cost_usd_total", **labels),
    }


def test_parallel_claude_code_sessions_become_exact_metrics(claude, tmp_path):
    config = tmp_path / "exporter.yaml"
    config.write_text(
        "monitoring:\n"
        f"  {AGENT}:\n"
        "    sampling_rate: 1.0\n"
        "exporter:\n"
        "  otlp:\n"
        "    enabled: true\n"
        "    turn_idle_seconds: 30\n"
        # A Stop hook's turn waits this long for the CLI's last export batch (every 500 ms here).
        "    hook_join_seconds: 2\n"
    )
    env = {"CLAUDE_EXPORTER_TOKEN": TOKEN}
    with (
        FakeAnthropic() as fake,
        serving("--config", str(config), "--port", "0", workdir=tmp_path, env=env) as srv,
    ):
        for session in SESSIONS:
            fake.script(*session.replies, key=session.key)
        results = run_all(claude, tmp_path, fake, srv.url)
        for key, result in results.items():
            expected_code = 1 if key == "overloaded" else 0
            assert result.returncode == expected_code, (key, result.stdout, result.stderr)
        assert all(fake.pending(session.key) == 0 for session in SESSIONS)  # every scripted reply served
        want = expected_figures()

        def arrived() -> bool:
            table = samples(srv.url, AUTH)
            return (
                figures(table)["success"] >= want["success"]
                and value(table, "claude_executions_total", agent=AGENT, task="default", outcome="error") >= 1
                and value(table, "claude_executions_total", agent=AGENT, task="default", outcome="success")
                >= len(SESSIONS) - 1
            )

        assert poll(arrived, timeout=20)
        table = samples(srv.url, AUTH)
        got = figures(table)
        assert got == {**want, "cost": pytest.approx(want["cost"], rel=1e-9)}
        labels = {"agent": AGENT, "model": MODEL}
        # The 529s: one failed request after two retries; the 429 that was retried and then answered is
        # one successful request (Claude Code 2.1.328 reports nothing of a retry that succeeded).
        assert value(table, "claude_requests_total", **labels, outcome="error") == 1
        assert (
            value(table, "claude_errors_total", **labels, error_type="OverloadedError", error_code="none")
            == 1
        )
        assert value(table, "claude_retries_total", **labels, reason="529", error_code="none") == 2
        assert len([r for r in fake.requests if r.key == "retry-429"]) == 2
        # Bash: one success, one non-zero exit; each counted once though both the event and the hook came.
        assert (
            value(table, "claude_code_blocks_executed_total", **labels, tool="Bash", outcome="success") == 1
        )
        assert (
            value(table, "claude_code_blocks_executed_total", **labels, tool="Bash", outcome="nonzero_exit")
            == 1
        )
        assert (
            value(table, "claude_code_tool_results_total", agent=AGENT, tool="Bash", outcome="success") == 1
        )
        assert (
            value(table, "claude_code_tool_results_total", agent=AGENT, tool="Bash", outcome="failure") == 1
        )
        # Two tool hooks, a Stop and a SessionEnd hook per session but the failed one, which sends no Stop.
        hooks = 2 + 2 * len(SESSIONS) - 1
        assert value(table, "claude_exporter_events_total", source="hooks", result="accepted") == hooks
        # Every run is a session and one turn (an execution); the overloaded one failed.
        assert value(table, "claude_code_sessions_total", agent=AGENT) == len(SESSIONS)
        assert (
            value(table, "claude_executions_total", agent=AGENT, task="default", outcome="success")
            == len(SESSIONS) - 1
        )
        assert value(table, "claude_executions_total", agent=AGENT, task="default", outcome="error") == 1
        assert value(table, "claude_agent_info", agent=AGENT, source="claude_code") == 1
        assert value(table, "claude_exporter_events_total", source="otlp", result="rejected") == 0
        # Identities never become labels.
        status_line = json.dumps([sorted(labels) for _, labels in table])
        session_ids = {r.headers.get("x-claude-code-session-id") for r in fake.requests}
        assert session_ids and all(sid and sid not in status_line for sid in session_ids)
        assert srv.stop()[0] == 0
