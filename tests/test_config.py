"""Configuration: the seed's file as written, the extensions, and every problem reported by its key path."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from claude_exporter.config import (
    ALERT_DEFAULTS,
    ALERT_NAMES,
    ALERT_THRESHOLD_KEYS,
    METRIC_NAMES,
    Config,
    ConfigError,
    config_from_env,
    default_config,
    duration_seconds,
    format_problems,
    load_config,
    parse_config,
)

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data"
SEED_METRICS = {
    "execution_duration_ms",
    "tokens_used_input",
    "tokens_used_output",
    "code_blocks_executed",
    "error_rate_percent",
}


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def agent_with(**settings: Any) -> dict[str, Any]:
    return {"monitoring": {"a": settings}}


# --- the seed's file --------------------------------------------------------------------------------------


def test_seed_file_loads_exactly_as_written() -> None:
    cfg = load_config(DATA / "seed.yaml")
    assert list(cfg.agents) == ["claude_code_executor"]
    agent = cfg.agent("claude_code_executor")
    assert agent.name == "claude_code_executor"
    assert agent.metrics == SEED_METRICS
    assert agent.sampling_rate == 1.0
    assert agent.retention_days == 30
    assert agent.code_tools == frozenset()

    timeout = agent.alert("execution_timeout")
    assert (timeout.enabled, timeout.severity, timeout.threshold) == (True, "high", 30000.0)
    assert timeout.params == {"threshold_ms": 30000}
    assert agent.execution_timeout_seconds == 30.0

    spike = agent.alert("token_spike")
    assert (spike.enabled, spike.severity, spike.threshold, spike.for_) == (True, "medium", 150.0, "5m")
    assert spike.params == {
        "threshold_change_percent": 150,
        "window": "10m",
        "baseline_window": "1d",
        "min_executions": 5,
        "sensitivity": 3,
        "seasonality": "daily_weekly",
        "min_history": "6h",
        "floor_percent": 10,
    }

    assert tuple(agent.alerts) == ALERT_NAMES
    defaults = default_config().defaults
    for name in ALERT_NAMES[2:]:  # the alerts the seed does not name keep their defaults
        assert agent.alert(name) == defaults.alert(name)
    assert not agent.alert("cost_budget").enabled

    assert cfg.source == str(DATA / "seed.yaml")
    assert cfg.timeout_buckets() == (30.0,)
    assert cfg.default_agent == "default"


def test_seed_file_is_the_posts_yaml() -> None:
    """The data file is the post's block, indentation and all (a flow-style list would also be accepted)."""
    text = (DATA / "seed.yaml").read_text(encoding="utf-8")
    assert text.startswith(
        "monitoring:\n  claude_code_executor:\n    metrics:\n      - execution_duration_ms\n"
    )
    assert "      - name: execution_timeout\n        threshold_ms: 30000\n        severity: high\n" in text
    assert text.endswith("    sampling_rate: 1.0\n    retention_days: 30\n")


# --- the extensions ---------------------------------------------------------------------------------------


def test_fleet_file_uses_every_extension() -> None:
    raw = yaml.safe_load((DATA / "fleet.yaml").read_text(encoding="utf-8"))
    used_alert_keys = {
        (entry["name"], key)
        for block in raw["monitoring"].values()
        for entry in block["alerts"]
        for key in entry
    }
    assert {name for name, _ in used_alert_keys} == set(ALERT_NAMES)
    every_alert_key = {key for table in ALERT_DEFAULTS.values() for key in table}
    assert {key for _, key in used_alert_keys} == every_alert_key | {"name"}
    assert set(raw["exporter"]) == {
        "default_agent",
        "server",
        "label_caps",
        "pricing_overrides",
        "event_log",
        "health",
        "rules",
    }
    assert set(raw["monitoring"]["claude_code_executor"]["metrics"]) == set(METRIC_NAMES)

    cfg = load_config(DATA / "fleet.yaml")
    assert list(cfg.agents) == ["claude_code_executor", "support_triage", "nightly_report"]
    coder = cfg.agent("claude_code_executor")
    assert coder.code_tools == {"run_python", "run_shell"}
    assert coder.metrics == set(METRIC_NAMES)
    spike = coder.alert("token_spike")
    assert (spike.for_, spike.params["window"], spike.params["baseline_window"]) == ("10m", "15m", "2h")
    assert spike.params["min_executions"] == 20
    assert coder.alert("error_rate").severity == "critical"
    assert coder.alert("error_rate").threshold == 2.5
    assert coder.alert("rate_limited").params["remaining_percent"] == 5
    assert not coder.alert("truncated_responses").enabled
    cost = coder.alert("cost_budget")
    assert (cost.enabled, cost.threshold, cost.severity, cost.for_) == (True, 12.5, "page", "30m")
    assert cost.params == {"threshold_usd_per_hour": 12.5, "window": "2h"}

    triage = cfg.agent("support_triage")
    assert triage.sampling_rate == 0.25
    assert triage.retention_days == 90
    assert triage.execution_timeout_seconds == 120.0
    assert triage.alert("execution_timeout").for_ == "1m"

    nightly = cfg.agent("nightly_report")  # a YAML merge key: the triage block with its own alerts
    assert nightly.metrics == triage.metrics
    assert nightly.retention_days == 90
    assert nightly.sampling_rate == 0.0
    assert cfg.sampling_rate("nightly_report") == 0.0
    assert nightly.execution_timeout_seconds == 600.0
    assert nightly.alert("execution_timeout").severity == "high"
    assert not nightly.alert("token_spike").enabled

    assert cfg.default_agent == "unassigned"
    assert cfg.server.address == "0.0.0.0"
    assert cfg.server.port == 9477
    assert cfg.server.token_env is None
    assert cfg.server.token_file == "/run/secrets/claude-exporter-token"
    assert (cfg.server.tls_cert_file, cfg.server.tls_key_file) == (
        "/etc/claude-exporter/tls.crt",
        "/etc/claude-exporter/tls.key",
    )
    assert dataclasses.astuple(cfg.label_caps) == (50, 500, 20, 5000, 128)
    assert cfg.pricing_overrides["claude-custom-1"] == {
        "input": 3.0,
        "output": 15.0,
        "cache_write_5m": 3.75,
        "cache_write_1h": 6.0,
        "cache_read": 0.3,
    }
    # cache columns left out follow the price list's multipliers of the input price
    assert cfg.pricing_overrides["claude-custom-lite"] == {
        "input": 1.0,
        "output": 5.0,
        "cache_write_5m": 1.25,
        "cache_write_1h": 2.0,
        "cache_read": 0.1,
    }
    assert (cfg.event_log.destination, cfg.event_log.path) == (
        "file",
        "/var/log/claude-exporter/events.jsonl",
    )
    assert cfg.health_window_seconds == 600.0
    assert (cfg.rules_evaluation_interval, cfg.rules_job) == ("1m", "claude-fleet")
    assert cfg.timeout_buckets() == (30.0, 120.0, 600.0)


def test_default_config() -> None:
    cfg = default_config()
    assert cfg.agents == {}
    assert cfg.source == "<default>"
    assert cfg.defaults.name == "*"
    assert cfg.agent("anything") is cfg.defaults
    assert cfg.defaults.metrics == set(METRIC_NAMES)
    assert cfg.defaults.sampling_rate == 1.0
    assert cfg.defaults.retention_days == 15
    assert cfg.server == type(cfg.server)()
    assert cfg.server.token_env == "CLAUDE_EXPORTER_TOKEN"
    assert dataclasses.astuple(cfg.label_caps) == (200, 200, 200, 2000, 128)
    assert (cfg.event_log.destination, cfg.event_log.path) == ("stderr", None)
    assert (cfg.health_window_seconds, cfg.rules_evaluation_interval, cfg.rules_job) == (
        300.0,
        "30s",
        "claude-exporter",
    )
    assert cfg.pricing_overrides == {}
    assert cfg.timeout_buckets() == (30.0,)


def test_alert_defaults_table_matches_the_built_alerts() -> None:
    defaults = default_config().defaults
    for name, table in ALERT_DEFAULTS.items():
        alert = defaults.alert(name)
        assert alert.severity == table["severity"]
        assert alert.for_ == table["for"]
        assert alert.threshold == table[ALERT_THRESHOLD_KEYS[name]]
        assert alert.threshold_key == ALERT_THRESHOLD_KEYS[name]
        expected = {
            k: v for k, v in table.items() if k not in ("enabled", "severity", "for") and v is not None
        }
        assert dict(alert.params) == expected
    assert ALERT_THRESHOLD_KEYS["execution_timeout"] == "threshold_ms"
    assert ALERT_THRESHOLD_KEYS["cost_budget"] == "threshold_usd_per_hour"
    assert ALERT_DEFAULTS["rate_limited"]["remaining_percent"] == 10
    assert [name for name in ALERT_NAMES if defaults.alert(name).enabled] == list(ALERT_NAMES[:-1])
    with pytest.raises(KeyError, match="unknown alert"):
        defaults.alert("nope")


def test_config_is_frozen() -> None:
    cfg = load_config(DATA / "seed.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.default_agent = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.agents["x"] = cfg.defaults  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.defaults.alert("error_rate").params["window"] = "1m"  # type: ignore[index]


def test_agent_block_may_be_empty_and_unnamed_agents_get_defaults() -> None:
    cfg = parse_config({"monitoring": {"quiet": None}, "exporter": None})
    assert cfg.agent("quiet").metrics == set(METRIC_NAMES)
    assert cfg.agent("quiet").name == "quiet"
    assert cfg.agent("other") is cfg.defaults
    assert cfg.sampling_rate("other") == 1.0
    assert parse_config({"monitoring": {}}).agents == {}


# --- problems, every one with its path --------------------------------------------------------------------


def test_many_problems_are_all_reported_with_their_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        monitoring:
          claude_code_executor:
            metrics: [execution_duration_ms, tokens_used, error_rate_percent]
            alerts:
              - name: execution_timeout
                threshold_ms: soon
                severity: ""
                timeout: 5
              - name: token_spike
                threshold_change_percent: -3
                window: 2d
              - name: token_spike
              - name: error_budget
              - severity: high
              - name: cost_budget
                for: 5 minutes
              - name: rate_limited
                remaining_percent: 150
                min_requests: 3
              - name: error_rate
                min_requests: 2.5
                enabled: "no"
                window: 0s
            sampling_rate: 1.5
            retention_days: 0
            code_tools: run_python
            colour: blue
          "team.b":
            alerts: {name: error_rate}
          7: {}
        exporter:
          default_agent: ""
          server: {port: 70000, tls_cert_file: /tls.crt, token_env: 5}
          label_caps: {agent: 0, tasks: 10}
          pricing_overrides:
            claude-custom-1: {input: free, cache_read: 0.3}
          event_log: {destination: syslog}
          health: {window_seconds: "5m"}
          rules: {evaluation_interval: 30, job: ""}
        extra: true
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    at = "monitoring.claude_code_executor."
    expected = [
        "extra: unknown key; valid keys: exporter, monitoring",
        at + "colour: unknown key; valid keys: alerts, code_tools, metrics, retention_days, sampling_rate",
        at + "metrics[1]: must be one of " + ", ".join(METRIC_NAMES) + ', got "tokens_used"',
        at + "alerts[0].timeout: unknown key for alert execution_timeout; "
        "valid keys: enabled, for, name, severity, threshold_ms",
        at + 'alerts[0].threshold_ms: must be a number from 1 to 86400000, got "soon"',
        at + 'alerts[0].severity: must be a non-empty string, got ""',
        at + "alerts[1].threshold_change_percent: must be a number above 0 and at most 100000, got -3",
        at + 'alerts[1].window: must be shorter than baseline_window (1d), got "2d"',
        at + 'alerts[2].name: duplicate alert "token_spike", already configured at alerts[1]',
        at + "alerts[3].name: must be one of " + ", ".join(ALERT_NAMES) + ', got "error_budget"',
        at + 'alerts[4]: missing required key "name" (one of ' + ", ".join(ALERT_NAMES) + ")",
        at + 'alerts[5].for: must be a duration like "30s", "5m" or "1h", from 0s to 1y, got "5 minutes"',
        at + "alerts[5]: cost_budget needs threshold_usd_per_hour to be enabled (or set enabled: false)",
        at + "alerts[6].min_requests: unknown key for alert rate_limited; "
        "valid keys: enabled, for, name, remaining_percent, severity, threshold_per_minute, window",
        at + "alerts[6].remaining_percent: must be a number above 0 and at most 100, got 150",
        at + "alerts[7].min_requests: must be an integer from 0 to 1000000000, got 2.5",
        at + 'alerts[7].enabled: must be true or false, got "no"',
        at
        + 'alerts[7].window: must be a duration like "30s", "5m" or "1h", above 0s and at most 1y, got "0s"',
        at + "sampling_rate: must be a number from 0 to 1, got 1.5",
        at + "retention_days: must be an integer from 1 to 3650, got 0",
        at + 'code_tools: must be a list, got "run_python"',
        'monitoring["team.b"].alerts: must be a list, got {"name": "error_rate"}',
        "monitoring: agent names must be non-empty strings, got 7",
        'exporter.default_agent: must be a non-empty string, got ""',
        "exporter.server.port: must be an integer from 0 to 65535, got 70000",
        "exporter.server.token_env: must be a non-empty string or null, got 5",
        "exporter.server.tls_key_file: is required when tls_cert_file is set (TLS needs both files)",
        "exporter.label_caps.tasks: unknown key; valid keys: agent, combinations, length, model, task",
        "exporter.label_caps.agent: must be an integer from 1 to 100000, got 0",
        'exporter.pricing_overrides.claude-custom-1.input: must be a number from 0 to 1000000, got "free"',
        'exporter.pricing_overrides.claude-custom-1: missing required key "output" (USD per million tokens)',
        'exporter.event_log.destination: must be one of stderr, stdout, file, got "syslog"',
        'exporter.health.window_seconds: must be a number from 1 to 86400, got "5m"',
        'exporter.rules.evaluation_interval: must be a duration like "30s", "5m" or "1h", from 1s to 1h, '
        "got 30",
        'exporter.rules.job: must be a non-empty string, got ""',
    ]
    assert info.value.problems == expected
    assert str(info.value) == "\n".join(expected)
    assert info.value.source == str(path)
    report = format_problems(info.value)
    assert report.splitlines()[0] == f"{path}: {len(expected)} problems in the configuration:"
    assert report.splitlines()[1:] == [f"  {line}" for line in expected]


def test_contract_example_message() -> None:
    data = {
        "monitoring": {
            "claude_code_executor": {"alerts": [{"name": "execution_timeout", "threshold_ms": "soon"}]}
        }
    }
    assert problems(data) == [
        "monitoring.claude_code_executor.alerts[0].threshold_ms: "
        'must be a number from 1 to 86400000, got "soon"'
    ]


def test_unknown_metric_lists_the_valid_ones() -> None:
    (line,) = problems(agent_with(metrics=["execution_duration_ms", "latency_p99"]))
    assert line.startswith("monitoring.a.metrics[1]: must be one of ")
    assert line.endswith(', got "latency_p99"')
    for name in METRIC_NAMES:
        assert name in line


def test_metrics_subset_and_empty() -> None:
    assert parse_config(agent_with(metrics=["cost_usd"])).agent("a").metrics == {"cost_usd"}
    assert parse_config(agent_with(metrics=[])).agent("a").metrics == frozenset()


def test_duplicate_alert_name() -> None:
    alerts = [{"name": "error_rate"}, {"name": "token_spike"}, {"name": "error_rate", "threshold_percent": 3}]
    assert problems(agent_with(alerts=alerts)) == [
        'monitoring.a.alerts[2].name: duplicate alert "error_rate", already configured at alerts[0]'
    ]


def test_enabled_false_turns_an_alert_off() -> None:
    cfg = parse_config(
        agent_with(alerts=[{"name": "execution_timeout", "enabled": False}, {"name": "error_rate"}])
    )
    agent = cfg.agent("a")
    assert not agent.alert("execution_timeout").enabled
    assert agent.alert("execution_timeout").threshold == 30000.0  # still known, just off
    assert agent.execution_timeout_seconds is None
    assert agent.alert("error_rate").enabled  # named without settings: defaults
    assert agent.alert("error_rate") == default_config().defaults.alert("error_rate")


NEEDS_THRESHOLD = (
    "monitoring.a.alerts[0]: cost_budget needs threshold_usd_per_hour to be enabled (or set enabled: false)"
)


def test_cost_budget() -> None:
    assert problems(agent_with(alerts=[{"name": "cost_budget", "severity": "low"}])) == [NEEDS_THRESHOLD]
    assert problems(agent_with(alerts=[{"name": "cost_budget", "enabled": True}])) == [NEEDS_THRESHOLD]
    off = parse_config(agent_with(alerts=[{"name": "cost_budget", "enabled": False}])).agent("a")
    assert not off.alert("cost_budget").enabled
    assert off.alert("cost_budget").threshold is None
    on = parse_config(agent_with(alerts=[{"name": "cost_budget", "threshold_usd_per_hour": 2}])).agent("a")
    assert on.alert("cost_budget").enabled
    assert on.alert("cost_budget").threshold == 2.0
    assert on.alert("cost_budget").params == {"threshold_usd_per_hour": 2, "window": "1h"}
    assert not default_config().defaults.alert("cost_budget").enabled


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (
            {"tls_cert_file": "c.pem"},
            ["exporter.server.tls_key_file: is required when tls_cert_file is set (TLS needs both files)"],
        ),
        (
            {"tls_key_file": "k.pem", "tls_cert_file": None},
            ["exporter.server.tls_cert_file: is required when tls_key_file is set (TLS needs both files)"],
        ),
        (
            {"tls_cert_file": "c.pem", "tls_key_file": ""},
            ['exporter.server.tls_key_file: must be a non-empty string or null, got ""'],
        ),
    ],
)
def test_tls_cert_and_key_go_together(server: dict[str, Any], expected: list[str]) -> None:
    assert problems({"monitoring": {}, "exporter": {"server": server}}) == expected


def test_tls_cert_and_key_both_given() -> None:
    cfg = parse_config(
        {"monitoring": {}, "exporter": {"server": {"tls_cert_file": "c", "tls_key_file": "k"}}}
    )
    assert (cfg.server.tls_cert_file, cfg.server.tls_key_file) == ("c", "k")


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (
            agent_with(sampling_rate=True),
            "monitoring.a.sampling_rate: must be a number from 0 to 1, got true",
        ),
        (
            agent_with(retention_days=True),
            "monitoring.a.retention_days: must be an integer from 1 to 3650, got true",
        ),
        (
            agent_with(alerts=[{"name": "execution_timeout", "threshold_ms": True}]),
            "monitoring.a.alerts[0].threshold_ms: must be a number from 1 to 86400000, got true",
        ),
        (
            agent_with(alerts=[{"name": "token_spike", "min_executions": False}]),
            "monitoring.a.alerts[0].min_executions: must be an integer from 0 to 1000000000, got false",
        ),
        (
            agent_with(alerts=[{"name": "error_rate", "threshold_percent": True}]),
            "monitoring.a.alerts[0].threshold_percent: must be a number above 0 and at most 100, got true",
        ),
        (
            {"monitoring": {}, "exporter": {"server": {"port": True}}},
            "exporter.server.port: must be an integer from 0 to 65535, got true",
        ),
        (
            {"monitoring": {}, "exporter": {"label_caps": {"model": True}}},
            "exporter.label_caps.model: must be an integer from 1 to 100000, got true",
        ),
        (
            {"monitoring": {}, "exporter": {"health": {"window_seconds": False}}},
            "exporter.health.window_seconds: must be a number from 1 to 86400, got false",
        ),
        (
            {"monitoring": {}, "exporter": {"pricing_overrides": {"m": {"input": True, "output": 1}}}},
            "exporter.pricing_overrides.m.input: must be a number from 0 to 1000000, got true",
        ),
    ],
)
def test_bools_are_not_numbers(data: object, line: str) -> None:
    assert problems(data) == [line]


@pytest.mark.parametrize("value", [float("inf"), float("nan"), "30000", None, [30000]])
def test_threshold_must_be_a_finite_number(value: object) -> None:
    (line,) = problems(agent_with(alerts=[{"name": "execution_timeout", "threshold_ms": value}]))
    assert line.startswith("monitoring.a.alerts[0].threshold_ms: must be a number from 1 to 86400000, got ")


def test_numbers_in_range_are_kept() -> None:
    cfg = parse_config(
        agent_with(
            sampling_rate=0,
            retention_days=1,
            alerts=[
                {"name": "error_rate", "threshold_percent": 100, "min_requests": 0},
                {"name": "execution_timeout", "threshold_ms": 1, "severity": "P1 - wake someone"},
            ],
        )
    )
    agent = cfg.agent("a")
    assert (agent.sampling_rate, agent.retention_days) == (0.0, 1)
    assert agent.alert("error_rate").threshold == 100.0
    assert agent.alert("error_rate").params["min_requests"] == 0
    assert agent.execution_timeout_seconds == 0.001  # the lowest a threshold may be
    assert agent.alert("execution_timeout").severity == "P1 - wake someone"  # kept exactly as written


@pytest.mark.parametrize("good", ["0s", "30s", "500ms", "5m", "1h", "1h30m", "2d", "1w", "1y"])
def test_durations_accepted(good: str) -> None:
    cfg = parse_config(agent_with(alerts=[{"name": "error_rate", "for": good}]))
    assert cfg.agent("a").alert("error_rate").for_ == good


@pytest.mark.parametrize("bad", ["5", "5 m", "5min", "-5m", "1.5h", "", "m"])
def test_durations_rejected(bad: str) -> None:
    assert problems(agent_with(alerts=[{"name": "error_rate", "for": bad}])) == [
        f'monitoring.a.alerts[0].for: must be a duration like "30s", "5m" or "1h", from 0s to 1y, got "{bad}"'
    ]


def test_duration_seconds() -> None:
    assert duration_seconds("1h30m") == 5400.0
    assert duration_seconds("250ms") == 0.25
    assert duration_seconds("0s") == 0.0
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        duration_seconds("soon")


def test_baseline_window_must_be_longer_than_window() -> None:
    assert problems(agent_with(alerts=[{"name": "latency_drift", "baseline_window": "10m"}])) == [
        'monitoring.a.alerts[0].baseline_window: must be longer than window (10m), got "10m"'
    ]
    ok = parse_config(agent_with(alerts=[{"name": "latency_drift", "window": "2h", "baseline_window": "1d"}]))
    assert ok.agent("a").alert("latency_drift").params["baseline_window"] == "1d"


def test_event_log_destination_and_path() -> None:
    assert problems({"monitoring": {}, "exporter": {"event_log": {"destination": "file"}}}) == [
        'exporter.event_log.path: is required when destination is "file"'
    ]
    assert problems({"monitoring": {}, "exporter": {"event_log": {"path": "/tmp/x"}}}) == [
        'exporter.event_log.path: is only used when destination is "file", not "stderr"'
    ]
    cfg = parse_config({"monitoring": {}, "exporter": {"event_log": {"destination": "stdout"}}})
    assert cfg.event_log.destination == "stdout"


def test_pricing_override_values() -> None:
    assert problems(
        {"monitoring": {}, "exporter": {"pricing_overrides": {"m": {"output": 1, "cache": 2}}}}
    ) == [
        "exporter.pricing_overrides.m.cache: unknown key (prices are USD per million tokens); "
        "valid keys: cache_read, cache_write_1h, cache_write_5m, input, output",
        'exporter.pricing_overrides.m: missing required key "input" (USD per million tokens)',
    ]
    cfg = parse_config(
        {"monitoring": {}, "exporter": {"pricing_overrides": {"free-model": {"input": 0, "output": 0}}}}
    )
    assert cfg.pricing_overrides["free-model"]["cache_read"] == 0.0


def test_structural_type_errors() -> None:
    assert problems(None) == [
        "monitoring: is required: a mapping of agent names to their settings (the file is empty)"
    ]
    assert problems([1, 2]) == ["(top level): must be a mapping with a monitoring key, got [1, 2]"]
    assert problems({"exporter": {}}) == [
        "monitoring: is required: a mapping of agent names to their settings"
    ]
    assert problems({"monitoring": None}) == [
        "monitoring: must be a mapping of agent names to their settings, got null"
    ]
    assert problems({"monitoring": ["claude_code_executor"]}) == [
        'monitoring: must be a mapping of agent names to their settings, got ["claude_code_executor"]'
    ]
    assert problems({"monitoring": {"a": "fast"}}) == ['monitoring.a: must be a mapping, got "fast"']
    assert problems(agent_with(alerts=["execution_timeout"])) == [
        'monitoring.a.alerts[0]: must be a mapping with a name, got "execution_timeout"'
    ]
    assert problems({"monitoring": {}, "exporter": {"server": "localhost:9466"}}) == [
        'exporter.server: must be a mapping, got "localhost:9466"'
    ]


# --- files and the environment ----------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        monitoring:
          claude_code_executor:
            metrics: [execution_duration_ms
            sampling_rate: 1.0
        """,
        "broken.yaml",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = info.value.problems
    assert line.startswith(f"{path}:4:")
    assert "invalid YAML" in line


def test_yaml_tab_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "tabs.yaml"
    path.write_text("monitoring:\n  a:\n\tretention_days: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}:3:1: invalid YAML: ")):
        load_config(path)


def test_duplicate_yaml_keys_are_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        monitoring:
          a:
            retention_days: 10
            retention_days: 20
          a:
            sampling_rate: 2
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f'{path}:4: duplicate key "retention_days" (first on line 3)',
        f'{path}:5: duplicate key "a" (first on line 2)',
        "monitoring.a.sampling_rate: must be a number from 0 to 1, got 2",
    ]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: no such file"]
    assert str(path) in str(info.value)


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(f"{tmp_path}: cannot read: ")):
        load_config(tmp_path)


def test_empty_file_is_not_a_config(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing yet\n")
    with pytest.raises(ConfigError, match=r"^monitoring: is required"):
        load_config(path)


def test_config_from_env(tmp_path: Path) -> None:
    assert config_from_env({}) is None
    assert config_from_env({"CLAUDE_EXPORTER_CONFIG": ""}) is None
    cfg = config_from_env({"CLAUDE_EXPORTER_CONFIG": str(DATA / "seed.yaml")})
    assert isinstance(cfg, Config)
    assert list(cfg.agents) == ["claude_code_executor"]
    with pytest.raises(ConfigError, match="no such file"):
        config_from_env({"CLAUDE_EXPORTER_CONFIG": str(tmp_path / "missing.yaml")})


def test_config_from_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAUDE_EXPORTER_CONFIG", raising=False)
    assert config_from_env() is None
    monkeypatch.setenv("CLAUDE_EXPORTER_CONFIG", str(DATA / "fleet.yaml"))
    cfg = config_from_env()
    assert cfg is not None
    assert cfg.rules_job == "claude-fleet"


# --- derived values ---------------------------------------------------------------------------------------


def test_timeout_buckets_across_agents() -> None:
    cfg = parse_config(
        {
            "monitoring": {
                "fast": {"alerts": [{"name": "execution_timeout", "threshold_ms": 5000}]},
                "slow": {"alerts": [{"name": "execution_timeout", "threshold_ms": 90000}]},
                "same": {"alerts": [{"name": "execution_timeout", "threshold_ms": 5000}]},
                "seed": {},
                "off": {"alerts": [{"name": "execution_timeout", "threshold_ms": 777, "enabled": False}]},
            }
        }
    )
    assert cfg.timeout_buckets() == (5.0, 30.0, 90.0)
    assert cfg.agent("off").execution_timeout_seconds is None


def test_format_problems_single() -> None:
    err = ConfigError("x: bad")
    assert err.problems == ["x: bad"]
    assert format_problems(err) == "1 problem in the configuration:\n  x: bad"
    assert isinstance(err, ValueError)


def test_band_keys_are_checked() -> None:
    assert problems(
        agent_with(
            alerts=[
                {"name": "anomaly", "seasonality": "hourly", "sensitivity": 0, "floor_percent": 150},
                {"name": "latency_drift", "min_history": "2d"},
                {"name": "token_spike", "min_history": "soon"},
            ]
        )
    ) == [
        'monitoring.a.alerts[0].seasonality: must be one of daily_weekly, daily, weekly, none, got "hourly"',
        "monitoring.a.alerts[0].sensitivity: must be a number above 0 and at most 100, got 0",
        "monitoring.a.alerts[0].floor_percent: must be a number above 0 and at most 100, got 150",
        'monitoring.a.alerts[1].min_history: must not be longer than baseline_window (1d), got "2d"',
        "monitoring.a.alerts[2].min_history: "
        'must be a duration like "30s", "5m" or "1h", above 0s and at most 1y, got "soon"',
    ]
    # A short baseline_window written before min_history existed stays valid: the band needs less then.
    ok = parse_config(agent_with(alerts=[{"name": "token_spike", "baseline_window": "2h"}]))
    spike = ok.agent("a").alert("token_spike")
    assert (spike.params["baseline_window"], spike.params["min_history"]) == ("2h", "6h")
    assert ok.agent("a").alert("anomaly").params["seasonality"] == "daily_weekly"
