"""YAML configuration -> frozen dataclasses, with every problem reported by its key path.

The seed's file is valid exactly as written::

    >>> cfg = parse_config({"monitoring": {"claude_code_executor": {
    ...     "alerts": [{"name": "execution_timeout", "threshold_ms": 30000, "severity": "high"}]}}})
    >>> cfg.agent("claude_code_executor").execution_timeout_seconds
    30.0
    >>> cfg.agent("anything else").alert("token_spike").threshold
    150.0

A bad file raises one :class:`ConfigError` listing every problem::

    >>> parse_config({"monitoring": {"a": {"sampling_rate": 2, "retention_days": "soon"}}})
    Traceback (most recent call last):
    ...
    claude_exporter.config.ConfigError: monitoring.a.sampling_rate: must be a number from 0 to 1, got 2
    monitoring.a.retention_days: must be a positive integer, got "soon"
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from claude_exporter.config.exporter import (
    EVENT_LOG_DESTINATIONS,
    EventLogConfig,
    LabelCaps,
    OtlpConfig,
    ServerConfig,
    parse_exporter,
)
from claude_exporter.config.loader import YAMLRefused, parse_yaml, yaml_error_line
from claude_exporter.config.schema import (
    ALERT_DEFAULTS,
    ALERT_NAMES,
    ALERT_THRESHOLD_KEYS,
    LIMITS,
    MAX_CONFIG_BYTES,
    METRIC_NAMES,
    PRICE_COLUMNS,
    Problems,
    child,
    duration_seconds,
    label_problem,
    render,
)

__all__ = [
    "ALERT_DEFAULTS",
    "ALERT_NAMES",
    "ALERT_THRESHOLD_KEYS",
    "ENV_VAR",
    "EVENT_LOG_DESTINATIONS",
    "METRIC_NAMES",
    "PRICE_COLUMNS",
    "AgentConfig",
    "AlertConfig",
    "Config",
    "ConfigError",
    "EventLogConfig",
    "LabelCaps",
    "OtlpConfig",
    "ServerConfig",
    "as_config",
    "config_from_env",
    "default_config",
    "duration_seconds",
    "format_problems",
    "load_config",
    "parse_config",
]

ENV_VAR = "CLAUDE_EXPORTER_CONFIG"
_AGENT_KEYS = ("metrics", "alerts", "sampling_rate", "retention_days", "code_tools")
_NOT_PARAMS = ("enabled", "severity", "for")


class ConfigError(ValueError):
    """A configuration that cannot be used; ``problems`` holds one ``"key.path: message"`` line each."""

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class AlertConfig:
    """One alert's settings; ``params`` holds its threshold, windows and minimums by their YAML key names."""

    name: str
    enabled: bool
    severity: str
    for_: str
    threshold: float | None
    params: Mapping[str, float | str]

    @property
    def threshold_key(self) -> str:
        return ALERT_THRESHOLD_KEYS[self.name]


@dataclass(frozen=True)
class AgentConfig:
    """The settings of one agent (``name`` is ``"*"`` for the defaults that unnamed agents get)."""

    name: str
    metrics: frozenset[str]
    alerts: Mapping[str, AlertConfig]
    sampling_rate: float
    retention_days: int
    code_tools: frozenset[str]

    def alert(self, name: str) -> AlertConfig:
        try:
            return self.alerts[name]
        except KeyError:
            raise KeyError(f"unknown alert {name!r}; known: {', '.join(ALERT_NAMES)}") from None

    @property
    def execution_timeout_seconds(self) -> float | None:
        """The execution-timeout threshold in seconds, ``None`` when that alert is off."""
        timeout = self.alerts["execution_timeout"]
        if not timeout.enabled or timeout.threshold is None:
            return None
        return timeout.threshold / 1000.0


@dataclass(frozen=True)
class Config:
    """The whole configuration: named agents, defaults for the others, and the exporter's own settings."""

    agents: Mapping[str, AgentConfig]
    defaults: AgentConfig
    default_agent: str = "default"
    server: ServerConfig = field(default_factory=ServerConfig)
    label_caps: LabelCaps = field(default_factory=LabelCaps)
    pricing_overrides: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: MappingProxyType({}))
    event_log: EventLogConfig = field(default_factory=EventLogConfig)
    health_window_seconds: float = 300.0
    rules_evaluation_interval: str = "30s"
    rules_job: str = "claude-exporter"
    otlp: OtlpConfig = field(default_factory=OtlpConfig)
    source: str = "<default>"

    def agent(self, name: str) -> AgentConfig:
        """The named agent's settings, or ``defaults`` for an agent the file does not name."""
        return self.agents.get(name, self.defaults)

    def timeout_buckets(self) -> tuple[float, ...]:
        """Every enabled execution-timeout threshold in seconds, sorted and distinct (histogram buckets)."""
        seconds = (a.execution_timeout_seconds for a in (self.defaults, *self.agents.values()))
        return tuple(sorted({s for s in seconds if s is not None}))

    def sampling_rate(self, agent: str) -> float:
        return self.agent(agent).sampling_rate

    @property
    def retention_days(self) -> int:
        """The retention a Prometheus keeping this fleet needs: the longest any agent asks for."""
        return max(a.retention_days for a in (self.defaults, *self.agents.values()))


# --- parsing -------------------------------------------------------------------------------------------


def _alert(pb: Problems, name: str, path: str | None, entry: Mapping[str, Any] | None) -> AlertConfig:
    """One alert from its defaults and the (already name-checked) entry at ``path``, if any."""
    defaults = ALERT_DEFAULTS[name]
    merged: dict[str, Any] = dict(defaults)
    given: dict[str, str] = {}  # key -> path, for keys given with a good value
    if path is not None and entry is not None:
        fields = pb.fields(path, entry, ("name", *defaults), what=f" for alert {name}") or {}
        for key, (key_path, value) in fields.items():
            if key != "name" and (good := pb.alert_key(key_path, key, value)) is not None:
                merged[key], given[key] = good, key_path
        if "enabled" not in fields:  # naming an alert configures it, so cost_budget turns on with a threshold
            merged["enabled"] = True
        threshold_key = ALERT_THRESHOLD_KEYS[name]
        if merged["enabled"] and merged[threshold_key] is None and threshold_key not in fields:
            pb.add(path, f"{name} needs {threshold_key} to be enabled (or set enabled: false)")
        windows = {"window", "baseline_window"}
        if windows <= set(merged) and windows & set(given) and not (windows & set(fields)) - set(given):
            window, baseline = merged["window"], merged["baseline_window"]
            if duration_seconds(baseline) <= duration_seconds(window):
                if "baseline_window" in given:
                    pb.add(
                        given["baseline_window"],
                        f"must be longer than window ({window}), got {render(baseline)}",
                    )
                else:
                    pb.add(
                        given["window"],
                        f"must be shorter than baseline_window ({baseline}), got {render(window)}",
                    )
        # A min_history given longer than the baseline_window could never be met. (The default one is
        # shortened to a shorter baseline_window instead, so configs written before it stay valid.)
        if (
            "min_history" in given
            and "baseline_window" in merged
            and "baseline_window" not in set(fields) - set(given)
        ):
            history, baseline = merged["min_history"], merged["baseline_window"]
            if duration_seconds(history) > duration_seconds(baseline):
                pb.add(
                    given["min_history"],
                    f"must not be longer than baseline_window ({baseline}), got {render(history)}",
                )
    threshold = merged[ALERT_THRESHOLD_KEYS[name]]
    return AlertConfig(
        name=name,
        enabled=bool(merged["enabled"]) and threshold is not None,
        severity=str(merged["severity"]),
        for_=str(merged["for"]),
        threshold=None if threshold is None else float(threshold),
        params=MappingProxyType({k: v for k, v in merged.items() if k not in _NOT_PARAMS and v is not None}),
    )


def _alerts(pb: Problems, path: str, value: object) -> Mapping[str, AlertConfig]:
    out: dict[str, AlertConfig] = {}
    seen: dict[str, int] = {}
    if not isinstance(value, list):
        pb.add(path, f"must be a list, got {render(value)}")
        value = []
    for i, entry in enumerate(value):
        entry_path = f"{path}[{i}]"
        if not isinstance(entry, Mapping):
            pb.add(entry_path, f"must be a mapping with a name, got {render(entry)}")
            continue
        if "name" not in entry:
            pb.add(entry_path, f'missing required key "name" (one of {", ".join(ALERT_NAMES)})')
            continue
        name = pb.choice(f"{entry_path}.name", entry["name"], ALERT_NAMES)
        if name is None:
            continue
        if name in seen:
            pb.add(
                f"{entry_path}.name",
                f"duplicate alert {render(name)}, already configured at alerts[{seen[name]}]",
            )
            continue
        seen[name] = i
        out[name] = _alert(pb, name, entry_path, entry)
    return MappingProxyType({name: out.get(name) or _alert(pb, name, None, None) for name in ALERT_NAMES})


def _default_alerts() -> Mapping[str, AlertConfig]:
    return MappingProxyType({name: _alert(Problems(), name, None, None) for name in ALERT_NAMES})


def _agent(pb: Problems, path: str, name: str, value: object) -> AgentConfig:
    fields = pb.fields(path, value, _AGENT_KEYS, allow_none=True) or {}
    metrics: frozenset[str] = frozenset(METRIC_NAMES)
    alerts = _default_alerts()
    sampling_rate, retention_days, code_tools = 1.0, 15, frozenset[str]()
    if "metrics" in fields:
        metrics = frozenset(pb.string_list(*fields["metrics"], lambda p, v: pb.choice(p, v, METRIC_NAMES)))
    if "alerts" in fields:
        alerts = _alerts(pb, *fields["alerts"])
    if "sampling_rate" in fields:
        rate = pb.limited(*fields["sampling_rate"], "monitoring.AGENT.sampling_rate")
        sampling_rate = 1.0 if rate is None else float(rate)
    if "retention_days" in fields:
        retention_days = (
            pb.limited(*fields["retention_days"], "monitoring.AGENT.retention_days") or retention_days
        )
    if "code_tools" in fields:
        code_tools = frozenset(
            pb.string_list(
                *fields["code_tools"], lambda p, v: pb.limited(p, v, "monitoring.AGENT.code_tools[]")
            )
        )
    return AgentConfig(name, metrics, alerts, sampling_rate, retention_days, code_tools)


def parse_config(data: object, source: str = "<config>") -> Config:
    """The configuration from an already-parsed YAML document; raises :class:`ConfigError`."""
    pb = Problems()
    agents: dict[str, AgentConfig] = {}
    exporter: dict[str, Any] = {}
    if data is None:
        pb.add("monitoring", "is required: a mapping of agent names to their settings (the file is empty)")
    elif not isinstance(data, Mapping):
        pb.add("(top level)", f"must be a mapping with a monitoring key, got {render(data)}")
    elif (top := pb.fields("", data, ("monitoring", "exporter"))) is not None:
        if "monitoring" not in top:
            pb.add("monitoring", "is required: a mapping of agent names to their settings")
        elif not isinstance(monitoring := top["monitoring"][1], Mapping):
            pb.add(
                "monitoring", f"must be a mapping of agent names to their settings, got {render(monitoring)}"
            )
        else:
            for name, block in monitoring.items():
                if not isinstance(name, str) or not name.strip():
                    pb.add("monitoring", f"agent names must be non-empty strings, got {render(name)}")
                elif (problem := label_problem(name, int(LIMITS["monitoring.AGENT"].high))) is not None:
                    pb.add(child("monitoring", name), f"is not a usable agent name: it {problem}")
                else:
                    agents[name] = _agent(pb, child("monitoring", name), name, block)
        if "exporter" in top:
            exporter = parse_exporter(pb, top["exporter"][1])
        length = exporter.get("label_caps", LabelCaps()).length
        for name in agents:
            if len(name) > length:  # its series would carry a cut name, and its rules match nothing
                pb.add(child("monitoring", name), f"is longer than exporter.label_caps.length ({length})")
    if pb.lines:
        raise ConfigError(pb.lines, source)
    return Config(
        agents=MappingProxyType(agents), defaults=_agent(pb, "", "*", None), source=source, **exporter
    )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate a YAML file; raises :class:`ConfigError` listing every problem."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            text = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file", source) from None
    except OSError as e:
        raise ConfigError(f"{source}: cannot read: {e.strerror or e}", source) from None
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: over {MAX_CONFIG_BYTES} bytes, too large for a configuration", source)
    try:
        data, duplicates = parse_yaml(text, source)
    except yaml.YAMLError as e:
        raise ConfigError(yaml_error_line(e, source), source) from None
    except YAMLRefused as e:
        raise ConfigError(e.line(source), source) from None
    try:
        config = parse_config(data, source)
    except ConfigError as e:
        raise ConfigError(duplicates + e.problems, source) from None
    if duplicates:
        raise ConfigError(duplicates, source)
    return config


def default_config() -> Config:
    """The built-in configuration: no named agents, every default."""
    return parse_config({"monitoring": {}}, "<default>")


def config_from_env(environ: Mapping[str, str] | None = None) -> Config | None:
    """``load_config($CLAUDE_EXPORTER_CONFIG)``, or ``None`` when that variable is unset or empty."""
    path = (os.environ if environ is None else environ).get(ENV_VAR)
    return load_config(path) if path else None


def format_problems(err: ConfigError) -> str:
    """The problems as a report for people: ``FILE: N problems in the configuration:``, then one indented
    line each; a single problem that already names the file is the report itself."""
    count = len(err.problems)
    if count == 1 and err.source and err.problems[0].startswith(err.source):
        return err.problems[0]  # "FILE: no such file", "FILE:3:1: invalid YAML: ..."
    head = f"{err.source}: " if err.source else ""
    lines = [f"{head}{count} problem{'s' if count != 1 else ''} in the configuration:"]
    lines.extend(f"  {line}" for line in err.problems)
    return "\n".join(lines)


def as_config(config: object) -> Config:
    """A Config, a path to one, or None (``CLAUDE_EXPORTER_CONFIG``, else the built-in default)."""
    if config is None:
        return config_from_env() or default_config()
    if isinstance(config, Config):
        return config
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise TypeError(f"config must be a Config, a path or None, got {type(config).__name__}")
