"""The ``exporter`` block of the configuration: server, label caps, pricing overrides, event log, rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from claude_exporter.config.schema import (
    CACHE_MULTIPLIERS,
    PRICE_COLUMNS,
    Problems,
    child,
    label_problem,
    render,
)

__all__ = [
    "EVENT_LOG_DESTINATIONS",
    "USAGE_SOURCES",
    "EventLogConfig",
    "LabelCaps",
    "OtlpConfig",
    "ServerConfig",
    "parse_exporter",
]

EVENT_LOG_DESTINATIONS: tuple[str, ...] = ("stderr", "stdout", "file")
_EXPORTER_KEYS = (
    "default_agent",
    "server",
    "label_caps",
    "pricing_overrides",
    "event_log",
    "health",
    "rules",
    "otlp",
)
USAGE_SOURCES: tuple[str, ...] = ("events", "metrics")


@dataclass(frozen=True)
class ServerConfig:
    address: str = "127.0.0.1"
    port: int = 9466
    token_env: str | None = "CLAUDE_EXPORTER_TOKEN"
    token_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None


@dataclass(frozen=True)
class LabelCaps:
    agent: int = 200
    task: int = 200
    model: int = 200
    combinations: int = 2000
    length: int = 128  # characters a label value keeps (recording/admission.py)


@dataclass(frozen=True)
class OtlpConfig:
    """``exporter.otlp``: the OTLP receiver and hooks endpoint for Claude Code (see ingest.claude_code).

    ``enabled`` None means: on for ``claude-exporter serve``, off for ``start_http_server`` in an app.
    """

    enabled: bool | None = None
    default_agent: str = "claude-code"
    agent_attribute: str = "agent"
    task_attribute: str = "task"
    usage_from: str = "events"
    code_tools: frozenset[str] = frozenset({"Bash"})
    turn_idle_seconds: float = 600.0
    hook_join_seconds: float = 15.0
    memory: int = 100_000  # ids and cumulative writers remembered, each
    state_dir: str | None = None  # where the cumulative writers' state survives a restart (ingest.otlp_state)


@dataclass(frozen=True)
class EventLogConfig:
    destination: str = "stderr"
    path: str | None = None


def _pricing(pb: Problems, path: str, value: object) -> Mapping[str, Mapping[str, float]]:
    out: dict[str, Mapping[str, float]] = {}
    if not isinstance(value, Mapping):
        pb.add(path, f"must be a mapping of model names to prices, got {render(value)}")
        return MappingProxyType(out)
    for model, row in value.items():
        if not isinstance(model, str) or not model.strip():
            pb.add(path, f"model names must be non-empty strings, got {render(model)}")
            continue
        model_path = child(path, model)
        if (problem := label_problem(model)) is not None:
            pb.add(model_path, f"is not a usable model name: it {problem}")
            continue
        fields = pb.fields(model_path, row, PRICE_COLUMNS, what=" (prices are USD per million tokens)")
        if fields is None:
            continue
        prices: dict[str, float] = {}
        for column, (column_path, price) in fields.items():
            if (good := pb.limited(column_path, price, "exporter.pricing_overrides.MODEL.*")) is not None:
                prices[column] = float(good)
        for column in ("input", "output"):
            if column not in fields:
                pb.add(model_path, f'missing required key "{column}" (USD per million tokens)')
        if "input" in prices:
            for column, multiplier in CACHE_MULTIPLIERS.items():
                prices.setdefault(column, prices["input"] * multiplier)
        out[model] = MappingProxyType({c: prices[c] for c in PRICE_COLUMNS if c in prices})
    return MappingProxyType(out)


def parse_exporter(pb: Problems, value: object) -> dict[str, Any]:
    """The ``exporter`` block as keyword arguments for :class:`Config`."""
    out: dict[str, Any] = {}
    fields = pb.fields("exporter", value, _EXPORTER_KEYS, allow_none=True) or {}
    if "default_agent" in fields:
        out["default_agent"] = pb.limited(*fields["default_agent"], "exporter.default_agent") or "default"
    if "server" in fields:
        out["server"] = _server(pb, *fields["server"])
    if "label_caps" in fields:
        caps = pb.fields(*fields["label_caps"], LabelCaps.__dataclass_fields__, allow_none=True) or {}
        checked = {key: pb.limited(*item, f"exporter.label_caps.{key}") for key, item in caps.items()}
        out["label_caps"] = LabelCaps(**{key: cap for key, cap in checked.items() if cap is not None})
    if "pricing_overrides" in fields:
        out["pricing_overrides"] = _pricing(pb, *fields["pricing_overrides"])
    if "event_log" in fields:
        out["event_log"] = _event_log(pb, *fields["event_log"])
    if "health" in fields:
        health = pb.fields(*fields["health"], ("window_seconds",), allow_none=True) or {}
        if "window_seconds" in health:
            window = pb.limited(*health["window_seconds"], "exporter.health.window_seconds")
            out["health_window_seconds"] = float(window or 300.0)
    if "rules" in fields:
        rules = pb.fields(*fields["rules"], ("evaluation_interval", "job"), allow_none=True) or {}
        if "evaluation_interval" in rules:
            interval = pb.limited(*rules["evaluation_interval"], "exporter.rules.evaluation_interval")
            out["rules_evaluation_interval"] = interval or "30s"
        if "job" in rules:
            out["rules_job"] = pb.limited(*rules["job"], "exporter.rules.job") or "claude-exporter"
    if "otlp" in fields:
        out["otlp"] = _otlp(pb, *fields["otlp"])
    return out


def _otlp(pb: Problems, path: str, value: object) -> OtlpConfig:
    if isinstance(value, bool):  # `otlp: true` turns it on with the defaults
        return OtlpConfig(enabled=value)
    fields = pb.fields(path, value, OtlpConfig.__dataclass_fields__, allow_none=True) or {}
    kwargs: dict[str, Any] = {}
    if "enabled" in fields:
        kwargs["enabled"] = pb.boolean(*fields["enabled"])
    if "default_agent" in fields and (
        agent := pb.limited(*fields["default_agent"], "exporter.otlp.default_agent")
    ):
        kwargs["default_agent"] = agent
    for key in ("agent_attribute", "task_attribute"):
        if key in fields and (text := pb.string(*fields[key])) is not None:
            kwargs[key] = text
    if "usage_from" in fields and (source := pb.choice(*fields["usage_from"], USAGE_SOURCES)) is not None:
        kwargs["usage_from"] = source
    if "code_tools" in fields:
        kwargs["code_tools"] = frozenset(
            pb.string_list(*fields["code_tools"], lambda p, v: pb.limited(p, v, "exporter.otlp.code_tools[]"))
        )
    for key in ("turn_idle_seconds", "hook_join_seconds", "memory"):
        if key in fields and (good := pb.limited(*fields[key], f"exporter.otlp.{key}")) is not None:
            kwargs[key] = good if key == "memory" else float(good)
    if "state_dir" in fields:
        ok, state_dir = pb.optional_string(*fields["state_dir"])
        if ok:
            kwargs["state_dir"] = state_dir
    return OtlpConfig(**kwargs)


def _server(pb: Problems, path: str, value: object) -> ServerConfig:
    fields = pb.fields(path, value, ServerConfig.__dataclass_fields__, allow_none=True) or {}
    kwargs: dict[str, Any] = {}
    if "address" in fields:
        kwargs["address"] = pb.string(*fields["address"]) or "127.0.0.1"
    if "port" in fields:
        port = pb.limited(*fields["port"], "exporter.server.port")
        kwargs["port"] = 9466 if port is None else port
    bad: set[str] = set()
    for key in ("token_env", "token_file", "tls_cert_file", "tls_key_file"):
        if key in fields:
            ok, kwargs[key] = pb.optional_string(*fields[key])
            if not ok:
                bad.add(key)
    server = ServerConfig(**kwargs)
    for have, need in (("tls_cert_file", "tls_key_file"), ("tls_key_file", "tls_cert_file")):
        if getattr(server, have) is not None and getattr(server, need) is None and need not in bad:
            pb.add(child(path, need), f"is required when {have} is set (TLS needs both files)")
    return server


def _event_log(pb: Problems, path: str, value: object) -> EventLogConfig:
    fields = pb.fields(path, value, ("destination", "path"), allow_none=True) or {}
    destination: str | None = "stderr"
    if "destination" in fields:
        destination = pb.choice(*fields["destination"], EVENT_LOG_DESTINATIONS)
    ok, log_path = pb.optional_string(*fields["path"]) if "path" in fields else (True, None)
    if destination == "file" and log_path is None and ok:
        pb.add(child(path, "path"), 'is required when destination is "file"')
    elif destination not in ("file", None) and log_path is not None:
        pb.add(child(path, "path"), f'is only used when destination is "file", not {render(destination)}')
    return EventLogConfig(destination or "stderr", log_path)
