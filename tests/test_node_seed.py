"""The seed's JavaScript agent (``tests/node/seed.js`` with ``@anthropic-ai/sdk``) against the fake API, its
console.log lines turned into metrics by ``claude-exporter serve``: once through ``--tail`` on its stdout,
once through ``POST /v1/events`` with the same lines.

Node and npm are required (a missing one fails the test: CI must provide them). The SDK is installed with
``npm ci`` from the committed package-lock.json into tests/node/node_modules when it is not there yet.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from claude_exporter.testing import Reply
from test_serve import SEED_CONFIG, delta, poll, post_events, samples, serving

pytestmark = pytest.mark.system

NODE_DIR = Path(__file__).parent / "node"
AGENT = "claude_code_executor"  # the seed config's agent, made the default for events that name none


def _locked_sdk_version() -> str:
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    return str(lock["packages"]["node_modules/@anthropic-ai/sdk"]["version"])


def _installed_sdk_version() -> str | None:
    manifest = NODE_DIR / "node_modules" / "@anthropic-ai" / "sdk" / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the locked SDK installed next to seed.js."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are required for the seed's JavaScript test (install Node.js >= 18)")
    if _installed_sdk_version() != _locked_sdk_version():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            check=False,
            capture_output=True,
            text=True,
            timeout=240,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        assert _installed_sdk_version() == _locked_sdk_version()
    return node


def run_seed(node: str, base_url: str, count: int, stdout: Path) -> int:
    """``node seed.js BASE_URL COUNT`` with its standard output appended to ``stdout``."""
    with open(stdout, "ab") as out:
        done = subprocess.run(
            [node, "seed.js", base_url, str(count)],
            cwd=NODE_DIR,
            check=False,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    assert done.stderr == "", done.stderr  # no SDK warnings, no crash
    return done.returncode


def check_metrics(
    before: dict[tuple[str, frozenset[Any]], float],
    after: dict[tuple[str, frozenset[Any]], float],
    lines: list[dict[str, Any]],
) -> None:
    """The metrics grew by exactly what the seed's lines say."""
    labels = {"agent": AGENT, "model": "unknown"}  # the seed's lines name no model

    def grew(name: str, **more: str) -> float:
        return delta(before, after, name, **labels, **more)

    assert grew("claude_requests_total", outcome="success") == 3
    assert grew("claude_requests_total", outcome="error") == 2
    assert grew("claude_tokens_total", type="input") == 120 + 80 + 7
    assert grew("claude_tokens_total", type="output") == 45 + 20 + 3
    assert grew("claude_errors_total", error_type="InternalServerError", error_code="none") == 1
    assert grew("claude_errors_total", error_type="OverloadedError", error_code="none") == 1
    assert grew("claude_stop_reasons_total", stop_reason="end_turn") == 2
    assert grew("claude_stop_reasons_total", stop_reason="max_tokens") == 1
    assert grew("claude_request_duration_seconds_count") == 5
    seconds = sum(line["duration_ms"] for line in lines) / 1000.0
    assert grew("claude_request_duration_seconds_sum") == pytest.approx(seconds, abs=1e-9)
    executions = {"agent": AGENT, "task": "default"}
    assert delta(before, after, "claude_executions_total", **executions, outcome="success") == 3
    assert delta(before, after, "claude_executions_total", **executions, outcome="error") == 2
    assert delta(before, after, "claude_execution_tokens_sum", **executions, type="input") == 207


def test_the_seeds_javascript_lines_become_metrics(tmp_path, node, fake_anthropic):
    config = tmp_path / "claude-exporter.yaml"
    config.write_text(SEED_CONFIG + f"exporter:\n  default_agent: {AGENT}\n")
    log = tmp_path / "agent.log"
    log.write_text("")
    fake_anthropic.script(
        Reply(input_tokens=120, output_tokens=45),
        Reply(input_tokens=80, output_tokens=20, stop_reason="max_tokens"),
        Reply(status=500),
        Reply(input_tokens=7, output_tokens=3),
        Reply(status=529),
    )

    with serving("--config", str(config), "--port", "0", "--tail", str(log), workdir=tmp_path) as server:
        start = samples(server.url)
        # Three runs of the agent, with the rest of a console around them.
        assert run_seed(node, fake_anthropic.url, 2, log) == 0
        with open(log, "a") as f:
            f.write("Listening on port 3000\n")
            f.write('{"level": "info", "msg": "cache warmed"}\n')  # JSON, not an event of ours
            f.write('{"event": "claude_execution_complete", "duration_ms": "slow"}\n')  # ours, bad: rejected
        assert run_seed(node, fake_anthropic.url, 1, log) == 1  # one failed execution
        assert run_seed(node, fake_anthropic.url, 2, log) == 1
        assert fake_anthropic.pending() == 0

        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"event"')]
        lines = [line for line in lines if "execution_id" in line]  # node's own lines
        assert [line["event"] for line in lines] == [
            "claude_execution_complete",
            "claude_execution_complete",
            "claude_execution_error",
            "claude_execution_complete",
            "claude_execution_error",
        ]
        assert [line.get("error_type") for line in lines][2::2] == ["InternalServerError", "OverloadedError"]
        assert {
            "execution_id",
            "duration_ms",
            "input_tokens",
            "output_tokens",
            "stop_reason",
            "timestamp",
        } <= (set(lines[0]))
        assert {"execution_id", "error_type", "error_message", "duration_ms"} <= set(lines[2])

        # Through --tail.
        def tailed() -> tuple[float, float]:
            now = samples(server.url)
            return (
                delta(start, now, "claude_exporter_events_total", source="tail", result="accepted"),
                delta(start, now, "claude_exporter_events_total", source="tail", result="rejected"),
            )

        assert poll(lambda: tailed() == (5, 1), timeout=10), tailed()
        after_tail = samples(server.url)
        check_metrics(start, after_tail, lines)

        # Through POST /v1/events: the same lines, the same metrics again.
        ndjson = "".join(json.dumps(line) + "\n" for line in lines)
        assert post_events(server.url, ndjson) == (200, {"accepted": 5})
        after_post = samples(server.url)
        check_metrics(after_tail, after_post, lines)
        assert (
            delta(after_tail, after_post, "claude_exporter_events_total", source="http", result="accepted")
            == 5
        )

        assert server.stop()[0] == 0
