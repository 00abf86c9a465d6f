"""A scenario matrix with the real Claude Code CLI (issue 19): the pinned npm CLI (tests/claude_code/) and
the one the Claude Agent SDK bundles, each run with ``claude -p`` against the fake API and exporting its
telemetry to a real ``claude-exporter serve``. Each scenario compares ``/metrics`` with what the fake served
(its ground truth: requests by outcome and model, tokens per kind, cost from the price table), exactly.

The scenarios of one run go at once (every CLI process in parallel, each scenario its own agent through
``OTEL_RESOURCE_ATTRIBUTES`` and its own reply queue through ``X-Fake-Key``), so the file costs about the
slowest scenario: the module fixture runs them, each test checks one scenario. ``serve`` restarts need a
server of their own and are two more tests.

Every home carries the Stop and SessionEnd hooks (as the README asks), which end turns; each scenario
failed on the exporter before issue 19's fixes, the six parallel processes and the delta restart excepted.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from claude_exporter.testing import FakeAnthropic, Reply
from conftest import expected_cost
from test_claude_code_cli import (
    claude,  # noqa: F401 - the pinned npm CLI, a module fixture
    write_settings,
)
from test_serve import free_port, poll, samples, serving, value

pytestmark = pytest.mark.system

MODEL = "claude-sonnet-4-5"
TOKEN = "scenario-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLIS = ("npm", "bundled")
PROTOCOL = {"npm": "http/json", "bundled": "http/protobuf"}


def text_and_bash(use_id: str, command: str) -> Reply:
    """A reply with text before its tool call: the CLI sends ``assistant_response`` for it."""
    return Reply(
        content=[
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": use_id, "name": "Bash", "input": {"command": command}},
        ],
        stop_reason="tool_use",
        input_tokens=300,
        output_tokens=25,
        cache_read_input_tokens=100,
    )


def sub_agent(use_id: str) -> Reply:
    """The main agent starts a general-purpose sub-agent on haiku, in the foreground."""
    task = {
        "description": "Check one thing",
        "prompt": "Say done.",
        "subagent_type": "general-purpose",
        "model": "haiku",
        "run_in_background": False,
    }
    return Reply(
        content=[{"type": "tool_use", "id": use_id, "name": "Agent", "input": task}],
        stop_reason="tool_use",
        input_tokens=400,
        output_tokens=40,
    )


@dataclass(frozen=True)
class Scenario:
    """Processes of one kind: the replies each process is served (its own queue), its extra environment."""

    name: str
    replies: tuple[Reply, ...]
    processes: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    exit_code: int = 0
    executions: tuple[int, int] = (1, 0)  # (success, error) per run of the CLI
    clis: tuple[str, ...] = CLIS


SCENARIOS = (
    Scenario(
        "text-before-tool",
        (text_and_bash("toolu_text1", "echo scenario"), Reply(input_tokens=420, output_tokens=30)),
    ),
    Scenario(
        "sub-agent",
        (
            sub_agent("toolu_agent1"),
            Reply(input_tokens=80, output_tokens=9),
            Reply(input_tokens=500, output_tokens=12),
        ),
        executions=(2, 0),  # the turn, and the sub-agent's work as an execution of its own inside it
    ),
    Scenario(
        "refusal",
        (
            Reply(
                text="",
                stop_reason="refusal",
                stop_details={"type": "refusal", "category": "cyber"},
                input_tokens=60,
                output_tokens=2,
            ),
        ),
    ),
    Scenario(
        "one-attempt-529",
        (Reply(status=529),),
        env={"CLAUDE_CODE_MAX_RETRIES": "0"},
        exit_code=1,
        executions=(0, 1),
    ),
    Scenario(
        "cache-1h",
        (
            Reply(
                input_tokens=50,
                output_tokens=10,
                cache_creation_input_tokens=3000,
                cache_creation_5m=1000,
                cache_creation_1h=2000,
                cache_read_input_tokens=500,
            ),
        ),
    ),
    Scenario(
        "no-session-id",
        (Reply(input_tokens=33, output_tokens=4),),
        processes=3,
        env={"OTEL_METRICS_INCLUDE_SESSION_ID": "false"},
    ),
    Scenario("six-parallel-npm", (Reply(input_tokens=21, output_tokens=5),), processes=3, clis=("npm",)),
    Scenario(
        "six-parallel-bundled", (Reply(input_tokens=22, output_tokens=6),), processes=3, clis=("bundled",)
    ),
)
# The same session three times: a first run, ``--continue``, ``--resume <session id>``.
CONTINUED = Scenario("continue-resume", (Reply(input_tokens=322, output_tokens=32),))


def bundled_cli() -> str | None:
    try:
        import claude_agent_sdk
    except ImportError:
        return None
    path = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    return str(path) if path.exists() else None


def agent_of(scenario: Scenario, cli: str) -> str:
    return f"{scenario.name}-{cli}"


def cli_env(
    cli: str, agent: str, key: str, home: Path, fake: FakeAnthropic, exporter: str, extra: Mapping[str, str]
) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": fake.url,
        "ANTHROPIC_API_KEY": "sk-ant-test-key",
        "ANTHROPIC_CUSTOM_HEADERS": f"X-Fake-Key: {key}",
        "CLAUDE_CODE_MAX_RETRIES": "2",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": PROTOCOL[cli],
        "OTEL_EXPORTER_OTLP_ENDPOINT": exporter,
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer {TOKEN}",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_LOGS_EXPORT_INTERVAL": "500",
        "OTEL_RESOURCE_ATTRIBUTES": f"agent={agent}",
        "HOOK_TOKEN": TOKEN,
        **extra,
    }


@dataclass
class Proc:
    key: str
    args: list[str]
    env: dict[str, str]
    cwd: Path
    out: Path
    popen: subprocess.Popen[str] | None = None
    code: int | None = None

    def start(self, binary: str) -> None:
        with open(self.out, "w") as out:
            self.popen = subprocess.Popen(
                [binary, "-p", *self.args],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    @property
    def output(self) -> str:
        return self.out.read_text()


def run_all(procs: Sequence[tuple[str, Proc]]) -> None:
    """Start every process at once, wait for all; kill what is left if the wait fails."""
    try:
        for binary, proc in procs:
            proc.start(binary)
        for _, proc in procs:
            assert proc.popen is not None
            proc.code = proc.popen.wait(timeout=180)
    finally:
        for _, proc in procs:
            if proc.popen is not None and proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait(10)


COMMON_ARGS = ["--model", MODEL, "--allowedTools", "Bash(echo:*) Agent"]


@dataclass
class Matrix:
    fake: FakeAnthropic
    table: dict[Any, float]
    procs: dict[str, Proc]
    binaries: dict[str, str]


def config_text(extra: str = "") -> str:
    return (
        "monitoring:\n  scenarios:\n    sampling_rate: 1.0\nexporter:\n  otlp:\n    enabled: true\n"
        # A Stop hook's turn waits this long for the CLI's last export batch (every 500 ms here).
        "    hook_join_seconds: 2\n" + extra
    )


@pytest.fixture(scope="module")
def matrix(claude: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("scenarios")
    binaries = {"npm": claude}
    bundled = bundled_cli()
    if bundled is None:
        pytest.fail("claude-agent-sdk (the agent-sdk extra, in the dev lock) is required for its bundled CLI")
    binaries["bundled"] = bundled
    config = tmp / "exporter.yaml"
    config.write_text(config_text())
    procs: dict[str, Proc] = {}
    with (
        FakeAnthropic() as fake,
        serving(
            "--config", str(config), "--port", "0", workdir=tmp, env={"CLAUDE_EXPORTER_TOKEN": TOKEN}
        ) as srv,
    ):

        def proc(scenario: Scenario, cli: str, i: int, args: list[str], home: Path, work: Path) -> Proc:
            agent = agent_of(scenario, cli)
            key = f"{agent}-{i}"
            env = cli_env(cli, agent, key, home, fake, srv.url, scenario.env)
            return Proc(key, args, env, work, tmp / f"{key}-{len(procs)}.out")

        first: list[tuple[str, Proc]] = []
        for scenario in (*SCENARIOS, CONTINUED):
            for cli in scenario.clis:
                for i in range(scenario.processes):
                    home, work = (
                        tmp / f"home-{agent_of(scenario, cli)}-{i}",
                        tmp / f"work-{agent_of(scenario, cli)}-{i}",
                    )
                    work.mkdir()
                    # The Stop and SessionEnd hooks say when a turn is over, as the README asks users to set.
                    write_settings(home, srv.url, agent_of(scenario, cli))
                    p = proc(scenario, cli, i, ["do the task", *COMMON_ARGS], home, work)
                    times = 3 if scenario is CONTINUED else 1
                    fake.script(*[r for _ in range(times) for r in scenario.replies], key=p.key)
                    procs[f"{p.key}#0"] = p
                    first.append((binaries[cli], p))
        run_all(first)
        # --continue, then --resume with the session's id (the fake saw it in the CLI's request headers).
        for step in (1, 2):
            later: list[tuple[str, Proc]] = []
            for cli in CONTINUED.clis:
                before = procs[f"{agent_of(CONTINUED, cli)}-0#0"]
                if step == 1:
                    flags = ["--continue"]
                else:
                    [sid] = {r.headers["x-claude-code-session-id"] for r, _ in fake.answered(before.key)}
                    flags = ["--resume", sid]
                p = Proc(
                    before.key,
                    ["again", *flags, *COMMON_ARGS],
                    before.env,
                    before.cwd,
                    tmp / f"{before.key}-{step}.out",
                )
                procs[f"{before.key}#{step}"] = p
                later.append((binaries[cli], p))
            run_all(later)

        by_agent = {agent_of(s, cli): s for s in (*SCENARIOS, CONTINUED) for cli in s.clis}
        turns = sum(sum(by_agent[p.key.rsplit("-", 1)[0]].executions) for p in procs.values())

        def settled() -> bool:
            table = samples(srv.url, AUTH)
            served = sum(len(fake.answered(key)) for key in {p.key for p in procs.values()})
            got = sum(v for (name, _), v in table.items() if name == "claude_requests_total")
            ended = sum(v for (name, _), v in table.items() if name == "claude_executions_total")
            return got >= served and ended >= turns

        poll(settled, timeout=20)
        yield Matrix(fake, samples(srv.url, AUTH), procs, binaries)
        assert srv.stop()[0] == 0


# -- the ground truth -----------------------------------------------------------------------------------


def truth(fake: FakeAnthropic, keys: Sequence[str]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (model, figure): requests by outcome, tokens per kind, cost, from what the fake answered."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for key in keys:
        for request, reply in fake.answered(key):
            model = reply.model or str(request.body.get("model"))
            row = out.setdefault(
                ("model", model),
                {
                    "success": 0,
                    "error": 0,
                    "input": 0,
                    "output": 0,
                    "cache_read": 0,
                    "cache_creation": 0,
                    "cost": 0.0,
                },
            )
            if reply.is_error:
                row["error"] += 1
                continue
            row["success"] += 1
            row["input"] += reply.input_tokens
            row["output"] += reply.output_tokens
            row["cache_read"] += reply.cache_read_input_tokens
            row["cache_creation"] += reply.cache_creation_input_tokens
            if reply.cache_creation_1h is not None or reply.cache_creation_5m is not None:
                five, hour = reply.cache_creation_5m or 0, reply.cache_creation_1h or 0
            else:
                five, hour = reply.cache_creation_input_tokens, 0
            row["cost"] += expected_cost(
                model,
                input=reply.input_tokens,
                output=reply.output_tokens,
                cache_5m=five,
                cache_1h=hour,
                cache_read=reply.cache_read_input_tokens,
            )
    return out


def recorded(
    table: Mapping[Any, float], agent: str, models: Sequence[str]
) -> dict[tuple[str, str], dict[str, float]]:
    out = {}
    for model in models:
        labels = {"agent": agent, "model": model}
        out[("model", model)] = {
            "success": value(table, "claude_requests_total", **labels, outcome="success"),
            "error": value(table, "claude_requests_total", **labels, outcome="error"),
            **{
                kind: value(table, "claude_tokens_total", **labels, type=kind)
                for kind in ("input", "output", "cache_read", "cache_creation")
            },
            "cost": value(table, "claude_cost_usd_total", **labels),
        }
    return out


def approx(rows: dict[tuple[str, str], dict[str, float]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {k: {**row, "cost": pytest.approx(row["cost"], rel=1e-9, abs=1e-12)} for k, row in rows.items()}


def executions(table: Mapping[Any, float], agent: str) -> tuple[float, float, float]:
    """(successful, failed, requests in them) over every task of ``agent``."""
    ok = err = requests = 0.0
    for (name, labels), v in table.items():
        if dict(labels).get("agent") != agent:
            continue
        if name == "claude_executions_total":
            if dict(labels)["outcome"] == "success":
                ok += v
            else:
                err += v
        elif name == "claude_execution_requests_sum":
            requests += v
    return ok, err, requests


def check(matrix: Matrix, scenario: Scenario, cli: str) -> None:
    agent = agent_of(scenario, cli)
    procs = [p for p in matrix.procs.values() if p.key.startswith(f"{agent}-")]
    for p in procs:
        assert p.code == scenario.exit_code, (p.key, p.code, p.output[-2000:])
    keys = sorted({p.key for p in procs})
    assert all(matrix.fake.pending(key) == 0 for key in keys), "every scripted reply was served"
    want = truth(matrix.fake, keys)
    got = recorded(matrix.table, agent, [model for _, model in want])
    assert got == approx(want)
    served = sum(row["success"] + row["error"] for row in want.values())
    runs = len(procs)  # continue-resume: three runs of one process's session
    assert executions(matrix.table, agent) == (
        scenario.executions[0] * runs,
        scenario.executions[1] * runs,
        served,
    )


@pytest.mark.parametrize("cli", CLIS)
def test_text_before_a_tool_call(matrix, cli):
    check(matrix, SCENARIOS[0], cli)


@pytest.mark.parametrize("cli", CLIS)
def test_a_sub_agent_on_another_model(matrix, cli):
    agent = agent_of(SCENARIOS[1], cli)
    models = {model for _, model in truth(matrix.fake, [f"{agent}-0"])}
    assert len(models) == 2, models  # the sub-agent ran on haiku, the parent on sonnet
    check(matrix, SCENARIOS[1], cli)


@pytest.mark.parametrize("cli", CLIS)
def test_a_refusal(matrix, cli):
    check(matrix, SCENARIOS[2], cli)
    agent = agent_of(SCENARIOS[2], cli)
    refusals = [
        v
        for (name, labels), v in matrix.table.items()
        if name == "claude_refusals_total" and dict(labels).get("agent") == agent
    ]
    assert sum(refusals) == 1


@pytest.mark.parametrize("cli", CLIS)
def test_a_failure_on_its_only_attempt(matrix, cli):
    check(matrix, SCENARIOS[3], cli)


@pytest.mark.parametrize("cli", CLIS)
def test_one_hour_cache_writes(matrix, cli):
    check(matrix, SCENARIOS[4], cli)


@pytest.mark.parametrize("cli", CLIS)
def test_no_session_id(matrix, cli):
    check(matrix, SCENARIOS[5], cli)


def test_six_processes_in_parallel(matrix):
    check(matrix, SCENARIOS[6], "npm")
    check(matrix, SCENARIOS[7], "bundled")
    for scenario, cli in ((SCENARIOS[6], "npm"), (SCENARIOS[7], "bundled")):
        assert value(matrix.table, "claude_code_sessions_total", agent=agent_of(scenario, cli)) == 3


@pytest.mark.parametrize("cli", CLIS)
def test_continue_and_resume(matrix, cli):
    check(matrix, CONTINUED, cli)


# -- serve restarts ---------------------------------------------------------------------------------------

RESTART_AGENT = "restart"


@pytest.mark.parametrize(
    "temporality",
    [
        "cumulative",
        "delta",
    ],
)
def test_a_serve_restart(claude, tmp_path, temporality):  # noqa: F811
    """The CLI's first request is recorded by one ``serve``; while its Bash tool sleeps, ``serve`` is
    stopped and another started on the same port; the second request goes to the new one. The two
    processes' figures add up to what the fake served, and one session is one session."""
    port = free_port()
    config = tmp_path / "exporter.yaml"
    # The state dir carries each writer's cumulative totals over the restart (exporter.otlp.state_dir).
    config.write_text(config_text(f"    state_dir: {tmp_path / 'state'}\n"))
    args = ("--config", str(config), "--port", str(port))
    env = {"CLAUDE_EXPORTER_TOKEN": TOKEN}
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    sleep = Reply(
        content=[{"type": "tool_use", "id": "toolu_sleep", "name": "Bash", "input": {"command": "sleep 6"}}],
        stop_reason="tool_use",
        input_tokens=70,
        output_tokens=8,
    )
    with FakeAnthropic() as fake:
        fake.script(sleep, Reply(input_tokens=90, output_tokens=11), key=RESTART_AGENT)
        write_settings(home, f"http://127.0.0.1:{port}", RESTART_AGENT)
        cli_vars = cli_env("npm", RESTART_AGENT, RESTART_AGENT, home, fake, f"http://127.0.0.1:{port}", {})
        cli_vars["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"] = temporality
        proc = Proc(
            RESTART_AGENT,
            ["do the task", "--model", MODEL, "--allowedTools", "Bash(sleep:*)"],
            cli_vars,
            work,
            tmp_path / "cli.out",
        )
        tables = []
        try:
            with serving(*args, workdir=tmp_path, env=env) as first:
                proc.start(claude)

                def first_request() -> bool:
                    table = samples(first.url, AUTH)
                    return (
                        value(
                            table,
                            "claude_requests_total",
                            agent=RESTART_AGENT,
                            model=MODEL,
                            outcome="success",
                        )
                        >= 1
                        and value(table, "claude_code_sessions_total", agent=RESTART_AGENT) >= 1
                    )

                assert poll(first_request, timeout=30), (proc.output, first.stderr.read_text())
                tables.append(samples(first.url, AUTH))
                assert first.stop()[0] == 0
            with serving(*args, workdir=tmp_path, env=env) as second:
                assert proc.popen is not None
                proc.code = proc.popen.wait(timeout=120)
                tables.append(samples(second.url, AUTH))
                assert second.stop()[0] == 0
        finally:
            if proc.popen is not None and proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait(10)
        assert proc.code == 0, proc.output
        want = truth(fake, [RESTART_AGENT])
    got = [recorded(table, RESTART_AGENT, [MODEL]) for table in tables]
    summed = {k: {f: got[0][k][f] + got[1][k][f] for f in got[0][k]} for k in got[0]}
    assert summed == approx(want)
    assert sum(value(t, "claude_code_sessions_total", agent=RESTART_AGENT) for t in tables) == 1
